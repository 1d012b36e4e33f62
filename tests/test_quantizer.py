"""Behaviour and property tests of fastrq.ResidualQuantizer / VectorQuantizer: shapes, dtypes, the
straight-through gradient, the loss against a float64 recomputation, encode/decode, statistics, state_dict, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastrq
from fastrq import ResidualQuantizer, VectorQuantizer


def _rand(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _walk64(x, codebooks, codes):
    """float64 oracle: per-level residuals r_1..r_L for given codes (−1 skipped)."""
    r = x.double().reshape(-1, x.shape[-1])
    codes = codes.reshape(-1, codes.shape[-1])
    residuals = []
    for level in range(codes.shape[1]):
        c = codes[:, level]
        e = codebooks[level].double()[c.clamp(min=0)] * (c >= 0)[:, None]
        r = r - e
        residuals.append(r)
    return residuals


def _assert_greedy_levels_near_optimal(x, codebooks, codes, tol=1e-5):
    """Each level's code is a nearest code of that level's residual (distance within tol · scale)."""
    r = x.double().reshape(-1, x.shape[-1])
    codes = codes.reshape(-1, codes.shape[-1])
    for level in range(codes.shape[1]):
        table = codebooks[level].double()
        d = (r[:, None, :] - table[None]).square().sum(-1)
        chosen = d.gather(1, codes[:, level : level + 1]).squeeze(1)
        scale = r.square().sum(-1) + table.square().sum(-1).max()
        assert torch.all(chosen - d.min(1).values <= tol * scale), f"level {level}: a code is not the nearest"
        r = r - table[codes[:, level]]


@given(
    n=st.sampled_from([0, 1, 2, 7, 64]),
    d=st.sampled_from([1, 3, 8]),
    k=st.sampled_from([1, 2, 5, 16]),
    levels=st.sampled_from([1, 2, 4]),
    ema=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_forward_matches_float64_oracle(n, d, k, levels, ema, seed):
    torch.manual_seed(seed)
    rq = ResidualQuantizer(d, k, levels, ema=ema, commitment_weight=0.3).eval()
    x = _rand(seed, n, d, scale=2.0)
    quantized, codes, loss = rq(x)
    assert quantized.shape == x.shape and quantized.dtype == x.dtype
    assert codes.shape == (n, levels) and codes.dtype == torch.int64
    if n:
        _assert_greedy_levels_near_optimal(x, rq.codebooks, codes)
    residuals = _walk64(x, rq.codebooks, codes)
    expected_q = x.double() - residuals[-1]
    torch.testing.assert_close(quantized.double(), expected_q, rtol=1e-5, atol=1e-5)
    per_level = sum(r.square().mean() for r in residuals) if n else torch.tensor(0.0)
    # eval mode: commitment term only (the learned-codebook term is added where the codebook trains)
    torch.testing.assert_close(loss.double(), per_level.double() * 0.3, rtol=1e-5, atol=1e-6)


@given(n=st.sampled_from([1, 5, 33]), levels=st.sampled_from([1, 3]), seed=st.integers(0, 2**31 - 1))
def test_gradient_is_straight_through_plus_commitment(n, levels, seed):
    torch.manual_seed(seed)
    d, beta = 4, 0.25
    rq = ResidualQuantizer(d, 8, levels, commitment_weight=beta)
    x = _rand(seed, n, d).requires_grad_()
    quantized, codes, loss = rq(x)
    upstream = _rand(seed + 1, n, d)
    (quantized * upstream).sum().backward(retain_graph=True)
    torch.testing.assert_close(x.grad, upstream)
    x.grad = None
    before = rq.codebooks.detach().clone()  # the EMA update after the forward must not change the gradient
    _, codes, loss = rq(x)
    loss.backward()
    # d/dx β Σ_l mean(r_{l+1}²), earlier levels through sg = 2β/(N·D) Σ_l r_{l+1}, with the codebooks of the forward
    residuals = _walk64(x.detach(), before, codes)
    expected = 2 * beta / (n * d) * sum(residuals)
    torch.testing.assert_close(x.grad.double(), expected, rtol=1e-5, atol=1e-7)


def test_commitment_gradient_against_autograd_oracle():
    torch.manual_seed(0)
    n, d, levels, beta = 40, 6, 3, 0.4
    rq = ResidualQuantizer(d, 16, levels, commitment_weight=beta).eval()  # eval: codebooks fixed
    x = _rand(1, n, d).requires_grad_()
    _, codes, loss = rq(x)
    loss.backward()
    x64 = x.detach().double().requires_grad_()
    r, total = x64, 0.0
    for level in range(levels):
        e = rq.codebooks[level].double()[codes[:, level]]
        total = total + beta * (r - e).square().mean()
        r = r - e.detach()  # earlier levels enter through sg(e) only
    total.backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-7)


def test_learned_codebook_gradient_against_autograd_oracle():
    torch.manual_seed(0)
    n, d, levels, k = 50, 5, 2, 8
    rq = ResidualQuantizer(d, k, levels, ema=False, commitment_weight=0.25)
    x = _rand(3, n, d)
    before = rq.codebook.detach().clone()
    _, codes, loss = rq(x)
    loss.backward()
    cb = before.double().requires_grad_()
    r, total = x.double(), 0.0
    for level in range(levels):
        e = cb[level][codes[:, level]]
        total = total + 0.25 * (r - e.detach()).square().mean() + (r.detach() - e).square().mean()
        r = r - e.detach()
    total.backward()
    torch.testing.assert_close(rq.codebook.grad.double(), cb.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss.double(), total.detach(), rtol=1e-5, atol=1e-7)


def test_learned_codebook_is_parameter_and_ema_is_buffer():
    assert isinstance(ResidualQuantizer(4, 8, 2, ema=False).codebook, torch.nn.Parameter)
    rq = ResidualQuantizer(4, 8, 2)
    assert not isinstance(rq.codebook, torch.nn.Parameter) and list(rq.parameters()) == []
    assert set(rq.state_dict()) == {"codebook", "embed_sum", "cluster_size", "initted", "rng_state"}


def test_encode_decode_round_trip_and_prefix():
    torch.manual_seed(0)
    rq = ResidualQuantizer(8, 32, 4).eval()
    x = _rand(0, 3, 5, 8)
    quantized, codes, _ = rq(x)
    assert codes.shape == (3, 5, 4)
    torch.testing.assert_close(rq.encode(x), codes, rtol=0, atol=0)
    torch.testing.assert_close(rq.decode(codes), quantized, rtol=1e-6, atol=1e-6)
    prefix = rq.decode(codes[..., :2])
    expected = rq.codebooks[0][codes[..., 0]] + rq.codebooks[1][codes[..., 1]]
    torch.testing.assert_close(prefix, expected)
    skipped = codes.clone()
    skipped[..., 1] = -1
    torch.testing.assert_close(rq.decode(skipped), quantized - rq.codebooks[1][codes[..., 1]], rtol=1e-5, atol=1e-5)
    assert rq.codebooks.shape == (4, 32, 8)


def test_vector_quantizer_codes_have_no_level_axis():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16)
    x = _rand(0, 2, 9, 4)
    q, codes, loss, stats = vq(x, return_stats=True)
    assert codes.shape == (2, 9) and q.shape == x.shape and loss.dim() == 0
    assert all(v.dim() == 0 for v in stats.values())
    vq.eval()
    torch.testing.assert_close(vq.decode(vq.encode(x)), vq(x)[0])
    with pytest.raises(fastrq.InvalidArgumentError):
        VectorQuantizer(4, 16, num_quantizers=2)


def test_channel_first_layout():
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 2, channel_first=True).eval()
    x = _rand(0, 2, 3, 4, 5)
    q, codes, _ = rq(x)
    assert q.shape == x.shape and codes.shape == (2, 4, 5, 2)
    ref = ResidualQuantizer(3, 8, 2).eval()
    ref.load_state_dict(rq.state_dict())
    q_last, codes_last, _ = ref(x.movedim(1, -1))
    torch.testing.assert_close(codes, codes_last, rtol=0, atol=0)
    torch.testing.assert_close(q, q_last.movedim(-1, 1))
    torch.testing.assert_close(rq.decode(codes), q)
    with pytest.raises(fastrq.ShapeError):
        rq(_rand(0, 2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_and_autocast(dtype):
    torch.manual_seed(0)
    rq = ResidualQuantizer(8, 16, 2)
    x = _rand(0, 32, 8).to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, codes, loss = rq(x)
    assert q.dtype == dtype and loss.dtype == torch.float32 and rq.codebook.dtype == torch.float32
    (q.float().sum() + loss).backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    # codes are those of the fp32 search on the upcast input
    rq.eval()
    torch.testing.assert_close(rq.encode(x.detach()), rq.encode(x.detach().float()), rtol=0, atol=0)


def test_stats_from_counts():
    torch.manual_seed(0)
    rq = ResidualQuantizer(2, 4, 2).eval()
    x = _rand(0, 100, 2)
    _, codes, _, stats = rq(x, return_stats=True)
    for level in range(2):
        counts = torch.bincount(codes[:, level], minlength=4).double()
        p = counts / 100
        ppl = torch.exp(-(p[p > 0] * p[p > 0].log()).sum())
        torch.testing.assert_close(stats["perplexity"][level].double(), ppl, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats["usage"][level].double(), (counts > 0).double().mean())
    residuals = _walk64(x, rq.codebooks, codes)
    torch.testing.assert_close(stats["mse"].double(), torch.stack([r.square().mean() for r in residuals]), rtol=1e-5, atol=1e-7)
    assert stats["dead_codes"].tolist() == [0.0, 0.0]  # fresh cluster sizes are 1, the floor is < 1


def test_state_dict_round_trip_and_shape_errors():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 2, kmeans_init=True, dead_code_threshold=0.5)
    for _ in range(2):
        rq(_rand(0, 64, 4).requires_grad_())
    fresh = ResidualQuantizer(4, 8, 2, kmeans_init=True, dead_code_threshold=0.5)
    fresh.load_state_dict(rq.state_dict())
    for key, value in rq.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)
    assert bool(fresh.initted)
    x = _rand(5, 30, 4)
    rq.train(), fresh.train()
    out_a, out_b = rq(x), fresh(x)  # same state, same step: identical next update
    torch.testing.assert_close(out_a[1], out_b[1], rtol=0, atol=0)
    torch.testing.assert_close(rq.codebook, fresh.codebook, rtol=0, atol=0)

    wrong = ResidualQuantizer(4, 16, 2)
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(fastrq.StateDictError, match="codebook"):
        wrong.load_state_dict(rq.state_dict())
    for key, value in wrong.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_per_level_codebook_sizes():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, [3, 7, 2], 3)
    x = _rand(0, 200, 4)
    for _ in range(3):
        _, codes, _ = rq(x)
    assert all(int(codes[:, level].max()) < size for level, size in enumerate([3, 7, 2]))
    assert rq.codebooks.shape == (3, 7, 4)
    # padding rows stay zero and unused
    assert torch.all(rq.codebook[0, 3:] == 0) and torch.all(rq.cluster_size[2, 2:] == 0)
    rq.eval()
    _, codes, _ = rq(x)
    masked = rq.codebooks.clone()
    _assert_greedy_levels_near_optimal(x, [masked[0, :3], masked[1, :7], masked[2, :2]], codes)
    with pytest.raises(fastrq.CodeRangeError):
        rq.decode(torch.tensor([[0, 0, 5]]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(dim=0, codebook_size=4, num_quantizers=1),
        dict(dim=4, codebook_size=0, num_quantizers=1),
        dict(dim=4, codebook_size=[4, 4], num_quantizers=3),
        dict(dim=4, codebook_size=4, num_quantizers=2, decay=1.5),
        dict(dim=4, codebook_size=4, num_quantizers=2, eps=0.0),
        dict(dim=4, codebook_size=4, num_quantizers=2, beam_size=0),
        dict(dim=4, codebook_size=4, num_quantizers=2, on_nonfinite="ignore"),
        dict(dim=4, codebook_size=[4, 5], num_quantizers=2, shared_codebook=True),
        dict(dim=4, codebook_size=4, num_quantizers=2, sync_distributed="always"),
    ],
)
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(fastrq.InvalidArgumentError):
        ResidualQuantizer(**kwargs)


def test_bad_input():
    rq = ResidualQuantizer(4, 8, 2)
    with pytest.raises(fastrq.ShapeError):
        rq(torch.randn(3, 5))
    with pytest.raises(fastrq.DTypeError):
        rq(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(fastrq.CodeRangeError):
        rq.decode(torch.tensor([[0, 8]]))
    with pytest.raises(fastrq.ShapeError):
        rq.decode(torch.zeros(2, 3, dtype=torch.long))


def test_eval_and_no_grad_change_no_state():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 2, kmeans_init=True, dead_code_threshold=1.0)
    before = {k: v.clone() for k, v in rq.state_dict().items()}
    x = _rand(0, 50, 4)
    rq.eval()
    rq(x)
    rq.encode(x)
    rq.train()
    with torch.no_grad():
        rq(x)
    for key, value in rq.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    rq(x)
    assert bool(rq.initted) and not torch.equal(rq.codebook, before["codebook"])


def test_non_contiguous_and_float64_input():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 2).eval()
    base = _rand(0, 4, 10, 3)  # [D, N, 3] -> a strided [N, D] view
    x = base[:, :, 1].T
    assert not x.is_contiguous()
    q, codes, _ = rq(x)
    q_c, codes_c, _ = rq(x.contiguous())
    torch.testing.assert_close(codes, codes_c, rtol=0, atol=0)
    torch.testing.assert_close(q, q_c, rtol=0, atol=0)
    q64, codes64, loss64 = rq(x.double())
    assert q64.dtype == torch.float64 and loss64.dtype == torch.float32
    torch.testing.assert_close(codes64, codes, rtol=0, atol=0)


def test_dead_code_statistic_counts_small_cluster_sizes():
    rq = ResidualQuantizer(2, [4, 3], 2, dead_code_threshold=0.5).eval()
    with torch.no_grad():
        rq.cluster_size.copy_(torch.tensor([[0.1, 0.6, 0.2, 0.9], [0.4, 0.0, 2.0, 0.0]]))  # [1, 3] is padding
    _, _, _, stats = rq(_rand(0, 10, 2), return_stats=True)
    assert stats["dead_codes"].tolist() == [2.0, 2.0]


@given(
    sizes=st.sampled_from([[1], [16], [16, 12, 5], [300, 300]]),
    shared=st.booleans(),
    num_valid=st.sampled_from([0, 1, 37, "tensor"]),
    threshold=st.sampled_from([0.5, 1.0, 4.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_native_level_statistics_match_the_tensor_ops(sizes, shared, num_valid, threshold, seed):
    """fastrq.ops.training.level_statistics in one native call against its tensor-op form: mse, usage and dead
    codes exactly, the perplexity (float64 entropy natively: 1e-6 of the float64 formula; float32 in the ops: 1e-5
    of the native value); levels of different sizes, a shared codebook's cluster sizes [1, K], levels with no count,
    num_valid 0 / a tensor."""
    from fastrq.ops import training

    if shared and len(set(sizes)) > 1:
        sizes = [sizes[0]] * len(sizes)
    gen = torch.Generator().manual_seed(seed)
    levels, k = len(sizes), max(sizes)
    counts = torch.randint(0, 5, (levels, k), generator=gen).float() * (torch.rand(levels, k, generator=gen) < 0.6)
    for level, size in enumerate(sizes):
        counts[level, size:] = 0.0
    counts[-1] *= seed % 2  # sometimes a level without any count
    cluster_size = torch.rand(1 if shared else levels, k, generator=gen) * 2 * threshold
    sqerr = torch.rand(levels, generator=gen) * 100
    valid = torch.tensor(23) if num_valid == "tensor" else num_valid
    native = training.level_statistics(sqerr, counts, cluster_size, sizes, valid, 8, threshold)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "_native_statistics", lambda *tensors: False)
        ops = training.level_statistics(sqerr, counts, cluster_size, sizes, valid, 8, threshold)
    assert native.keys() == ops.keys()
    for name in ("mse", "usage", "dead_codes"):
        assert torch.equal(native[name], ops[name].float()), name
    p = counts.double() / counts.double().sum(-1, keepdim=True).clamp_min(1)
    exact = torch.exp(-torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1))
    torch.testing.assert_close(native["perplexity"].double(), exact, rtol=1e-6, atol=0)  # float64 entropy, rounded
    # the tensor-op form sums up to K float32 terms: about K·2⁻²⁴ relative
    torch.testing.assert_close(native["perplexity"], ops["perplexity"], rtol=1e-5, atol=0)
