"""The Triton kernels (fastrq.kernels) against the float64 reference, under TRITON_INTERPRET=1 on the CPU.

Every output a launcher allocates is poisoned (NaN / −7) before the kernel runs, so an element a kernel forgot to
write fails. Tile sizes are overridden to small values so that a few dozen codes already span several code tiles,
D spans several D chunks, and N, K, D are never multiples of the tiles (masks). Codes are compared by distance with
a tolerance (implementations differ on near-ties), except exact ties: the smallest index must win.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.triton

triton = pytest.importorskip("triton")

import fastrq  # noqa: E402
from fastrq.ops import reference  # noqa: E402
from fastrq.kernels import _alloc, commitment, decode, precision, search, statistics  # noqa: E402
from tests.strategies import assert_codes_near_optimal, random_data, seeds  # noqa: E402

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
        if isinstance(value, tuple):
            return tuple(move(v, device) for v in value)
        return value

    def wrapped(*args, **kwargs):
        out = fn(*move(args, DEVICE), **{k: move(v, DEVICE) for k, v in kwargs.items()})
        return move(out, torch.device("cpu"))

    return wrapped


@pytest.fixture(autouse=True)
def poisoned_outputs():
    with mock.patch.object(_alloc, "POISON_OUTPUTS", True):
        yield


def _configs(dim: int, dtype: torch.dtype) -> list[search.SearchConfig]:
    """The default configuration, a small-tile register one and (float32 / float64 alike) a chunked one whose
    D chunk is smaller than D, so both kernels and every mask get exercised."""
    return [
        search.choose_config(dim, dtype),
        search.choose_config(dim, dtype, block_n=16, block_k=16),
        search.SearchConfig("chunked", 16, 16, 16, True),
    ]


sizes_n = st.sampled_from([0, 1, 2, 17, 64, 130])
sizes_k = st.sampled_from([1, 2, 7, 16, 33, 100])
sizes_d = st.sampled_from([1, 3, 4, 16, 17, 33, 40])
config_index = st.integers(0, 2)


@given(n=sizes_n, k=sizes_k, d=sizes_d, seed=seeds, which=config_index, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_nearest_code_is_near_optimal_and_sqdist_is_direct(n, k, d, seed, which, dtype):
    x = random_data(seed, n, d, dtype=dtype)
    codebook = random_data(seed + 1, k, d, dtype=dtype)
    cfg = _configs(d, dtype)[which]
    codes, sqdist = on_device(search.nearest_code)(x, codebook, config=cfg)
    assert codes.shape == (n,) and codes.dtype == torch.int64
    assert sqdist.shape == (n,) and sqdist.dtype == dtype
    assert_codes_near_optimal(x, codebook, codes, F64_TOL if dtype == torch.float64 else F32_TOL)
    if n:
        direct = (x - codebook[codes]).square().sum(-1)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(sqdist, direct, rtol=tol, atol=tol)


@given(n=sizes_n, k=sizes_k, d=sizes_d, levels=st.integers(1, 3), seed=seeds, which=config_index,
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_residual_quantize_one_launch_is_greedy_with_level_errors(n, k, d, levels, seed, which, dtype):
    x = random_data(seed, n, d, dtype=dtype)
    scales = torch.logspace(0, -2, levels, dtype=torch.float64)[:, None, None]
    codebooks = (random_data(seed + 1, levels, k, d) * scales).to(dtype)
    cfg = _configs(d, dtype)[which]
    quantized, codes, level_err = on_device(search.residual_quantize_with_errors)(x, codebooks, config=cfg)
    assert quantized.shape == (n, d) and codes.shape == (n, levels) and level_err.shape == (levels,)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    residual = x.double()
    expected_err = []
    for level in range(levels):
        assert_codes_near_optimal(residual, codebooks[level].double(), codes[:, level], tol)
        residual = residual - codebooks[level].double()[codes[:, level]]
        expected_err.append(residual.square().sum())
    close = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(quantized.double(), reference.residual_decode(codes, codebooks.double()), **close)
    torch.testing.assert_close(level_err.double(), torch.stack(expected_err) if levels else level_err.double(), **close)
    # the plain launcher gives the same codes and sum, bit for bit; a rerun gives the same level errors, bit for bit
    quantized2, codes2 = on_device(search.residual_quantize)(x, codebooks, config=cfg)
    assert torch.equal(codes2, codes) and torch.equal(quantized2, quantized)
    assert torch.equal(on_device(search.residual_quantize_with_errors)(x, codebooks, config=cfg)[2], level_err)


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_ties_go_to_the_smallest_index_across_tiles(which, dtype):
    """Duplicate rows in different code tiles, equidistant distinct codes, small-integer data (exact)."""
    gen = torch.Generator().manual_seed(3)
    d, k = 5, 70
    distinct = torch.randint(-2, 3, (9, d), generator=gen)
    codebook = distinct[torch.randint(0, 9, (k,), generator=gen)].to(dtype)
    x = torch.randint(-3, 4, (150, d), generator=gen).to(dtype)
    brute = ((x.double()[:, None] - codebook.double()[None]) ** 2).sum(-1)
    first_min = (brute == brute.min(1, keepdim=True).values).int().argmax(1)
    codes, _ = on_device(search.nearest_code)(x, codebook, config=_configs(d, dtype)[which])
    assert torch.equal(codes, first_min)


def test_all_equal_codebook_and_zero_codebook_pick_index_zero():
    x = torch.randn(40, 20)
    for codebook in (torch.zeros(50, 20), torch.ones(50, 20)):
        codes, _ = on_device(search.nearest_code)(x, codebook, config=search.choose_config(20, torch.float32, block_k=16))
        assert torch.equal(codes, torch.zeros(40, dtype=torch.long))


@pytest.mark.parametrize("which", [0, 2])
def test_large_common_offset_is_centred(which):
    """x, e ≈ 1000 + N(0, 1): the uncentred expansion loses every digit; the centred search must not."""
    x = random_data(7, 120, 24, dtype=torch.float32, offset=1000.0)
    codebook = random_data(8, 90, 24, dtype=torch.float32, offset=1000.0)
    codes, _ = on_device(search.nearest_code)(x, codebook, config=_configs(24, torch.float32)[which])
    assert_codes_near_optimal(x, codebook, codes, 1e-5, centre=codebook.double().mean(0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy warns about the NaN it computes
def test_nan_rows_get_a_valid_code_and_do_not_disturb_other_rows():
    x = torch.randn(30, 6)
    x[4, 2] = float("nan")
    x[9] = float("inf")
    codebook = torch.randn(20, 6)
    codes, sqdist = on_device(search.nearest_code)(x, codebook, config=search.choose_config(6, torch.float32, block_k=8))
    assert int(codes.min()) >= 0 and int(codes.max()) < 20
    assert not torch.isfinite(sqdist[4]) and not torch.isfinite(sqdist[9])
    good = torch.ones(30, dtype=torch.bool)
    good[[4, 9]] = False
    expected, _ = reference.nearest_code(x[good].double(), codebook.double())
    assert_codes_near_optimal(x[good], codebook, codes[good], F32_TOL)
    assert torch.isfinite(sqdist[good]).all() and expected.shape == codes[good].shape


@pytest.mark.parametrize("mode", precision.PRECISIONS)
def test_every_precision_mode_runs_and_is_close(mode):
    x = random_data(11, 100, 32, dtype=torch.float32)
    codebooks = random_data(12, 2, 64, 32, dtype=torch.float32)
    quantized, codes = on_device(search.residual_quantize)(x, codebooks, precision=mode)
    assert codes.shape == (100, 2) and torch.isfinite(quantized).all()
    # exact modes are near-optimal at fp32 tolerance; fast modes are approximate: their chosen first-level code
    # is within the rounding of their operands (bf16: 2⁻⁸ relative)
    tol = {"ieee": F32_TOL, "tf32x3": F32_TOL, "tf32": 2e-3, "bf16": 1.6e-2}[mode]
    assert_codes_near_optimal(x, codebooks[0], codes[:, 0], tol)
    torch.testing.assert_close(quantized, codebooks[0][codes[:, 0]] + codebooks[1][codes[:, 1]], rtol=1e-6, atol=1e-6)


def test_precision_choice_argument_environment_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with mock.patch.dict(os.environ, {precision.ENV_VAR: ""}):
        assert precision.resolve_precision(None, cpu) == "ieee"
        assert precision.resolve_precision(None, cuda) == "tf32x3"
    with mock.patch.dict(os.environ, {precision.ENV_VAR: "bf16"}):
        assert precision.resolve_precision(None, cpu) == "bf16"
        assert precision.resolve_precision("tf32", cpu) == "tf32"  # the argument wins
        assert precision.resolve_precision(None, cpu, torch.float64) == "ieee"  # float64 is always exact
        assert search.prepare_codebooks(torch.randn(2, 5, 3)).precision == "bf16"
    with pytest.raises(fastrq.InvalidArgumentError, match="tf32x3"):
        precision.resolve_precision("fp8", cpu)


def test_operand_rounding_matches_the_formats():
    values = torch.tensor([1.0, 1 + 2**-11, 1 + 2**-12, -(1 + 3 * 2**-11), 3.0e38, float("inf"), float("nan")])
    tf32 = precision.round_operand(values, "tf32")
    expected = torch.tensor([1.0, 1 + 2**-10, 1.0, -(1 + 2 * 2**-10), tf32[4].item(), float("inf"), float("nan")])
    torch.testing.assert_close(tf32, expected, equal_nan=True)
    assert (tf32[:4].view(torch.int32) & 0x1FFF == 0).all()  # 10 mantissa bits left
    torch.testing.assert_close(precision.round_operand(values, "bf16"), values.bfloat16().float(), equal_nan=True)
    assert precision.round_operand(values, "ieee") is values
    # norms come from the rounded operand
    prep = search.prepare_codebooks(torch.randn(1, 9, 4) + 0.123456, "bf16")
    assert torch.equal(prep.centred, prep.centred.bfloat16().float())
    torch.testing.assert_close(prep.half_norms, 0.5 * prep.centred.square().sum(-1))


def test_prepared_codebooks_can_be_reused():
    x, codebooks = torch.randn(50, 12), torch.randn(3, 40, 12)
    prep = search.prepare_codebooks(codebooks.to(DEVICE))
    assert all(torch.equal(a, b) for a, b in zip(on_device(search.residual_quantize)(x, codebooks, prepared=prep),
                                                  on_device(search.residual_quantize)(x, codebooks)))


@given(n=sizes_n, k=sizes_k, levels=st.integers(1, 3), d=st.sampled_from([1, 5, 33]), seed=seeds,
       block_n=st.sampled_from([8, 64]))
def test_decode_matches_reference_with_skips_and_prefix(n, k, levels, d, seed, block_n):
    gen = torch.Generator().manual_seed(seed)
    codebooks = random_data(seed, levels, k, d, dtype=torch.float32)
    prefix = int(torch.randint(0, levels + 1, (1,), generator=gen))
    codes = torch.randint(-1, k, (n, prefix), generator=gen)
    got = on_device(decode.residual_decode)(codes, codebooks, block_n=block_n)
    assert got.shape == (n, d)
    torch.testing.assert_close(got, reference.residual_decode(codes, codebooks), rtol=0, atol=0)


@given(n=sizes_n, k=sizes_k, d=st.sampled_from([1, 4, 33]), seed=seeds, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_code_statistics_match_the_one_hot_reference(n, k, d, seed, dtype):
    x = random_data(seed, n, d, dtype=dtype)
    codes = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    counts, sums = on_device(statistics.code_statistics)(x, codes, k, block_r=8)
    want_counts, want_sums = reference.code_statistics(x.double(), codes, k)
    torch.testing.assert_close(counts.double(), want_counts, rtol=0, atol=0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(sums.double(), want_sums, rtol=tol, atol=tol)
    fast_counts, fast_sums = on_device(statistics.code_statistics)(x, codes, k, deterministic=False)
    torch.testing.assert_close(fast_counts, counts, rtol=0, atol=0)
    torch.testing.assert_close(fast_sums.double(), want_sums, rtol=tol, atol=tol)


def test_code_statistics_are_bitwise_deterministic_with_hot_codes():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3000, 9, generator=gen) * torch.logspace(-3, 3, 9)
    codes = torch.where(torch.rand(3000, generator=gen) < 0.8, 2, torch.randint(0, 6, (3000,), generator=gen))
    first = on_device(statistics.code_statistics)(x, codes, 6)
    for _ in range(2):
        again = on_device(statistics.code_statistics)(x, codes, 6)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@given(n=st.sampled_from([0, 1, 19, 70]), d=st.sampled_from([1, 6, 33]), levels=st.integers(1, 3), seed=seeds,
       beta=st.sampled_from([0.25, 1.0]))
def test_commitment_backward_matches_autograd(n, d, levels, seed, beta):
    x = random_data(seed, n, d)
    codebooks = random_data(seed + 1, levels, 11, d)
    _, codes = reference.residual_quantize(x, codebooks)
    level_grads = random_data(seed + 2, levels)
    xg = x.clone().requires_grad_(True)
    residual, loss = xg, xg.new_zeros(())
    for level in range(levels):
        chosen = codebooks[level][codes[:, level]]
        loss = loss + level_grads[level] * beta * (residual - chosen.detach()).square().mean() if n else loss
        residual = residual - chosen
    if n:
        loss.backward()
    got = on_device(commitment.commitment_backward)(x, codes, codebooks, level_grads, beta)
    assert got.shape == (n, d)
    if n:
        torch.testing.assert_close(got, xg.grad, rtol=1e-12, atol=1e-12)


def test_backend_module_through_the_public_ops():
    x, codebooks = torch.randn(4, 6, 10, device=DEVICE), torch.randn(2, 30, 10, device=DEVICE)
    quantized, codes = fastrq.residual_quantize(x, codebooks, backend="triton")
    assert codes.shape == (4, 6, 2) and codes.device == x.device
    for level in range(2):
        residual = (x - fastrq.residual_decode(codes[..., :level], codebooks, backend="triton")).reshape(-1, 10)
        assert_codes_near_optimal(residual.cpu(), codebooks[level].cpu(), codes[..., level].reshape(-1).cpu(), F32_TOL)
    torch.testing.assert_close(fastrq.residual_decode(codes, codebooks, backend="triton"), quantized)
    from fastrq.kernels import backend

    assert backend.unavailable_reason(DEVICE) is None
    with mock.patch.dict(os.environ, {"TRITON_INTERPRET": "0"}):
        assert "TRITON_INTERPRET" in backend.unavailable_reason(torch.device("cpu"))
