"""The certified-exact bf16 search (:mod:`fastrq.ops.certified`): its error bound, measured against float64 on
random and adversarial operands, and its codes: index for index the float32 contract on exact data, near-optimal
at the float32 tolerance elsewhere, and exactly the true nearest code on near-tie data where a plain bf16 search
provably picks wrong codes.
"""

from __future__ import annotations

import contextlib
import math
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrq
from fastrq.errors import InvalidArgumentError
from fastrq.ops import certified, reference, torch_backend
from tests.strategies import assert_codes_near_optimal, random_data, seeds

F32_TOL = 2e-6  # as tests/test_ops.py
# the GEMM path at every D (not faiss, not the native small-D kernel), with and without the certified search
ALWAYS = {"FASTRQ_BF16_SEARCH": "1", "FASTRQ_FAISS": "0", "FASTRQ_CPU_KERNEL": "0"}
NEVER = {"FASTRQ_BF16_SEARCH": "0", "FASTRQ_FAISS": "0", "FASTRQ_CPU_KERNEL": "0"}
NATIVE_AVAILABLE = certified.cpu_kernels.certified_available()


@contextlib.contextmanager
def _environment(env, native: bool):
    """``env``; with ``native`` the certified search's native row passes (rq_cpu.c) instead of its tensor ops: the
    native library stays loaded, but the small-D native search is kept out so that the GEMM path runs at every D."""
    if not native:
        with mock.patch.dict(os.environ, env):
            yield
        return
    native_env = {key: value for key, value in env.items() if key != "FASTRQ_CPU_KERNEL"}
    with mock.patch.dict(os.environ, native_env):
        os.environ.pop("FASTRQ_CPU_KERNEL", None)
        with mock.patch.object(torch_backend.cpu_kernels, "available", lambda *args: False):
            yield


def _codes(x, codebook, env):
    """Codes of the torch backend under ``env``; for the certified search (ALWAYS) by both row passes, which must
    agree index for index (the search statistics are those of the native run, the one that runs by default)."""
    with _environment(env, native=False):
        codes = fastrq.nearest_code(x, codebook, backend="torch")[0]
    if env is ALWAYS and NATIVE_AVAILABLE:
        certified.reset_search_stats()
        with _environment(env, native=True):
            native = fastrq.nearest_code(x, codebook, backend="torch")[0]
        assert torch.equal(native, codes), "the native and the tensor row passes disagree"
    return codes


def _level(codebook: torch.Tensor) -> tuple[certified.CertifiedLevel, torch.Tensor]:
    """The certified operands of one codebook, centred as the torch backend centres it, and the shift μ."""
    prep = torch_backend.PreparedLevels(codebook[None], [codebook.shape[0]], False, None)
    return certified.CertifiedLevel(prep.centred_t[0].t(), prep.half_norms[0]), prep.shifts[0]


def test_preconditions_hold_on_this_machine():
    """The bound needs a bf16 ``torch.mm`` that accumulates in float32 and rounds to nearest; the probe must
    confirm it at every operand width the tests use (else the certified path would never run)."""
    for dim in (1, 3, 64, 128, 256):
        assert certified.float32_accumulation_verified(dim + certified.EXTRA_COLUMNS)


# ---------------------------------------------------------------------------------------------- the bound


def _operands(kind: str, seed: int, rows: int, codes: int, dim: int):
    """Centred float32 operands (a [R, D], b [K, D]) of one of several kinds, some built to stress the bound."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        a, b = torch.randn(rows, dim, generator=gen), torch.randn(codes, dim, generator=gen)
    elif kind == "sphere":  # every code at the same distance from the first row: maximal cancellation
        a = torch.randn(rows, dim, generator=gen)
        u = torch.randn(codes, dim, generator=gen)
        b = a[:1] + 0.1 * u / u.norm(dim=1, keepdim=True)
    elif kind == "wide-range":  # entries from 2⁻⁶⁰ to 2³⁹ in one vector
        scale = torch.exp2(torch.randint(-60, 40, (1, dim), generator=gen).float())
        a = torch.randn(rows, dim, generator=gen) * scale
        b = torch.randn(codes, dim, generator=gen) * scale
    elif kind == "subnormal":  # products and sums underflow
        a = torch.randn(rows, dim, generator=gen) * 1e-20
        b = torch.randn(codes, dim, generator=gen) * 1e-22
    elif kind == "large":  # near the magnitude limit
        a = torch.randn(rows, dim, generator=gen) * 2.0**55 / math.sqrt(dim)
        b = torch.randn(codes, dim, generator=gen) * 2.0**55 / math.sqrt(dim)
    elif kind == "aligned":  # rounding errors of a and b with equal signs (worst case for Cauchy–Schwarz)
        a = 1.0 + torch.rand(rows, dim, generator=gen) * 2.0**-8
        b = -(1.0 + torch.rand(codes, dim, generator=gen) * 2.0**-8)
    else:  # "integers"
        a = torch.randint(-300, 301, (rows, dim), generator=gen).float()
        b = torch.randint(-300, 301, (codes, dim), generator=gen).float()
    return a.contiguous(), b.contiguous()


KINDS = ["gaussian", "sphere", "wide-range", "subnormal", "large", "aligned", "integers"]


@pytest.mark.parametrize("kind", KINDS)
@given(dim=st.sampled_from([1, 2, 7, 64, 130]), codes=st.sampled_from([1, 5, 64, 300]), seed=seeds)
def test_bound_holds_everywhere(kind, dim, codes, seed):
    """|d̃_k − (ĉ + s_k)| ≤ u·|d̃_k| + E for every row and code, s_k = h_k − a·b_k computed in float64 (its own
    error, ≤ 2⁻⁴⁵ of the magnitudes, is added to the side of the bound); and |r_k − s_k| ≤ F for the float32
    re-score."""
    a, b = _operands(kind, seed, 37, codes, dim)
    h = 0.5 * b.square().sum(dim=1)
    level = certified.CertifiedLevel(b, h)
    assert level.valid
    d, bound, row_constant, rescore_bound = certified.bf16_scores(a, level)
    a64, b64, h64 = a.double(), b.double(), h.double()
    s = h64[None, :] - a64 @ b64.T
    magnitude = row_constant.abs()[:, None] + h64.abs()[None, :] + a64.abs() @ b64.abs().T
    err = (d - (row_constant[:, None] + s)).abs()
    allowed = certified.U_OUT * d.abs() + bound[:, None] + 2.0**-45 * magnitude
    assert bool((err <= allowed).all()), f"bound violated by {float((err - allowed).max()):.3g}"
    rescored = h[None, :] - (a[:, None, :] * b[None, :, :]).sum(dim=-1)  # the re-score's float32 arithmetic
    err32 = (rescored.double() - s).abs()
    assert bool((err32 <= rescore_bound[:, None] + 2.0**-45 * magnitude).all())
    # and the bound is a useful one: a few bf16 roundoffs of ‖a‖·max‖b‖ (plus its tiny absolute terms)
    scale = a64.norm(dim=1) * b64.norm(dim=1).max() + row_constant.abs() + h64.max()
    assert bool((bound <= 4 * certified.U_BF16 * scale + 2.0**-100 * (dim + 1)).all())


def test_bound_rejects_codebooks_out_of_range():
    big = torch.full((4, 3), 2.0**62)
    assert not certified.CertifiedLevel(big, 0.5 * big.square().sum(1)).valid
    nan = torch.randn(4, 3)
    nan[1, 2] = float("nan")
    assert not certified.CertifiedLevel(nan, 0.5 * nan.square().sum(1)).valid


def test_slack_coefficients_cover_the_bound():
    """The hot loop's affine form of 2(E + F) is never below the documented E and F."""
    codebook = random_data(3, 200, 48, dtype=torch.float32)
    level, _ = _level(codebook)
    norms = torch.rand(1000, 2, dtype=torch.float64) * torch.tensor([50.0, 0.2], dtype=torch.float64)
    constant = torch.rand(1000, dtype=torch.float64) * 2000
    factor, floor = certified.NORM_FACTOR(level.dim), math.sqrt(level.dim) * 2.0**-62
    row_norm, rounding_norm = norms[:, 0] * factor + floor, norms[:, 1] * factor + floor
    documented = certified.score_error_bound(row_norm, rounding_norm, constant, level)
    documented = documented + certified.rescore_error_bound(row_norm, level)
    k_row, k_rounding, k_constant, k_zero = level.coefficients
    hot = k_row * norms[:, 0] + k_rounding * norms[:, 1] + k_constant * constant + k_zero
    assert bool((hot >= documented * (1 - 1e-12)).all())


# ---------------------------------------------------------------------------------------------- the codes


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@given(n=st.sampled_from([1, 5, 64, 300]), d=st.sampled_from([1, 3, 33, 64, 130]),
       k=st.sampled_from([1, 2, 7, 100, 300]), seed=seeds)
def test_near_optimal_at_the_float32_tolerance(scale, n, d, k, seed):
    x = random_data(seed, n, d, dtype=torch.float32, scale=scale)
    codebook = random_data(seed + 1, k, d, dtype=torch.float32, scale=scale)
    certified.reset_search_stats()
    codes = _codes(x, codebook, ALWAYS)
    assert certified.search_stats()["rows"] == n, "the certified path did not run"
    assert_codes_near_optimal(x, codebook, codes, F32_TOL)


@given(n=st.sampled_from([1, 9, 200]), d=st.sampled_from([1, 2, 5, 33, 64]), k=st.sampled_from([1, 2, 5, 64, 300]),
       seed=seeds, duplicate_every=st.sampled_from([0, 2, 5]))
def test_exact_data_matches_the_float32_path_index_for_index(n, d, k, seed, duplicate_every):
    """Small integers: every float32 score is exact, so the float32 contract is a definite answer (exact ties,
    duplicate rows and equidistant codes: the smallest index); the certified search must give it exactly."""
    gen = torch.Generator().manual_seed(seed)
    codebook = torch.randint(-2, 3, (k, d), generator=gen).float()
    if duplicate_every:
        codebook[duplicate_every::duplicate_every] = codebook[:1]
    x = torch.randint(-3, 4, (n, d), generator=gen).float()
    expected = reference.nearest_code(x.double(), codebook.double())[0]
    assert torch.equal(_codes(x, codebook, NEVER), expected)
    assert torch.equal(_codes(x, codebook, ALWAYS), expected)
    levels = torch.randint(-2, 3, (3, k, d), generator=gen).float()
    want_quantized, want_codes = reference.residual_quantize(x.double(), levels.double())
    for native in (False, True) if NATIVE_AVAILABLE else (False,):
        with _environment(ALWAYS, native):
            quantized, codes = fastrq.residual_quantize(x, levels, backend="torch")
        assert torch.equal(codes, want_codes) and torch.equal(quantized.double(), want_quantized)


def _first_argmin(rows: torch.Tensor, level: certified.CertifiedLevel) -> torch.Tensor:
    """The exact path of these tests: the first float64 argmin of h − a·b (exact on small integers)."""
    scores = level.half_norms.double()[None, :] - rows.double() @ level.centred.double().T
    return scores.argmin(dim=1)


@pytest.mark.parametrize("native", [False, True] if NATIVE_AVAILABLE else [False])
@given(n=st.integers(1, 150), d=st.sampled_from([1, 3, 8, 40]), k=st.integers(1, 300), seed=seeds)
def test_tiles_and_sub_blocks_match_the_reference(native, n, d, k, seed):
    """Tiles shrunk so that one call crosses several code tiles (group minima merged over tiles, codes offset by
    the tile; in the native pass also tiles whose width is not a multiple of its 32-output vectors) and row
    sub-blocks (the stored outputs reused): exact data, codes index for index, by both row passes."""
    gen = torch.Generator().manual_seed(seed)
    codebook = torch.randint(-2, 3, (k, d), generator=gen).float()
    codebook[3::4] = codebook[:1]
    x = torch.randint(-3, 4, (n, d), generator=gen).float()
    with mock.patch.multiple(certified, CODE_TILE=128, STORE_ELEMENTS=64 * 128), \
            mock.patch.object(certified.cpu_kernels, "certified_available", lambda: native):
        level, shift = _level(codebook)
        assert level.tiles == -(-k // 128)
        first = torch_backend.first_equal_rows(codebook[None])[0]
        codes = certified.certified_codes((x - shift).contiguous(), level, lambda rows: _first_argmin(rows, level))
    if first is not None:
        codes = first.index_select(0, codes)
    assert torch.equal(codes, reference.nearest_code(x.double(), codebook.double())[0])


@given(n=st.sampled_from([1, 40, 300]), d=st.sampled_from([2, 33, 64, 128]), k=st.sampled_from([2, 16, 257]),
       seed=seeds)
def test_large_common_offset_stays_exact(n, d, k, seed):
    """x, codebook ≈ 1000 + N(0, 1): the centring carries over to the bf16 operands (as in tests/test_ops.py)."""
    x = random_data(seed, n, d, dtype=torch.float32, offset=1000.0)
    codebook = random_data(seed + 1, k, d, dtype=torch.float32, offset=1000.0)
    codes = _codes(x, codebook, ALWAYS)
    assert_codes_near_optimal(x, codebook, codes, 1e-5, centre=codebook.double().mean(0))


def _near_ties(seed: int, rows: int, per_row: int, dim: int, gap: float):
    """Rows x_n (norm ≈ 1, far apart) and, for each, ``per_row`` codes on a sphere of radius 0.3 around it, one of
    them (at a random place) closer by ``gap`` in squared distance: a gap far inside bf16's error (≈ 10⁻² here)
    and far outside float32's (≤ 10⁻⁴ in the worst case, ≈ 10⁻⁶ typically). Returns x, codebook and the true
    nearest code of every row."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 3
    u = torch.randn(rows, per_row, dim, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=2, keepdim=True)
    radius = torch.full((rows, per_row), 0.3, dtype=torch.float64)
    winner = torch.randint(0, per_row, (rows,), generator=gen)
    radius[torch.arange(rows), winner] = math.sqrt(0.09 - gap)
    codebook = (x[:, None, :] + radius[..., None] * u).reshape(rows * per_row, dim).float()
    x = x.float()
    truth = (x.double()[:, None] - codebook.double()[None]).square().sum(-1)
    best = truth.argmin(dim=1)
    margin = truth.sort(dim=1).values
    assert bool((margin[:, 1] - margin[:, 0] > 0.5 * gap).all()), "the data must not be a float32 near-tie"
    return x, codebook, best


@pytest.mark.parametrize("per_row", [16, 100])
@settings(max_examples=10)
@given(seed=seeds)
def test_adversarial_near_ties_are_resolved_exactly(per_row, seed):
    """Many codes equidistant from each row within the bf16 error: the bf16 pass alone (its own argmin) picks a
    wrong code on many rows (shown, so that this test can fail); the certified search returns the true nearest
    code of every row, by re-scoring (16 candidates) or by the exact path (100 > MAX_CANDIDATES)."""
    x, codebook, best = _near_ties(seed, 16, per_row, 64, gap=3e-4)
    level, shift = _level(codebook)
    plain = certified.bf16_scores((x - shift).contiguous(), level)[0].argmin(dim=1)
    assert int((plain != best).sum()) >= 4, "the data is not adversarial for a bf16 search"
    certified.reset_search_stats()
    codes = _codes(x, codebook, ALWAYS)
    stats = certified.search_stats()
    assert torch.equal(codes, best)
    assert torch.equal(_codes(x, codebook, NEVER), best)
    if per_row <= certified.MAX_CANDIDATES:
        assert stats["rescored_rows"] >= 12 and stats["exact_rows"] == 0
    else:
        assert stats["exact_rows"] >= 12


def test_nonfinite_and_huge_rows_take_the_exact_path():
    """NaN, ±inf and rows beyond the magnitude limit are searched by the float32 path: their codes are what it
    gives, and the other rows are unaffected."""
    x = random_data(0, 300, 64, dtype=torch.float32)
    codebook = random_data(1, 300, 64, dtype=torch.float32)
    x[3, 5] = float("nan")
    x[7] = float("inf")
    x[11, 0] = -float("inf")
    x[13] = 2.0**70
    certified.reset_search_stats()
    codes = _codes(x, codebook, ALWAYS)
    assert certified.search_stats()["exact_rows"] == 4
    assert torch.equal(codes, _codes(x, codebook, NEVER))
    finite = torch.ones(300, dtype=torch.bool)
    finite[[3, 7, 11, 13]] = False
    assert_codes_near_optimal(x[finite], codebook, codes[finite], F32_TOL)


def test_codebook_out_of_range_uses_the_float32_path():
    codebook = random_data(1, 300, 64, dtype=torch.float32) * 2.0**62
    x = random_data(0, 300, 64, dtype=torch.float32) * 2.0**62
    certified.reset_search_stats()
    codes = _codes(x, codebook, ALWAYS)
    assert certified.search_stats()["rows"] == 0
    assert torch.equal(codes, _codes(x, codebook, NEVER))


@pytest.mark.parametrize("shape", [(50, 1, 1), (50, 1, 5), (50, 4, 1), (1, 1, 1)])
def test_smallest_shapes(shape):
    n, d, k = shape
    x = random_data(5, n, d, dtype=torch.float32)
    codebook = random_data(6, k, d, dtype=torch.float32)
    codes = _codes(x, codebook, ALWAYS)
    assert torch.equal(codes, reference.nearest_code(x.double(), codebook.double())[0])


def test_level_sizes_exclude_padding_rows():
    """quantize_for_training with levels smaller than K: the padding rows never win, codes as the float32 path."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(-3, 4, (200, 64), generator=gen).float()
    codebooks = torch.randint(-2, 3, (2, 300, 64), generator=gen).float()
    codebooks[:, 40:] = 0.0  # rows past level_sizes: nearer than any real code for x ≈ 0, and must not be chosen
    outs = []
    for env, native in [(NEVER, False), (ALWAYS, False)] + ([(ALWAYS, True)] if NATIVE_AVAILABLE else []):
        with _environment(env, native):
            outs.append(torch_backend.quantize_for_training(x, codebooks, [40, 17], 2)[1])
    assert all(torch.equal(out, outs[0]) for out in outs)
    assert int(outs[0][:, 0].max()) < 40 and int(outs[0][:, 1].max()) < 17


def test_environment_variable():
    x = random_data(0, 300, 64, dtype=torch.float32)
    codebook = random_data(1, 300, 64, dtype=torch.float32)
    certified.reset_search_stats()
    _codes(x, codebook, NEVER)
    assert certified.search_stats()["rows"] == 0
    _codes(x, codebook, ALWAYS)
    assert certified.search_stats()["rows"] == 300
    with mock.patch.dict(os.environ, {**NEVER, "FASTRQ_BF16_SEARCH": "auto"}):
        certified.reset_search_stats()
        fastrq.nearest_code(x[:10], codebook[:10], backend="torch")  # too small to pay off: never certified
        assert certified.search_stats()["rows"] == 0
        fastrq.nearest_code(x.double(), codebook.double(), backend="torch")  # float64: never
        assert certified.search_stats()["rows"] == 0
    with mock.patch.dict(os.environ, {**NEVER, "FASTRQ_BF16_SEARCH": "yes"}):
        with pytest.raises(InvalidArgumentError, match="FASTRQ_BF16_SEARCH"):
            fastrq.nearest_code(x, codebook, backend="torch")


def test_search_stats_report_rates():
    certified.reset_search_stats()
    x = random_data(0, 500, 64, dtype=torch.float32)
    codebook = random_data(1, 256, 64, dtype=torch.float32)
    _codes(x, codebook, ALWAYS)
    stats = certified.search_stats()
    assert stats["rows"] == 500 and stats["candidates"] >= 500
    assert stats["mean_candidates"] == stats["candidates"] / 500
    assert 0 <= stats["exact_rate"] <= stats["rescore_rate"] + stats["exact_rate"] <= 1


@pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the native library does not build here (covered by the tensor path)")
@pytest.mark.parametrize("kind", ["gaussian", "integers", "wide-range", "nan", "huge"])
@given(k=st.sampled_from([1, 3, 100, 1025]), d=st.sampled_from([1, 33, 64, 128]), seed=seeds)
@settings(max_examples=10)
def test_native_code_operands_match_the_tensor_ones(kind, k, d, seed):
    """CertifiedLevel's bf16 code operands bitwise, and the bound's maxima to float64 rounding (the slack covers
    either summation order), from the native pass and from tensor ops; non-finite or huge codebooks: invalid in
    both."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "integers":
        codebook = torch.randint(-3, 4, (k, d), generator=gen).float()
    else:
        codebook = torch.randn(k, d, generator=gen)
    if kind == "wide-range":
        codebook = codebook * torch.exp2(torch.randint(-60, 40, (1, d), generator=gen).float())
    if kind == "nan":
        codebook[k // 2, 0] = float("nan")
    if kind == "huge":
        codebook = codebook * 2.0**70
    half_norms = 0.5 * codebook.square().sum(1)
    native = certified.CertifiedLevel(codebook, half_norms)
    with mock.patch.object(certified.cpu_kernels, "certified_available", lambda: False):
        tensor = certified.CertifiedLevel(codebook, half_norms)
    assert native.valid == tensor.valid
    if not tensor.valid:
        assert kind in ("nan", "huge", "wide-range")
        return
    assert torch.equal(native.codes_aug.view(torch.int16), tensor.codes_aug.view(torch.int16))
    for name in ("beta", "bhat", "bnorm", "hmax", "hsplit"):
        a, b = getattr(native, name), getattr(tensor, name)
        assert a == pytest.approx(b, rel=1e-12, abs=0.0), name


@pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the native library does not build here")
@pytest.mark.parametrize("flags", [("-mno-avx512bw",), ("-mno-avx512f", "-DLANES=16"), ("-mno-avx512f", "-DLANES=8")])
def test_the_portable_selection_matches_the_avx512_one(monkeypatch, flags):
    """rq_cpu.c selects candidates with an AVX-512BW compare-to-mask where the compiler targets it, else with
    portable vector code: the library built without AVX-512BW gives the same codes and the same counters, on exact
    data (ties, several tiles, widths not a multiple of 32) and on adversarial near ties. Built with the other lane
    count (16 without AVX-512, 8) the codes are the same too; the counters may differ there, since the row and code
    norms of the bound are summed in LANES partial sums (any order is within the bound)."""
    from fastrq.kernels.cpu import build

    portable, reason = build.load_built(build._compiler(), build.VARIANT_FLAGS + build.OPENMP_FLAGS + flags)
    assert portable is not None, reason
    gen = torch.Generator().manual_seed(0)
    cases = []
    for n, d, k in ((200, 8, 300), (64, 40, 1000), (33, 3, 31)):
        codebook = torch.randint(-2, 3, (k, d), generator=gen).float()
        codebook[3::4] = codebook[:1]
        cases.append((torch.randint(-3, 4, (n, d), generator=gen).float(), codebook))
    cases.append(_near_ties(1, 16, 16, 64, gap=3e-4)[:2])

    def run():
        out = []
        with mock.patch.multiple(certified, CODE_TILE=128, STORE_ELEMENTS=64 * 128):
            for x, codebook in cases:
                certified.reset_search_stats()
                with _environment(ALWAYS, native=True):
                    out.append((fastrq.nearest_code(x, codebook, backend="torch")[0], certified.search_stats()))
        return out

    default = run()
    same_lanes = portable.fastrq_lanes() == build.library().fastrq_lanes()
    monkeypatch.setattr(build, "_load", lambda: (portable, None))
    for (codes, stats), (want, want_stats) in zip(run(), default):
        assert torch.equal(codes, want)
        if same_lanes:
            assert stats == want_stats
        else:  # the same rows through the certified path; which of them it re-scores may differ
            assert (stats["calls"], stats["rows"]) == (want_stats["calls"], want_stats["rows"]) and stats["rows"] > 0


def _undecidable(seed: int, n: int = 512, d: int = 128, k: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ~0 against a codebook half of whose codes are ~0 (the rest of norm ~1): every row has more than
    MAX_CANDIDATES candidates, so the bf16 pass sends all of them to the exact path (the state of an RQ level whose
    residuals have shrunk to nothing against codes left at their initial norm)."""
    gen = torch.Generator().manual_seed(seed)
    codebook = (torch.rand(k, d, generator=gen) * 2 - 1) * (3 / d) ** 0.5
    codebook[: k // 2] = 1e-4 * torch.randn(k // 2, d, generator=gen)
    return 1e-4 * torch.randn(n, d, generator=gen), codebook


def test_level_history_backs_off_and_resets():
    history = certified.LevelHistory()
    skips = []
    for _ in range(8):  # every try fails: skip 1, 2, 4, … up to DECLINE_MAX_SKIP calls
        history.observe(100, 51)
        skipped = 0
        while history.declines():
            skipped += 1
        skips.append(skipped)
    assert skips == [1, 2, 4, 8, 16, 32, 32, 32]
    history.observe(100, 50)  # at most the fraction: decided, no skip
    assert not history.declines()
    history.observe(100, 51)
    assert history.declines() and not history.declines()  # the back-off started again from 1


def test_auto_mode_declines_a_level_it_cannot_decide(monkeypatch):
    """auto mode: after a call that searched most rows again exactly, the level takes the float32 path for the next
    1, 2, 4 … calls, then tries again; every call's codes are the float32 path's; an in-place change of the codebook
    (an EMA step) keeps the level's history; a call it decides again ends the back-off; mode 1 never declines."""
    monkeypatch.setattr(certified, "bf16_matmul_is_fast", lambda: True)  # auto mode as on a bf16 CPU, on any CPU
    x, codebook = _undecidable(0)
    auto = {**NEVER, "FASTRQ_BF16_SEARCH": "auto"}
    certified.reset_search_stats()
    certified_calls = []
    with mock.patch.dict(os.environ, auto):
        for call in range(11):
            if call == 6:
                codebook[-1, 0] += 1e-3  # in place, a code of norm ~1: re-prepared, the history goes on
            before = certified.search_stats()["calls"]
            assert torch.equal(fastrq.nearest_code(x, codebook, backend="torch")[0], _codes(x, codebook, NEVER))
            if certified.search_stats()["calls"] > before:
                certified_calls.append(call)
    stats = certified.search_stats()
    # tried, skipped 1, tried, skipped 2, tried (after the in-place change: still skipping), skipped 4, tried
    assert certified_calls == [0, 2, 5, 10], certified_calls
    assert stats["declined_calls"] == 7 and stats["exact_rate"] == 1.0
    # rows the bf16 pass decides: the next try succeeds and the level stays certified
    decidable = random_data(3, 512, 128, dtype=torch.float32)
    with mock.patch.dict(os.environ, auto):
        certified.reset_search_stats()
        for _ in range(9):  # the 8 calls of the back-off, then the try
            fastrq.nearest_code(decidable, codebook, backend="torch")
        assert certified.search_stats()["declined_calls"] == 8 and certified.search_stats()["calls"] == 1
        certified.reset_search_stats()
        for _ in range(3):
            codes = fastrq.nearest_code(decidable, codebook, backend="torch")[0]
    assert certified.search_stats()["calls"] == 3 and certified.search_stats()["declined_calls"] == 0
    assert torch.equal(codes, _codes(decidable, codebook, NEVER))
    # mode 1: every call certified, whatever the history
    certified.reset_search_stats()
    with mock.patch.dict(os.environ, ALWAYS):
        for _ in range(3):
            fastrq.nearest_code(x, codebook, backend="torch")
    assert certified.search_stats()["calls"] == 3 and certified.search_stats()["declined_calls"] == 0
