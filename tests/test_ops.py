"""Property tests of the functional ops: every backend against the float64 reference.

Chosen codes are compared by distance with a tolerance (implementations legitimately differ on near-ties), except
for exact ties, where the smallest index must win everywhere.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastrq
from fastrq.ops import reference
from tests.strategies import (
    assert_codes_near_optimal,
    backend_env,
    random_data,
    seeds,
    sizes_d,
    sizes_k,
    sizes_n,
)

FAST_VARIANTS = [
    "torch",
    "torch-native",
    "torch-pure",
    "torch-faiss",
    "torch-certified",
    pytest.param("triton", marks=pytest.mark.triton),
]
ALL_VARIANTS = ["reference", *FAST_VARIANTS]

# search precision of float64 is ~1e-16 relative; leave room for the expansion's cancellation
F64_TOL = 1e-12
F32_TOL = 2e-6


def _triton_small(variant: str, n: int, k: int, d: int) -> bool:
    """The Triton interpreter is slow: keep its draws small."""
    return variant != "triton" or n * k * max(d, 16) <= 130 * 100 * 64


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@given(n=sizes_n, d=sizes_d, k=sizes_k, seed=seeds)
def test_nearest_code_float64_is_optimal(variant, n, d, k, seed):
    x = random_data(seed, n, d)
    codebook = random_data(seed + 1, k, d)
    with backend_env(variant) as backend:
        codes, sqdist = fastrq.nearest_code(x, codebook, backend=backend)
    assert codes.shape == (n,) and codes.dtype == torch.int64
    assert sqdist.shape == (n,) and sqdist.dtype == torch.float64
    assert_codes_near_optimal(x, codebook, codes, F64_TOL)
    if n:
        direct = (x - codebook[codes]).square().sum(-1)
        torch.testing.assert_close(sqdist, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", FAST_VARIANTS)
@given(n=sizes_n, d=sizes_d, k=sizes_k, seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_nearest_code_float32_is_near_optimal(variant, n, d, k, seed, scale):
    x = random_data(seed, n, d, dtype=torch.float32, scale=scale)
    codebook = random_data(seed + 1, k, d, dtype=torch.float32, scale=scale)
    with backend_env(variant) as backend:
        codes, sqdist = fastrq.nearest_code(x, codebook, backend=backend)
    assert sqdist.dtype == torch.float32
    assert_codes_near_optimal(x, codebook, codes, F32_TOL)
    direct = (x.double() - codebook.double()[codes]).square().sum(-1)  # the direct difference of the chosen code
    torch.testing.assert_close(sqdist.double(), direct, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@given(n=st.sampled_from([1, 40, 300]), d=sizes_d, k=st.sampled_from([2, 16, 257]), seed=seeds)
def test_large_common_offset_stays_exact(variant, n, d, k, seed):
    """x, codebook ≈ 1000 + N(0, 1) in float32: the expansion ‖x‖² − 2x·e + ‖e‖² without centring loses every
    digit here; the tolerance is scaled to the *centred* norms, so an uncentred search fails this test."""
    x = random_data(seed, n, d, dtype=torch.float32, offset=1000.0)
    codebook = random_data(seed + 1, k, d, dtype=torch.float32, offset=1000.0)
    with backend_env(variant) as backend:
        codes, _ = fastrq.nearest_code(x, codebook, backend=backend)
    assert_codes_near_optimal(x, codebook, codes, 1e-5, centre=codebook.double().mean(0))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(n=st.sampled_from([1, 9, 200]), d=st.sampled_from([1, 2, 5, 33]), k=st.sampled_from([2, 5, 64]), seed=seeds)
def test_exact_ties_go_to_the_smallest_index(variant, dtype, n, d, k, seed):
    """Small-integer data (exact in any summation order) with many duplicate rows and equidistant codes: the codes
    must equal the reference's index for index."""
    gen = torch.Generator().manual_seed(seed)
    distinct = torch.randint(-2, 3, (max(1, k // 3), d), generator=gen).to(dtype)
    codebook = distinct[torch.randint(0, distinct.shape[0], (k,), generator=gen)]
    x = torch.randint(-3, 4, (n, d), generator=gen).to(dtype)
    expected, _ = reference.nearest_code(x.double(), codebook.double())
    brute = ((x.double()[:, None] - codebook.double()[None]) ** 2).sum(-1)
    first_min = (brute == brute.min(1, keepdim=True).values).int().argmax(1)  # first index attaining the minimum
    assert torch.equal(expected, first_min), "the reference itself breaks the tie rule"
    with backend_env(variant) as backend:
        codes, _ = fastrq.nearest_code(x, codebook, backend=backend)
    assert torch.equal(codes, expected)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_all_equal_codebook_picks_index_zero(variant):
    x = torch.randn(50, 8)
    codebook = torch.zeros(37, 8)
    with backend_env(variant) as backend:
        codes, _ = fastrq.nearest_code(x, codebook, backend=backend)
    assert torch.equal(codes, torch.zeros(50, dtype=torch.long))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@given(n=sizes_n, d=sizes_d, k=sizes_k, levels=st.integers(1, 4), seed=seeds)
def test_residual_quantize_is_greedy_and_consistent(variant, n, d, k, levels, seed):
    x = random_data(seed, n, d)
    codebooks = random_data(seed + 1, levels, k, d) * torch.logspace(0, -2, levels, dtype=torch.float64)[:, None, None]
    with backend_env(variant) as backend:
        quantized, codes = fastrq.residual_quantize(x, codebooks, backend=backend)
        decoded = fastrq.residual_decode(codes, codebooks, backend=backend)
    assert quantized.shape == x.shape and quantized.dtype == x.dtype
    assert codes.shape == (n, levels) and codes.dtype == torch.int64
    # each level's code is (near-)optimal for the residual left by the earlier levels' codes
    residual = x.clone()
    for level in range(levels):
        assert_codes_near_optimal(residual, codebooks[level], codes[:, level], F64_TOL)
        residual = residual - codebooks[level][codes[:, level]]
    # x = quantized + final residual, and decoding the codes gives quantized back
    torch.testing.assert_close(quantized + residual, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(decoded, quantized, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@given(n=sizes_n, k=sizes_k, levels=st.integers(1, 4), seed=seeds)
def test_residual_decode_prefix_and_skipped_levels(variant, n, k, levels, seed):
    d = 5
    codebooks = random_data(seed, levels, k, d)
    gen = torch.Generator().manual_seed(seed)
    prefix = int(torch.randint(0, levels + 1, (1,), generator=gen))
    codes = torch.randint(-1, k, (n, prefix), generator=gen)
    expected = torch.zeros(n, d, dtype=torch.float64)
    for level in range(prefix):
        for row in range(n):
            if codes[row, level] >= 0:
                expected[row] += codebooks[level, codes[row, level]]
    with backend_env(variant) as backend:
        decoded = fastrq.residual_decode(codes, codebooks, backend=backend)
    torch.testing.assert_close(decoded, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@given(n=st.sampled_from([2, 33, 200]), d=sizes_d, k=sizes_k, seed=seeds)
def test_permuting_the_batch_permutes_the_codes(variant, n, d, k, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-4, 5, (n, d), generator=gen).double()  # exact data: permutation cannot change any tie
    codebook = torch.randint(-4, 5, (k, d), generator=gen).double()
    perm = torch.randperm(n, generator=gen)
    with backend_env(variant) as backend:
        codes, _ = fastrq.nearest_code(x, codebook, backend=backend)
        permuted, _ = fastrq.nearest_code(x[perm], codebook, backend=backend)
    assert torch.equal(permuted, codes[perm])


# ---------------------------------------------------------------- EMA


def _ema_expected(codebook, cluster_size, embed_sum, x, codes, decay, eps):
    k = codebook.shape[0]
    counts = torch.zeros(k, dtype=torch.float64)
    sums = torch.zeros(k, codebook.shape[1], dtype=torch.float64)
    for row, code in zip(x.double(), codes.tolist()):
        counts[code] += 1
        sums[code] += row
    cs = decay * cluster_size.double() + (1 - decay) * counts
    es = decay * embed_sum.double() + (1 - decay) * sums
    total = cs.sum()
    if total == 0:  # no mass at all: 0/0, the op keeps the codebook
        return cs, es, codebook.double()
    smoothed = (cs + eps) / (total + k * eps) * total
    return cs, es, es / smoothed[:, None]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@given(n=sizes_n, d=sizes_d, k=sizes_k, seed=seeds, decay=st.sampled_from([0.0, 0.5, 0.99, 1.0]))
def test_ema_update_matches_the_formula(variant, n, d, k, seed, decay):
    x = random_data(seed, n, d)
    codebook = random_data(seed + 1, k, d)
    cluster_size = random_data(seed + 2, k).abs() + 0.1
    embed_sum = codebook * cluster_size[:, None]
    codes = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    expected = _ema_expected(codebook, cluster_size, embed_sum, x, codes, decay, 1e-5)
    with backend_env(variant) as backend:
        fastrq.ema_update_(codebook, cluster_size, embed_sum, x, codes, decay=decay, eps=1e-5, backend=backend)
    for got, want in zip((cluster_size, embed_sum, codebook), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_ema_decay_one_keeps_statistics_and_decay_zero_gives_batch_means(variant):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen, dtype=torch.float64)
    codebook = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    cluster_size = torch.rand(10, generator=gen, dtype=torch.float64) + 1
    embed_sum = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    codes, _ = fastrq.nearest_code(x, codebook, backend="reference")
    with backend_env(variant) as backend:
        cs, es, cb = cluster_size.clone(), embed_sum.clone(), codebook.clone()
        fastrq.ema_update_(cb, cs, es, x, codes, decay=1.0, backend=backend)
        assert torch.equal(cs, cluster_size) and torch.equal(es, embed_sum)
        cs, es, cb = cluster_size.clone(), embed_sum.clone(), codebook.clone()
        fastrq.ema_update_(cb, cs, es, x, codes, decay=0.0, eps=1e-5, backend=backend)
    counts = torch.bincount(codes, minlength=10).double()
    means = torch.zeros_like(codebook).index_add_(0, codes, x) / counts.clamp(min=1)[:, None]
    smoothing = (counts + 1e-5) / (counts.sum() + 10 * 1e-5) * counts.sum() / counts.clamp(min=1)
    used = counts > 0
    torch.testing.assert_close(cb[used] * smoothing[used, None], means[used], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cs, counts)


def test_ema_with_no_mass_keeps_the_codebook():
    codebook = torch.randn(4, 3)
    before = codebook.clone()
    fastrq.ema_update_(codebook, torch.zeros(4), torch.zeros(4, 3), torch.empty(0, 3), torch.empty(0, dtype=torch.long), decay=0.0)
    assert torch.equal(codebook, before)


@pytest.mark.parametrize(
    "bad",
    ["nan", "inf", "code_range", "negative_code", "decay", "eps", "dim", "cluster_shape", "float_codes"],
)
def test_ema_update_rejects_bad_input_without_touching_state(bad):
    codebook, cluster_size, embed_sum = torch.randn(5, 3), torch.rand(5) + 1, torch.randn(5, 3)
    x, codes = torch.randn(20, 3), torch.randint(0, 5, (20,))
    kwargs = {"decay": 0.9, "eps": 1e-5}
    if bad == "nan":
        x[3, 1] = float("nan")
    elif bad == "inf":
        x[0, 0] = float("inf")
    elif bad == "code_range":
        codes[4] = 5
    elif bad == "negative_code":
        codes[4] = -1
    elif bad == "decay":
        kwargs["decay"] = 1.5
    elif bad == "eps":
        kwargs["eps"] = 0.0
    elif bad == "dim":
        x = torch.randn(20, 4)
    elif bad == "cluster_shape":
        cluster_size = torch.rand(6)
    elif bad == "float_codes":
        codes = codes.float()
    state = [t.clone() for t in (codebook, cluster_size, embed_sum)]
    with pytest.raises(fastrq.FastRQError):
        fastrq.ema_update_(codebook, cluster_size, embed_sum, x, codes, **kwargs)
    for got, want in zip((codebook, cluster_size, embed_sum), state):
        assert torch.equal(got, want), f"{bad}: state changed although the update raised"


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_code_statistics_are_bitwise_deterministic(variant):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 16, generator=gen)
    codes = torch.randint(0, 7, (5000,), generator=gen)  # few codes: many rows per code
    with backend_env(variant) as backend:
        first = fastrq.code_statistics(x, codes, 7, backend=backend)
        for _ in range(3):
            again = fastrq.code_statistics(x, codes, 7, backend=backend)
            assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("group", [4, 64])
@given(n=st.integers(1, 150), d=st.sampled_from([1, 3, 8]), k=st.integers(1, 70), levels=st.integers(1, 3),
       seed=seeds, duplicate_every=st.sampled_from([0, 3, 5]))
def test_torch_backend_tiling_matches_the_reference(group, n, d, k, levels, seed, duplicate_every):
    """The torch backend's tiles shrunk so that one call crosses many row blocks, code blocks (with a running min
    across them) and argmin groups: codes must equal the reference index for index on small-integer data, where
    every distance is exact and ties (duplicate rows, equidistant codes) are frequent."""
    from unittest import mock

    from fastrq.ops import torch_backend

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (n, d), generator=gen).float()
    codebooks = torch.randint(-2, 3, (levels, k, d), generator=gen).float()
    if duplicate_every:
        codebooks[:, duplicate_every::duplicate_every] = codebooks[:, :1]
    tiles = dict(CODE_BLOCK=2 * group, TILE_ELEMENTS=64 * 2 * group, GROUP=group)
    with mock.patch.multiple(torch_backend, **tiles), backend_env("torch-pure") as backend:
        codes, _ = fastrq.nearest_code(x, codebooks[0], backend=backend)
        quantized, rq_codes = fastrq.residual_quantize(x, codebooks, backend=backend)
    assert torch.equal(codes, reference.nearest_code(x.double(), codebooks[0].double())[0])
    expected_quantized, expected_codes = reference.residual_quantize(x.double(), codebooks.double())
    assert torch.equal(rq_codes, expected_codes)
    assert torch.equal(quantized.double(), expected_quantized)


def test_the_preparation_cache_is_never_stale_and_keeps_one_entry_per_codebook(monkeypatch):
    """fastrq.ops.torch_backend.prepare_levels: a codebook changed in place (also through ``.data``) is prepared
    again, an unchanged one is reused, two codebooks of one shape keep an entry each, and a codebook that changes
    every step (training) does not pile entries up."""
    from fastrq.ops import torch_backend

    monkeypatch.setattr(torch_backend, "_PREPARED", type(torch_backend._PREPARED)())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 40, generator=gen)
    a = torch.randn(2, 16, 40, generator=gen)
    b = a.clone()
    first = torch_backend.prepare_levels(a)
    assert torch_backend.prepare_levels(a) is first
    assert torch_backend.prepare_levels(b) is not first  # another tensor: its own entry
    assert torch_backend.prepare_levels(a) is first and torch_backend.prepare_levels(b) is not first
    codes = fastrq.residual_quantize(x, a, backend="torch")[1]
    a.data[0] = x[:16]  # in place: every row of level 0 moves onto a row of x
    assert torch_backend.prepare_levels(a) is not first
    moved = fastrq.residual_quantize(x, a, backend="torch")[1]
    assert torch.equal(moved[:16, 0], torch.arange(16)) and not torch.equal(moved, codes)
    for _ in range(5):  # a training codebook: new contents every step, one entry
        a.add_(0.01)
        torch_backend.prepare_levels(a)
    assert len([key for key in torch_backend._PREPARED if key[0][0] == tuple(a.shape)]) == 2
    # more same-shape codebooks than the per-shape bound, all of them training: b's stable entry outlives them
    keep_b = torch_backend.prepare_levels(b)
    others = [a.clone() for _ in range(torch_backend.PREPARED_PER_SHAPE + 1)]
    for step in range(3):
        for book in others:
            book.add_(0.01)
            torch_backend.prepare_levels(book)
        assert torch_backend.prepare_levels(b) is keep_b
    assert len([key for key in torch_backend._PREPARED if key[0][0] == tuple(a.shape)]) == torch_backend.PREPARED_PER_SHAPE


def test_a_copy_of_a_codebook_that_changed_since_is_searched_with_its_own_contents():
    """Found 2026-12-02: the preparation cache was keyed by shape and validated by content, and an unshifted
    preparation is a view of the codebook it was made from; a copy B of codebook A, searched after A changed in
    place, matched A's old hashes and was searched with A's new rows (735 of 2,000 rows wrong). Keyed by the tensor
    now, and validated against that tensor's own rows."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=gen)
    a = torch.randn(2, 256, 64, generator=gen)
    b = a.clone()
    want = fastrq.residual_quantize(x, b, backend="reference")[1]
    fastrq.residual_quantize(x, a, backend="torch")
    a.mul_(-1.0).add_(3.0)
    assert torch.equal(fastrq.residual_quantize(x, b, backend="torch")[1], want)
