"""Behaviour of the quantizer options added for codebook health (issue 11) and for vector-quantize-pytorch users
(issue 13): padding masks, quantizer dropout controls, n_quantizers, freeze_codebook, loss_per_level, get_codes,
argument hints, the rotation trick, cosine codes, codebook_dim projections and k-means++ seeding."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrq
from fastrq import ResidualQuantizer, VectorQuantizer
from fastrq.ops import codebook_state


def _rand(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a, b, exact=True):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


# ------------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(dead_code_threshold=3.0),
        dict(kmeans_init=True, kmeans_iters=2),
        dict(shared_codebook=True, dead_code_threshold=2.0),
        dict(ema=False, dead_code_threshold=2.0),
        dict(use_cosine_sim=True, rotation_trick=True),
    ],
    ids=["ema", "restarts", "kmeans", "shared", "learned", "cosine-rotation"],
)
def test_masked_step_leaves_the_state_of_the_valid_rows_alone(kwargs):
    """A step on (x, mask) leaves the state exactly where a step on x[mask] would; masked rows come back as x with
    codes −1, and take no part in the loss."""
    torch.manual_seed(0)
    a = ResidualQuantizer(4, 12, 3, **kwargs)
    b = ResidualQuantizer(4, 12, 3, **kwargs)
    b.load_state_dict(a.state_dict())
    for step in range(3):
        x = _rand(step, 6, 10, 4)
        mask = _rand(100 + step, 6, 10) > -0.3
        qa, ca, la = a(x, mask=mask)
        qb, cb, lb = b(x[mask])
        assert torch.equal(qa[~mask], x[~mask]) and torch.all(ca[~mask] == -1)
        assert torch.equal(ca[mask], cb)
        torch.testing.assert_close(qa[mask], qb, rtol=0, atol=0)
        torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-7)
        _assert_same_state(_state(a), _state(b))


def test_mask_gradient_passes_masked_rows_through():
    rq = ResidualQuantizer(4, 8, 2)
    x = _rand(0, 5, 7, 4).requires_grad_()
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[:, 5:] = False
    q, _, loss = rq(x, mask=mask)
    weights = _rand(1, 5, 7, 4)
    (q * weights).sum().backward()
    torch.testing.assert_close(x.grad[~mask], weights[~mask])


def test_mask_errors_name_the_problem():
    rq = ResidualQuantizer(4, 8, 2)
    with pytest.raises(fastrq.ShapeError, match="mask must have x's leading shape"):
        rq(_rand(0, 5, 4), mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(fastrq.DTypeError, match="bool"):
        rq(_rand(0, 5, 4), mask=torch.ones(5))


def test_encode_with_mask_and_n_quantizers():
    rq = ResidualQuantizer(4, 8, 3).eval()
    x = _rand(0, 9, 4)
    mask = torch.arange(9) % 3 != 0
    codes = rq.encode(x, mask=mask, n_quantizers=2)
    assert torch.all(codes[~mask] == -1) and torch.all(codes[mask][:, 2] == -1)
    full = rq.encode(x)
    assert torch.equal(codes[mask][:, :2], full[mask][:, :2])
    q, c, _ = rq(x, n_quantizers=1)
    torch.testing.assert_close(q, rq.decode(full[:, :1]))


# ------------------------------------------------------------------------------------------------ dropout


def _active_counts(codes):
    return (codes >= 0).sum(-1)


def test_dropout_probability_zero_never_drops_and_cutoff_bounds_the_draw():
    torch.manual_seed(0)
    never = ResidualQuantizer(4, 8, 4, quantize_dropout=True, quantize_dropout_prob=0.0)
    cut = ResidualQuantizer(4, 8, 6, quantize_dropout=True, quantize_dropout_cutoff_index=2)
    seen = set()
    for step in range(40):
        x = _rand(step, 16, 4)
        assert torch.all(_active_counts(never(x)[1]) == 4)
        counts = _active_counts(cut(x)[1])
        assert torch.all(counts == counts[0])
        seen.add(int(counts[0]))
    assert seen == {3, 4, 5, 6}


def test_dropout_multiple_of_and_per_sample():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 8, quantize_dropout=True, quantize_dropout_per_sample=True, quantize_dropout_multiple_of=4)
    seen = set()
    for step in range(20):
        x = _rand(step, 10, 3, 4)  # 10 samples of 3 vectors each
        counts = _active_counts(rq(x)[1])
        assert torch.all(counts == counts[:, :1]), "every vector of a sample shares the sample's count"
        seen |= set(counts[:, 0].tolist())
    assert seen == {4, 8}
    rq.eval()
    assert torch.all(_active_counts(rq(_rand(0, 10, 3, 4))[1]) == 8)


def test_per_sample_dropout_output_is_each_rows_prefix_decode():
    torch.manual_seed(2)
    rq = ResidualQuantizer(4, 8, 3, quantize_dropout=True, quantize_dropout_per_sample=True, decay=1.0)
    x = _rand(0, 12, 4)
    q, codes, _ = rq(x)
    torch.testing.assert_close(q, rq.decode(codes))
    assert len(set(_active_counts(codes).tolist())) > 1


def test_dropout_argument_errors():
    with pytest.raises(fastrq.InvalidArgumentError, match="quantize_dropout_cutoff_index"):
        ResidualQuantizer(4, 8, 3, quantize_dropout_cutoff_index=3)
    with pytest.raises(fastrq.InvalidArgumentError, match="quantize_dropout_prob"):
        ResidualQuantizer(4, 8, 3, quantize_dropout_prob=1.5)
    with pytest.raises(fastrq.InvalidArgumentError, match="n_quantizers"):
        ResidualQuantizer(4, 8, 3)(_rand(0, 2, 4), n_quantizers=4)


# ------------------------------------------------------------------------------------------------ freeze, loss


@pytest.mark.parametrize("kwargs", [dict(kmeans_init=True, dead_code_threshold=5.0), dict(ema=False, dead_code_threshold=5.0)])
def test_freeze_codebook_changes_no_state(kwargs):
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 2, freeze_codebook=True, **kwargs)
    before = _state(rq)
    x = _rand(0, 50, 4).requires_grad_()
    q, _, loss = rq(x)
    (q.sum() + loss).backward()
    _assert_same_state(_state(rq), before)
    assert x.grad is not None
    if not rq.ema:
        assert rq.codebook.grad is None  # no codebook loss either


def test_loss_per_level_matches_the_sum_and_its_gradient():
    torch.manual_seed(0)
    a = ResidualQuantizer(4, 8, 3, loss_per_level=True, decay=1.0)
    b = ResidualQuantizer(4, 8, 3, decay=1.0)
    b.load_state_dict(a.state_dict())
    x = _rand(0, 30, 4)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    _, codes, per_level = a(xa)
    _, _, total = b(xb)
    assert per_level.shape == (3,)
    torch.testing.assert_close(per_level.sum(), total)
    weights = torch.tensor([1.0, -2.0, 0.5])
    (per_level * weights).sum().backward()
    # oracle: the same losses written with autograd
    xo = x.clone().requires_grad_()
    residual, oracle = xo, 0.0
    for level in range(3):
        chosen = a.codebooks[level][codes[:, level]].detach()
        oracle = oracle + weights[level] * 0.25 * (residual - chosen).square().mean()
        residual = residual - chosen
    oracle.backward()
    torch.testing.assert_close(xa.grad, xo.grad, rtol=1e-5, atol=1e-7)


def test_get_codes_sums_to_decode():
    rq = ResidualQuantizer(4, [8, 5, 3], 3).eval()
    x = _rand(0, 2, 7, 4)
    codes = rq.encode(x)
    codes[0, 0, 2] = -1
    vectors = rq.get_codes(codes)
    assert vectors.shape == (2, 7, 3, 4)
    torch.testing.assert_close(vectors.sum(-2), rq.decode(codes))
    vq = VectorQuantizer(4, 8)
    assert vq.get_codes(torch.tensor([1, -1])).shape == (2, 4)


# ------------------------------------------------------------------------------------------------ hints


@pytest.mark.parametrize(
    "name,equivalent",
    [("threshold_ema_dead_code", "dead_code_threshold"), ("channel_last", "channel_first"),
     ("accept_image_fmap", "channel_first=True"), ("sync_codebook", "sync_distributed"), ("ema_update", "ema=")],
)
def test_vector_quantize_pytorch_names_raise_with_the_fastrq_equivalent(name, equivalent):
    with pytest.raises(fastrq.InvalidArgumentError, match=equivalent):
        ResidualQuantizer(4, 8, 2, **{name: True})
    with pytest.raises(TypeError, match="unexpected keyword"):
        ResidualQuantizer(4, 8, 2, not_an_option=1)


def test_channel_first_looking_input_gets_a_hint():
    rq = ResidualQuantizer(16, 8, 2)
    with pytest.raises(fastrq.ShapeError, match="channel_first=True"):
        rq(_rand(0, 2, 16, 5, 7))
    with pytest.warns(UserWarning, match="channel_first=True"):
        rq(_rand(0, 2, 16, 5, 16))  # C = W: runs along W, but says so once


# ------------------------------------------------------------------------------------------------ rotation trick


def _rotation_jacobian_t(r, e, g):
    """λ Rᵀ g in float64, from the paper's definition (explicit matrices)."""
    out = []
    for rr, ee, gg in zip(r.double(), e.double(), g.double()):
        u, q = rr / rr.norm(), ee / ee.norm()
        w = (u + q) / (u + q).norm()
        eye = torch.eye(len(rr), dtype=torch.float64)
        rotation = eye - 2 * torch.outer(w, w) + 2 * torch.outer(q, u)
        assert torch.allclose(rotation @ u, q, atol=1e-10)
        out.append(ee.norm() / rr.norm() * rotation.T @ gg)
    return torch.stack(out)


def test_rotation_trick_input_gradient_is_the_rotation_of_the_output_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 16, rotation_trick=True, commitment_weight=0.0, decay=1.0)
    x = _rand(0, 20, 5).requires_grad_()
    q, codes, _ = vq(x)
    torch.testing.assert_close(q, vq.decode(codes), rtol=0, atol=0)  # value: the decoded codes exactly
    g = _rand(1, 20, 5)
    (q * g).sum().backward()
    expected = _rotation_jacobian_t(x.detach(), vq.codebook[0][codes].detach(), g)
    torch.testing.assert_close(x.grad.double(), expected, rtol=1e-4, atol=1e-5)


def _rotation_matrix(r, e):
    """λR (float64 [D, D]) of one row: R rotates r/‖r‖ onto e/‖e‖, λ = ‖e‖/‖r‖."""
    r, e = r.double(), e.double()
    u, q = r / r.norm(), e / e.norm()
    w = (u + q) / (u + q).norm()
    eye = torch.eye(len(r), dtype=torch.float64)
    return e.norm() / r.norm() * (eye - 2 * torch.outer(w, w) + 2 * torch.outer(q, u))


def test_rotation_trick_residual_chain_gradient():
    """RQ: quantized = x − r_L along r_{l+1} = r_l − λ_l R_l r_l, so ∂quantized/∂x = I − A_{L−1}···A_0 with
    A_l = I − λ_l R_l, and the input gradient is g − A_0ᵀ···A_{L−1}ᵀ g."""
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 16, 3, rotation_trick=True, commitment_weight=0.0, decay=1.0)
    x = _rand(0, 10, 4).requires_grad_()
    q, codes, _ = rq(x)
    g = _rand(1, 10, 4)
    (q * g).sum().backward()
    eye = torch.eye(4, dtype=torch.float64)
    expected = []
    for row in range(10):
        r = x.detach()[row].double()
        product = eye
        for level in range(3):
            e = rq.codebooks[level][codes[row, level]].detach().double()
            product = (eye - _rotation_matrix(r, e)) @ product
            r = r - e
        expected.append(g[row].double() - product.T @ g[row].double())
    torch.testing.assert_close(x.grad.double(), torch.stack(expected), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ cosine codes


def test_cosine_codes_stay_unit_and_the_search_is_a_cosine_search():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 32, use_cosine_sim=True, dead_code_threshold=1.0, kmeans_init=True)
    for step in range(5):
        vq(_rand(step, 64, 6, scale=3.0))
        torch.testing.assert_close(vq.codebook[0].norm(dim=-1), torch.ones(32), rtol=1e-5, atol=1e-5)
    x = _rand(9, 40, 6, scale=5.0)
    codes = vq.encode(x)
    cosine = torch.nn.functional.normalize(x, dim=-1) @ vq.codebook[0].T
    best = cosine.max(dim=-1).values
    assert torch.all(cosine.gather(1, codes[:, None])[:, 0] >= best - 1e-5)


def test_cosine_commitment_uses_the_normalised_input():
    vq = VectorQuantizer(4, 8, use_cosine_sim=True, commitment_weight=1.0)
    x = _rand(0, 30, 4, scale=10.0)
    book = vq.codebook[0].clone()
    _, codes, loss = vq(x)
    expected = (torch.nn.functional.normalize(x, dim=-1) - book[codes]).square().mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_learned_cosine_codebook_is_normalised_in_the_forward():
    vq = VectorQuantizer(4, 8, use_cosine_sim=True, ema=False)
    with torch.no_grad():
        vq.codebook.mul_(7.0)
    q, codes, loss = vq(_rand(0, 20, 4))
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(20), rtol=1e-5, atol=1e-5)
    loss.backward()
    assert vq.codebook.grad is not None and torch.isfinite(vq.codebook.grad).all()


# ------------------------------------------------------------------------------------------------ codebook_dim


def test_codebook_dim_projects_and_trains_the_projections():
    torch.manual_seed(0)
    rq = ResidualQuantizer(32, 16, 3, codebook_dim=8, decay=1.0)
    assert rq.codebook.shape == (3, 16, 8)
    x = _rand(0, 2, 10, 32).requires_grad_()
    q, codes, loss = rq(x)
    assert q.shape == x.shape and codes.shape == (2, 10, 3)
    torch.testing.assert_close(q, rq.decode(codes), rtol=1e-5, atol=1e-6)
    (q.square().mean() + loss).backward()
    assert rq.project_in.weight.grad is not None and rq.project_out.weight.grad is not None
    assert x.grad is not None
    assert rq.get_codes(codes).shape == (2, 10, 3, 8)


# ------------------------------------------------------------------------------------------------ k-means++


def _well_separated(seed, clusters=8, per_cluster=40, dim=2):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen) * 20
    x = centres.repeat_interleave(per_cluster, 0) + 0.3 * torch.randn(clusters * per_cluster, dim, generator=gen)
    return centres, x[torch.randperm(x.shape[0], generator=gen)]


def test_kmeans_plus_plus_finds_well_separated_centres():
    """k-means++ seeds then Lloyd: at least 7 of 8 well-separated centres in at least 9 of 10 seeds."""
    found = []
    for seed in range(10):
        centres, x = _well_separated(seed)
        torch.manual_seed(seed)
        vq = VectorQuantizer(2, 8, kmeans_init=True, kmeans_iters=10)
        vq(x)
        distance = torch.cdist(centres, vq.codebook[0]).min(dim=1).values
        found.append(int((distance < 1.0).sum()))
    assert sum(f >= 7 for f in found) >= 9, found


def test_kmeans_plus_plus_seeds_are_deterministic_and_distinct():
    _, x = _well_separated(0)
    a = codebook_state.kmeans_plus_plus_seeds(x, 8, torch.tensor(5), 1, False)
    b = codebook_state.kmeans_plus_plus_seeds(x, 8, torch.tensor(5), 1, False)
    c = codebook_state.kmeans_plus_plus_seeds(x, 8, torch.tensor(6), 1, False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.unique(a, dim=0).shape[0] == 8


# ------------------------------------------------------------------------------------------------ the option matrix


@settings(max_examples=12, deadline=None)
@given(
    ema=st.booleans(), beam=st.sampled_from([1, 3]), dropout=st.booleans(), shared=st.booleans(),
    rotation=st.booleans(), cosine=st.booleans(), dim=st.sampled_from([None, 3]), masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_option_combination_trains(ema, beam, dropout, shared, rotation, cosine, dim, masked, seed):
    torch.manual_seed(seed)
    rq = ResidualQuantizer(
        6, 8, 3, ema=ema, beam_size=beam, quantize_dropout=dropout, shared_codebook=shared, rotation_trick=rotation,
        use_cosine_sim=cosine, codebook_dim=dim, dead_code_threshold=1.0, kmeans_init=True,
    )
    params = list(rq.parameters())
    for step in range(2):
        x = _rand(seed + step, 4, 5, 6).requires_grad_()
        mask = (_rand(seed + 50 + step, 4, 5) > -1.0) if masked else None
        q, codes, loss = rq(x, mask=mask)
        (q.square().mean() + loss).backward()
        assert torch.isfinite(q).all() and torch.isfinite(loss) and torch.isfinite(x.grad).all()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
        for key, value in rq.state_dict().items():
            assert not value.is_floating_point() or torch.isfinite(value).all(), key
    rq.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rq(_rand(0, 4, 6))
