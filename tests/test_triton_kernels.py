"""The Triton kernels (fastrq.kernels) against the float64 reference, under TRITON_INTERPRET=1 on the CPU.

Every output a launcher allocates is poisoned (NaN / −7) before the kernel runs, so an element a kernel forgot to
write fails. Configurations: the CUDA defaults (the tiles :func:`choose_config` picks for sm_90 and sm_80 at the
problem's N and K) and small tiles, on shapes that cross many row tiles and many code tiles, with N, K, D never
multiples of the tiles. Codes are compared by distance with a tolerance (implementations differ on near-ties),
except exact ties: the smallest index must win.

Under the interpreter ``tf32x3`` and ``tf32`` compute their products in fp32 (the interpreter ignores
``input_precision``): those tests check the mode's plumbing (split operands, rounding, norms), not the tensor cores'
arithmetic, which only a GPU run checks (``benchmarks/gpu_validate.sh``). bf16 runs an emulation there (operands
rounded to bf16, products in fp32: what the tensor cores compute).
"""

from __future__ import annotations

import os
import warnings
from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.triton

triton = pytest.importorskip("triton")

import fastrq  # noqa: E402
from fastrq.ops import reference  # noqa: E402
from fastrq.kernels import _alloc, backend, decode, precision, prepare, search, selfcheck, statistics  # noqa: E402
from tests.strategies import assert_codes_near_optimal, exact_sqdist, random_data, seeds  # noqa: E402

F32_TOL = 2e-6
F64_TOL = 1e-12
# the kernels run on the GPU when there is one (there, float32 searches in the GPU default mode, tf32x3), else on
# the CPU under the interpreter; checks always run on the CPU in float64
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_device(fn):
    """fn with its tensor arguments moved to DEVICE and its tensor results moved back to the CPU."""

    def move(value, device):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, (tuple, list)):
            return type(value)(move(v, device) for v in value)
        if isinstance(value, dict):
            return {k: move(v, device) for k, v in value.items()}
        return value

    def wrapped(*args, **kwargs):
        out = fn(*move(args, DEVICE), **{k: move(v, DEVICE) for k, v in kwargs.items()})
        return move(out, torch.device("cpu"))

    return wrapped


@pytest.fixture(autouse=True)
def poisoned_outputs():
    with mock.patch.object(_alloc, "POISON_OUTPUTS", True):
        yield


@pytest.fixture(autouse=True)
def no_selfcheck(request):
    """The self-check runs only in the tests about it (elsewhere it would only add small problems)."""
    if "selfcheck" in request.node.name:
        selfcheck.reset()
        yield
        selfcheck.reset()
    else:
        with mock.patch.dict(os.environ, {selfcheck.ENV_VAR: "0"}):
            yield


def oracle_training_step(x, codebooks, level_sizes, num_active, row_levels=None):
    """The reference semantics of quantize_for_training in float64: greedy RQ level by level with
    reference.nearest_code over codebooks[l, :level_sizes[l]] for the rows active at l, statistics by one-hot."""
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    limit = torch.full((n,), num_active) if row_levels is None else row_levels.long().clamp(max=num_active)
    codes = torch.full((n, num_levels), -1, dtype=torch.long)
    residual = x.double().clone()
    quantized, commit = torch.zeros_like(residual), torch.zeros_like(residual)
    level_sqerr = torch.zeros(num_levels, dtype=torch.float64)
    counts = torch.zeros(num_levels, num_codes, dtype=torch.float64)
    sums = torch.zeros(num_levels, num_codes, dim, dtype=torch.float64)
    for level in range(num_active):
        rows = (level < limit).nonzero()[:, 0]
        level_codes, _ = reference.nearest_code(residual[rows], codebooks[level, : level_sizes[level]].double())
        codes[rows, level] = level_codes
        counts[level], sums[level] = reference.code_statistics(residual[rows], level_codes, num_codes)
        chosen = codebooks[level].double()[level_codes]
        residual[rows] -= chosen
        quantized[rows] += chosen
        commit[rows] += residual[rows]
        level_sqerr[level] = residual[rows].square().sum()
    return quantized, codes, level_sqerr, commit, counts, sums


def walk_from_codes(x, codebooks, codes):
    """The outputs implied by given codes (−1 = skipped), in float64: (quantized, level_sqerr, commit, counts,
    sums, residual before each level)."""
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    residual = x.double().clone()
    quantized, commit = torch.zeros_like(residual), torch.zeros_like(residual)
    level_sqerr = torch.zeros(num_levels, dtype=torch.float64)
    counts = torch.zeros(num_levels, num_codes, dtype=torch.float64)
    sums = torch.zeros(num_levels, num_codes, dim, dtype=torch.float64)
    before = []
    for level in range(num_levels):
        used = codes[:, level] >= 0
        rows = used.nonzero()[:, 0]
        before.append(residual.clone())
        c = codes[rows, level]
        counts[level], sums[level] = reference.code_statistics(residual[rows], c, num_codes)
        chosen = codebooks[level].double()[c]
        residual[rows] -= chosen
        quantized[rows] += chosen
        commit[rows] += residual[rows]
        level_sqerr[level] = residual[rows].square().sum()
    return quantized, level_sqerr, commit, counts, sums, before


def check_training_step(x, codebooks, level_sizes, num_active, row_levels, out, tol):
    """Every output of quantize_for_training is consistent with its codes, and the codes are the greedy ones up to
    near-ties (each level's code is near-optimal for the residual the earlier codes leave)."""
    quantized, codes, level_sqerr, commit, counts, sums = out
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    assert codes.shape == (n, num_levels) and codes.dtype == torch.int64
    assert quantized.shape == commit.shape == (n, dim) and level_sqerr.shape == (num_levels,)
    assert counts.shape == (num_levels, num_codes) and sums.shape == (num_levels, num_codes, dim)
    assert quantized.dtype == commit.dtype == level_sqerr.dtype == counts.dtype == sums.dtype == x.dtype
    limit = torch.full((n,), num_active) if row_levels is None else row_levels.long().clamp(max=num_active)
    expected_skip = torch.arange(num_levels)[None, :] >= limit[:, None]
    assert torch.equal(codes < 0, expected_skip), "codes are −1 exactly at the skipped (row, level) pairs"
    assert torch.equal(codes[codes < 0], torch.full_like(codes[codes < 0], -1))
    for level in range(num_levels):
        used = codes[:, level] >= 0
        assert not bool((codes[used, level] >= level_sizes[level]).any()), "a padding code was chosen"
    want_q, want_err, want_commit, want_counts, want_sums, before = walk_from_codes(x, codebooks, codes)
    for level in range(num_active):
        rows = codes[:, level] >= 0
        assert_codes_near_optimal(before[level][rows], codebooks[level, : level_sizes[level]].double(),
                                  codes[rows, level], tol)
    # quantized is bitwise the decode of the codes (same order of additions)
    assert torch.equal(quantized, reference.residual_decode(codes, codebooks))
    close = dict(rtol=1e-10, atol=1e-10) if x.dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(commit.double(), want_commit, **close)
    torch.testing.assert_close(level_sqerr.double(), want_err, **close)
    torch.testing.assert_close(counts.double(), want_counts, rtol=0, atol=0)
    torch.testing.assert_close(sums.double(), want_sums, **close)


def cuda_default(dim, dtype, arch, n, k, precision_mode="ieee"):
    """The configuration the launchers pick on a CUDA device of ``arch`` for this problem."""
    return search.choose_config(dim, dtype, precision_mode, arch, num_codes=k, num_rows=n)


CONFIGS = {
    "sm90-default": lambda d, dt, n, k: cuda_default(d, dt, "sm_90", n, k),
    "sm80-default": lambda d, dt, n, k: cuda_default(d, dt, "sm_80", n, k),
    "small-tiles": lambda d, dt, n, k: search.SearchConfig(16, 16, 4, 2),
}


@given(n=st.sampled_from([0, 1, 17, 70, 300]), k=st.sampled_from([1, 2, 7, 33, 150]),
       d=st.sampled_from([1, 3, 4, 8, 9, 16, 17, 40]), levels=st.integers(1, 3), seed=seeds,
       which=st.sampled_from(sorted(CONFIGS)), dtype=st.sampled_from([torch.float32, torch.float64]),
       masked=st.booleans(), data=st.data())
def test_quantize_for_training_matches_the_greedy_oracle(n, k, d, levels, seed, which, dtype, masked, data):
    gen = torch.Generator().manual_seed(seed)
    x = random_data(seed, n, d, dtype=dtype)
    scales = torch.logspace(0, -2, levels, dtype=torch.float64)[:, None, None]
    codebooks = (random_data(seed + 1, levels, k, d) * scales).to(dtype)
    sizes = [data.draw(st.integers(1, k)) for _ in range(levels)]
    # padding rows may hold anything: they must never be chosen
    for level, size in enumerate(sizes):
        codebooks[level, size:] = data.draw(st.sampled_from([0.0, -1e30, float("nan")]))
    num_active = data.draw(st.integers(1, levels))
    row_levels = torch.randint(0, levels + 1, (n,), generator=gen, dtype=torch.int32) if masked else None
    cfg = CONFIGS[which](d, dtype, n, k)
    out = on_device(backend._quantize_for_training)(x, codebooks, sizes, num_active, row_levels, config=cfg)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    check_training_step(x, codebooks, sizes, num_active, row_levels, out, tol)
    # bitwise identical on a rerun
    again = on_device(backend._quantize_for_training)(x, codebooks, sizes, num_active, row_levels, config=cfg)
    assert all(torch.equal(a, b) for a, b in zip(out, again))


def test_quantize_for_training_equals_the_oracle_on_separated_data():
    """Where no near-ties exist the codes equal the oracle's exactly (sm_90 default tiles, many tiles)."""
    gen = torch.Generator().manual_seed(4)
    n, d, levels, k = 400, 24, 3, 200
    codebooks = torch.randn(levels, k, d, generator=gen, dtype=torch.float64) * torch.tensor([4.0, 1.0, 0.25])[:, None, None]
    pick = torch.randint(0, k, (n, levels), generator=gen)
    x = sum(codebooks[l][pick[:, l]] for l in range(levels)) + 0.01 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    x, codebooks = x.float(), codebooks.float()
    row_levels = torch.randint(0, levels + 1, (n,), generator=gen)
    sizes = [k, k, k - 3]
    cfg = cuda_default(d, torch.float32, "sm_90", n, k)
    got = on_device(backend._quantize_for_training)(x, codebooks, sizes, levels, row_levels, config=cfg)
    want = oracle_training_step(x, codebooks, sizes, levels, row_levels)
    assert torch.equal(got[1], want[1])
    check_training_step(x, codebooks, sizes, levels, row_levels, got, F32_TOL)
    torch.testing.assert_close(got[5].double(), want[5], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts interpreted launches")
def test_launches_and_torch_ops_do_not_grow_with_levels():
    """2 Triton launches and the same host-side torch ops for L = 1 and L = 8 (the interpreter's own torch calls
    inside a launch are not counted)."""
    import triton.runtime.interpreter as interp
    from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

    launches = []
    original = interp.InterpretedFunction.run

    def counting(self, *args, **kwargs):
        launches.append(self.fn.__name__)
        with _disable_current_modes():
            return original(self, *args, **kwargs)

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    counts = {}
    for levels in (1, 8):  # warm the caches (hash weights, level sizes)
        backend._quantize_for_training(torch.randn(5, 4), torch.randn(levels, 30, 4), [30] * levels, levels, None)
    for levels in (1, 8):
        x, codebooks = torch.randn(50, 4), torch.randn(levels, 30, 4)
        launches.clear()
        with mock.patch.object(interp.InterpretedFunction, "run", counting), CountOps() as mode:
            backend._quantize_for_training(x, codebooks, [30] * levels, levels, None)
        counts[levels] = (list(launches), sorted(mode.ops))
    assert counts[1][0] == counts[8][0] == ["rq_search_kernel", "level_sums_kernel"]
    assert counts[1][1] == counts[8][1]  # the same host-side torch ops, one by one, for every L
    # no host sync: no tensor read back into Python (.item(), bool(), int()), no tensor made from Python data
    # (a host-to-device copy on CUDA) once the caches are warm
    assert not [op for op in counts[8][1] if "_local_scalar_dense" in op or "lift_fresh" in op or "is_nonzero" in op]


@pytest.mark.parametrize("which", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_ties_go_to_the_smallest_index_across_tiles(which, dtype):
    """Duplicate rows in different code tiles, equidistant distinct codes, small-integer data (exact)."""
    gen = torch.Generator().manual_seed(3)
    d, k, n = 5, 150, 170
    distinct = torch.randint(-2, 3, (9, d), generator=gen)
    codebook = distinct[torch.randint(0, 9, (k,), generator=gen)].to(dtype)
    x = torch.randint(-3, 4, (n, d), generator=gen).to(dtype)
    brute = exact_sqdist(x, codebook)
    first_min = (brute == brute.min(1, keepdim=True).values).int().argmax(1)
    cfg = CONFIGS[which](d, dtype, n, k)
    codes, _ = on_device(search.nearest_code)(x, codebook, config=cfg)
    assert torch.equal(codes, first_min)


@pytest.mark.parametrize("mode", precision.PRECISIONS)
def test_exact_ties_in_every_precision_mode_with_tensor_core_shapes(mode):
    """D = 20 runs tl.dot; integer data is exact in every mode (bf16 too), so the smallest index must win."""
    gen = torch.Generator().manual_seed(5)
    d, k, n = 20, 140, 150
    distinct = torch.randint(-2, 3, (6, d), generator=gen)
    codebook = distinct[torch.randint(0, 6, (k,), generator=gen)].float()
    x = torch.randint(-3, 4, (n, d), generator=gen).float()
    brute = exact_sqdist(x, codebook)
    first_min = (brute == brute.min(1, keepdim=True).values).int().argmax(1)
    cfg = cuda_default(d, torch.float32, "sm_90", n, k, mode)
    codes, _ = on_device(search.nearest_code)(x, codebook, config=cfg, precision=mode)
    assert torch.equal(codes, first_min)


def test_all_equal_codebook_and_zero_codebook_pick_index_zero():
    x = torch.randn(40, 20)
    for codebook in (torch.zeros(50, 20), torch.ones(50, 20)):
        codes, _ = on_device(search.nearest_code)(x, codebook, config=search.SearchConfig(16, 16))
        assert torch.equal(codes, torch.zeros(40, dtype=torch.long))


@pytest.mark.parametrize("mode", ["ieee", "tf32x3", "certified"])
@pytest.mark.parametrize("d", [4, 24])
def test_large_common_offset_is_centred(mode, d):
    """x, e ≈ 1000 + N(0, 1): the uncentred expansion loses every digit; the centred search must not."""
    x = random_data(7, 120, d, dtype=torch.float32, offset=1000.0)
    codebook = random_data(8, 90, d, dtype=torch.float32, offset=1000.0)
    cfg = cuda_default(d, torch.float32, "sm_90", 120, 90, mode)
    codes, _ = on_device(search.nearest_code)(x, codebook, config=cfg, precision=mode)
    assert_codes_near_optimal(x, codebook, codes, 1e-5, centre=codebook.double().mean(0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns about the NaN it computes
@pytest.mark.parametrize("d", [6, 20])
def test_nan_rows_get_a_valid_code_and_do_not_disturb_other_rows(d):
    x = torch.randn(30, d)
    x[4, 2] = float("nan")
    x[9] = float("inf")
    codebook = torch.randn(20, d)
    codes, sqdist = on_device(search.nearest_code)(x, codebook, config=search.SearchConfig(16, 16))
    assert int(codes.min()) >= 0 and int(codes.max()) < 20
    assert not torch.isfinite(sqdist[4]) and not torch.isfinite(sqdist[9])
    good = torch.ones(30, dtype=torch.bool)
    good[[4, 9]] = False
    assert_codes_near_optimal(x[good], codebook, codes[good], F32_TOL)
    assert torch.isfinite(sqdist[good]).all()
    assert int(codes[4]) == 0  # every score NaN: code 0


@pytest.mark.parametrize("mode", precision.PRECISIONS)
def test_every_precision_mode_runs_and_is_close(mode):
    x = random_data(11, 100, 32, dtype=torch.float32)
    codebooks = random_data(12, 2, 64, 32, dtype=torch.float32)
    quantized, codes = on_device(search.residual_quantize)(x, codebooks, precision=mode)
    assert codes.shape == (100, 2) and torch.isfinite(quantized).all()
    # exact modes are near-optimal at fp32 tolerance; fast modes are approximate: their chosen first-level code
    # is within the rounding of their operands (bf16: 2⁻⁸ relative)
    tol = {"ieee": F32_TOL, "tf32x3": F32_TOL, "certified": F32_TOL, "tf32": 2e-3, "bf16": 1.6e-2}[mode]
    assert_codes_near_optimal(x, codebooks[0], codes[:, 0], tol)
    assert torch.equal(quantized, codebooks[0][codes[:, 0]] + codebooks[1][codes[:, 1]])


def test_precision_choice_argument_environment_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with mock.patch.dict(os.environ, {precision.ENV_VAR: ""}):
        assert precision.resolve_precision(None, cpu) == "ieee"
        assert precision.resolve_precision(None, cuda) == "tf32x3"
    with mock.patch.dict(os.environ, {precision.ENV_VAR: "bf16"}):
        assert precision.resolve_precision(None, cpu) == "bf16"
        assert precision.resolve_precision("tf32", cpu) == "tf32"  # the argument wins
        assert precision.resolve_precision(None, cpu, torch.float64) == "ieee"  # float64 is always exact
    with pytest.raises(fastrq.InvalidArgumentError, match="tf32x3"):
        precision.resolve_precision("fp8", cpu)


def test_operand_rounding_and_splitting_match_the_formats():
    values = torch.tensor([1.0, 1 + 2**-11, 1 + 2**-12, -(1 + 3 * 2**-11), 3.0e38, float("inf"), float("nan")])
    tf32 = precision.round_operand(values, "tf32")
    expected = torch.tensor([1.0, 1 + 2**-10, 1.0, -(1 + 2 * 2**-10), tf32[4].item(), float("inf"), float("nan")])
    torch.testing.assert_close(tf32, expected, equal_nan=True)
    assert (tf32[:4].view(torch.int32) & 0x1FFF == 0).all()  # 10 mantissa bits left
    torch.testing.assert_close(precision.round_operand(values, "bf16"), values.bfloat16().float(), equal_nan=True)
    assert precision.round_operand(values, "ieee") is values
    t = torch.randn(1000)
    big, small = precision.split_tf32(t)
    assert (big.view(torch.int32) & 0x1FFF == 0).all() and (small.view(torch.int32) & 0x1FFF == 0).all()
    assert ((big + small - t).abs() <= 2.0**-21 * t.abs()).all()
    # per-mode operands: norms from the rounded operand in bf16, from the float32 rows in tf32x3; padding −inf
    books = torch.randn(2, 9, 20) + 0.123456
    prep = prepare.prepare_codebooks(books, [9, 5], "bf16", 16, 32)
    assert prep.operands[0].dtype == torch.bfloat16 and prep.operands[0].shape == (2, 16, 32)
    rows = prep.operands[0][0, :9, :20].float()
    torch.testing.assert_close(prep.nh[0, :9], -0.5 * rows.square().sum(-1))
    assert torch.isinf(prep.nh[1, 5:]).all() and (prep.nh[1, 5:] < 0).all()
    prep = prepare.prepare_codebooks(books, None, "tf32x3", 16, 32)
    big, small = prep.operands
    centred = books - prep.shifts[:, None, :20]
    torch.testing.assert_close(prep.nh[:, :9], -0.5 * centred.square().sum(-1))
    assert ((big + small)[:, :9, :20] - centred).abs().max() <= 2.0**-20 * centred.abs().max()


def test_centring_shifts_match_the_per_level_rule_and_ignore_padding():
    from fastrq.ops.codebook_prep import centring_shift

    books = random_data(3, 3, 12, 5, dtype=torch.float32, offset=100.0)
    sizes = torch.tensor([12, 7, 1])
    valid = torch.arange(12)[None, :] < sizes[:, None]
    padded = books.clone()
    padded[1, 7:] = float("nan")
    shifts = prepare.centring_shifts(padded, valid)
    for level, size in enumerate(sizes.tolist()):
        torch.testing.assert_close(shifts[level], centring_shift(books[level, :size]), rtol=1e-6, atol=0)


def test_first_equal_rows_without_host_sync():
    gen = torch.Generator().manual_seed(1)
    distinct = torch.randn(5, 3, generator=gen)
    books = distinct[torch.randint(0, 5, (2, 40), generator=gen)]
    got = prepare.first_equal_rows(books)
    for level in range(2):
        for k in range(40):
            same = (books[level] == books[level, k]).all(1).nonzero()[:, 0]
            assert int(got[level, k]) == int(same.min())


@given(n=st.sampled_from([0, 1, 5, 70]), k=st.sampled_from([1, 3, 40]), levels=st.integers(1, 3),
       d=st.sampled_from([1, 5, 33]), seed=seeds, block_n=st.sampled_from([8, 64]))
def test_decode_matches_reference_with_skips_and_prefix(n, k, levels, d, seed, block_n):
    gen = torch.Generator().manual_seed(seed)
    codebooks = random_data(seed, levels, k, d, dtype=torch.float32)
    prefix = int(torch.randint(0, levels + 1, (1,), generator=gen))
    codes = torch.randint(-1, k, (n, prefix), generator=gen)
    got = on_device(decode.residual_decode)(codes, codebooks, block_n=block_n)
    assert got.shape == (n, d)
    assert torch.equal(got, reference.residual_decode(codes, codebooks))


@given(n=st.sampled_from([0, 1, 19, 70]), k=st.sampled_from([1, 7, 40]), d=st.sampled_from([1, 4, 33]), seed=seeds,
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_code_statistics_match_the_one_hot_reference(n, k, d, seed, dtype):
    x = random_data(seed, n, d, dtype=dtype)
    codes = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    counts, sums = on_device(statistics.code_statistics)(x, codes, k, block_r=8)
    want_counts, want_sums = reference.code_statistics(x.double(), codes, k)
    torch.testing.assert_close(counts.double(), want_counts, rtol=0, atol=0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(sums.double(), want_sums, rtol=tol, atol=tol)


def test_level_statistics_are_bitwise_deterministic_with_hot_codes():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3000, 9, generator=gen) * torch.logspace(-3, 3, 9)
    books = torch.randn(2, 6, 9, generator=gen)
    codes = torch.where(torch.rand(3000, 2, generator=gen) < 0.8, 2, torch.randint(0, 6, (3000, 2), generator=gen))
    codes[::7, 1] = -1
    first = on_device(statistics.level_statistics)(x, codes, books, 6)
    for _ in range(2):
        again = on_device(statistics.level_statistics)(x, codes, books, 6)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    _, _, _, want_counts, want_sums, _ = walk_from_codes(x, books, codes)
    torch.testing.assert_close(first[0].double(), want_counts, rtol=0, atol=0)
    torch.testing.assert_close(first[1].double(), want_sums, rtol=1e-5, atol=1e-3)


def test_config_overrides_the_kernel_cannot_compile_raise_clear_errors():
    with pytest.raises(fastrq.InvalidArgumentError, match="at least 16"):
        search.choose_config(40, torch.float32, "bf16", "sm_90", block_n=8)
    with pytest.raises(fastrq.InvalidArgumentError, match="at least 16"):
        search.choose_config(20, torch.float32, "tf32x3", "sm_80", block_k=8)
    with pytest.raises(fastrq.InvalidArgumentError, match="power of two"):
        search.choose_config(4, torch.float32, "ieee", "sm_80", block_k=24)
    search.choose_config(4, torch.float32, "ieee", "sm_80", block_n=8, block_k=2)  # D ≤ 4 ieee: no tl.dot, any tile
    with pytest.raises(fastrq.InvalidArgumentError, match="at least 16"):
        search.choose_config(4, torch.float32, "bf16", "sm_80", block_n=8)  # D ≤ 4 bf16 runs tl.dot
    x = torch.randn(10, 40)
    with pytest.raises(fastrq.InvalidArgumentError, match="at least 16"):
        search.nearest_code(x, torch.randn(5, 40), config=search.SearchConfig(8, 16))


def test_shared_memory_limits_per_arch():
    """The tf32x3 D = 64 tile must fit the target's shared memory: sm_120 has ≤ 99 KiB per block."""
    for arch in ("sm_80", "sm_86", "sm_90", "sm_100", "sm_120"):
        for dim in (64, 128, 256):
            for mode in ("tf32x3", "tf32", "bf16", "certified", "ieee"):
                cfg = search.choose_config(dim, torch.float32, mode, arch, num_codes=8192, num_rows=65536)
                kmode = search.kernel_mode(dim, torch.float32, mode)
                need = search._shared_bytes(cfg, kmode, search.padded_dim(dim, kmode), 4, arch)
                assert need <= search.SHARED_LIMIT[arch], (arch, dim, mode, cfg, need)


def test_config_choice_is_deterministic_and_fills_the_sms():
    a = search.choose_config(64, torch.float32, "tf32x3", "sm_90", num_codes=1024, num_rows=4096)
    assert a == search.choose_config(64, torch.float32, "tf32x3", "sm_90", num_codes=1024, num_rows=4096)
    big = search.choose_config(64, torch.float32, "tf32x3", "sm_90", num_codes=1024, num_rows=1 << 20)
    assert triton.cdiv(4096, a.block_n) >= min(search.SM_COUNT["sm_90"], 4096 // 32) and a.block_n <= big.block_n
    assert search.choose_config(64, torch.float32, "tf32x3", "sm_90", num_codes=1, num_rows=100).block_k == 16


# ---------------------------------------------------------------------------------------------- certified mode


def _bf16_first_pass(c, e, h):
    """The bf16 pass's score h − bf16(c)·bf16(e), products exact, summed in float64 (≈ exact accumulation)."""
    return h - c.bfloat16().double() @ e.bfloat16().double().T


def test_certified_bound_holds_on_adversarial_and_offset_data():
    """|s̃ − σ| ≤ B for the bf16 first pass (the tight bound from the rounding errors' norms, and the plain worst case
    above it) and |ŝ − σ| ≤ E for an fp32 re-score, on data built to make the bf16 error large (values just below a
    bf16 rounding boundary, all of one sign), on Gaussian data and on 1000 + N(0, 1) data (centred)."""
    gen = torch.Generator().manual_seed(2)
    d = 64
    worst = (1 + 2.0**-8 - 2.0**-20) * torch.ones(50, d)  # rounds to 1 or 1 + 2⁻⁷: error ≈ 2⁻⁸ each
    cases = [
        (worst, worst * 1.0),
        (torch.randn(50, d, generator=gen), torch.randn(80, d, generator=gen)),
        (random_data(3, 50, d, dtype=torch.float32, offset=1000.0) - 1000.0,
         random_data(4, 80, d, dtype=torch.float32, offset=1000.0) - 1000.0),
    ]
    for c, e in cases:
        h = 0.5 * e.square().sum(1)
        sigma = h.double() - c.double() @ e.double().T
        approx = _bf16_first_pass(c, e, h.double())
        c_norm, e_norm = c.double().norm(dim=1)[:, None], e.double().norm(dim=1)[None, :]
        alpha = (c.bfloat16().float() - c).double().norm(dim=1)[:, None]
        beta = (e.bfloat16().float() - e).double().norm(dim=1).max()
        bhat, b_max, h_max = e.bfloat16().double().norm(dim=1).max(), e.double().norm(dim=1).max(), h.double().max()
        tight = precision.bf16_pass_error_bound(c_norm, alpha, beta, bhat, h_max, d)
        loose = precision.bf16_score_error_bound(c_norm, e_norm, h.double().abs()[None, :], d)
        assert ((approx - sigma).abs() <= tight).all() and ((approx - sigma).abs() <= loose).all()
        rescore = h[None, :] - (c[:, None, :] * e[None, :, :]).sum(-1)  # float32, another order
        assert ((rescore.double() - sigma).abs() <= precision.fp32_rescore_error_bound(c_norm, b_max, h_max, d)).all()
        # not vacuous: within a small factor of the scale
        assert tight.max() < 2.0**-6 * (c_norm * b_max + h_max).max()
        k_c, k_a, k_0 = precision.certified_coefficients(beta, bhat, b_max, h_max, d)
        margin = precision.certified_margin(c_norm, alpha, beta, bhat, b_max, h_max, d)
        torch.testing.assert_close(k_c * c_norm + k_a * alpha + k_0, margin, rtol=1e-12, atol=0)
    # on Gaussian data the tight bound is about 2.4 times smaller than the plain one
    c, e = cases[1]
    alpha = (c.bfloat16().float() - c).double().norm(dim=1)
    beta = (e.bfloat16().float() - e).double().norm(dim=1).max()
    tight = precision.bf16_pass_error_bound(c.double().norm(dim=1), alpha, beta, e.bfloat16().double().norm(dim=1).max(),
                                            0.0, d)
    loose = precision.bf16_score_error_bound(c.double().norm(dim=1), e.double().norm(dim=1).max(), 0.0, d)
    assert (tight < 0.6 * loose).all()


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_certified_returns_the_fp32_answer_on_near_ties(offset):
    """Many codes equidistant within the bf16 error: rows whose margin is inside the bound are searched again
    exactly; every code must be the fp32 argmin (up to fp32 near-ties) and most programs must have needed the
    exact re-search (the diagnostic counts uncertified rows)."""
    gen = torch.Generator().manual_seed(9)
    n, d, k = 200, 32, 96
    centre = torch.randn(d, generator=gen)
    directions = torch.randn(k, d, generator=gen)
    codebook = centre + directions / directions.norm(dim=1, keepdim=True) * (1 + 1e-4 * torch.rand(k, 1, generator=gen))
    x = centre + 1e-3 * torch.randn(n, d, generator=gen)  # every code at distance ≈ 1, within ~1e-3
    x, codebook = x + offset, codebook + offset
    cfg = cuda_default(d, torch.float32, "sm_90", n, k, "certified")
    out = on_device(search.search_walk)(x, codebook[None], None, 1, None, precision="certified", config=cfg,
                                        want_diag=True)
    assert_codes_near_optimal(x, codebook, out["codes"][:, 0], F32_TOL, centre=codebook.double().mean(0))
    exact, _ = on_device(search.nearest_code)(x, codebook, precision="ieee", config=cfg)
    near = exact_sqdist(x, codebook)
    gap = (near.gather(1, out["codes"][:, :1]) - near.gather(1, exact[:, None])).abs()[:, 0]
    assert (gap <= 1e-6 * near.min(1).values.clamp_min(1) * (1 + offset**2 * d)).all()
    assert int(out["diag"].sum()) > n // 2  # the bound did not certify near-ties: the exact re-search ran


def test_certified_certifies_separated_rows_without_the_exact_search():
    gen = torch.Generator().manual_seed(10)
    n, d, k = 256, 32, 64
    codebook = torch.randn(k, d, generator=gen) * 3
    x = codebook[torch.randint(0, k, (n,), generator=gen)] + 0.05 * torch.randn(n, d, generator=gen)
    cfg = cuda_default(d, torch.float32, "sm_90", n, k, "certified")
    out = on_device(search.search_walk)(x, codebook[None], None, 1, None, precision="certified", config=cfg,
                                        want_diag=True)
    want, _ = reference.nearest_code(x.double(), codebook.double())
    assert torch.equal(out["codes"][:, 0], want)
    assert int(out["diag"].sum()) == 0


# ---------------------------------------------------------------------------------------------- self-check


def test_selfcheck_passes_for_working_kernels_and_runs_once_per_config():
    x, codebooks = torch.randn(60, 20, device=DEVICE), torch.randn(2, 40, 20, device=DEVICE)
    with mock.patch.object(selfcheck, "check", wraps=selfcheck.check) as spy, warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            backend.quantize_for_training(x, codebooks, [40, 30], 2, None)
            backend.nearest_code(x, codebooks[0])
    assert spy.call_count == 2  # one per (op, configuration), not per call
    assert all(v is None for v in selfcheck.status().values())


def test_selfcheck_falls_back_to_torch_once_on_a_wrong_kernel():
    """Inject a kernel that returns wrong codes: one warning, then the torch backend's answer."""
    x, codebook = torch.randn(60, 12, device=DEVICE), torch.randn(30, 12, device=DEVICE)
    real = search.nearest_code

    def broken(*args, **kwargs):
        codes, sqdist = real(*args, **kwargs)
        return (codes + 1) % args[1].shape[0], sqdist

    with mock.patch.object(search, "nearest_code", broken):
        with pytest.warns(RuntimeWarning, match="self-check"):
            codes, _ = backend.nearest_code(x, codebook)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once only
            codes2, _ = backend.nearest_code(x, codebook)
    want, _ = reference.nearest_code(x.cpu().double(), codebook.cpu().double())
    assert torch.equal(codes.cpu(), want) and torch.equal(codes2.cpu(), want)


def test_selfcheck_falls_back_on_an_exception_and_can_be_turned_off():
    x, codebooks = torch.randn(60, 4, device=DEVICE), torch.randn(2, 30, 4, device=DEVICE)

    def raising(*args, **kwargs):
        raise RuntimeError("simulated launch failure")

    with mock.patch.object(backend, "_quantize_for_training", raising):
        with pytest.warns(RuntimeWarning, match="simulated launch failure"):
            out = backend.quantize_for_training(x, codebooks, [30, 30], 2, None)
        check_training_step(x.cpu(), codebooks.cpu(), [30, 30], 2, None, [t.cpu() for t in out], F32_TOL)
        with mock.patch.dict(os.environ, {selfcheck.ENV_VAR: "0"}), pytest.raises(RuntimeError, match="simulated"):
            backend.quantize_for_training(x, codebooks, [30, 30], 2, None)


def test_backend_module_through_the_public_ops():
    x, codebooks = torch.randn(4, 6, 10, device=DEVICE), torch.randn(2, 30, 10, device=DEVICE)
    quantized, codes = fastrq.residual_quantize(x, codebooks, backend="triton")
    assert codes.shape == (4, 6, 2) and codes.device == x.device
    for level in range(2):
        residual = (x - fastrq.residual_decode(codes[..., :level], codebooks, backend="triton")).reshape(-1, 10)
        assert_codes_near_optimal(residual.cpu(), codebooks[level].cpu(), codes[..., level].reshape(-1).cpu(), F32_TOL)
    torch.testing.assert_close(fastrq.residual_decode(codes, codebooks, backend="triton"), quantized)
    assert backend.unavailable_reason(DEVICE) is None
    with mock.patch.dict(os.environ, {"TRITON_INTERPRET": "0"}):
        assert "TRITON_INTERPRET" in backend.unavailable_reason(torch.device("cpu"))
