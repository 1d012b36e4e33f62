"""RQ-Transformer prior: causality, loss over every code, KV-cached sampler == full re-run sampler, filtering."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrq.errors import CodeRangeError, DTypeError, InvalidArgumentError, ShapeError
from fastrq.models.networks.rq_transformer import (
    KVCache,
    PriorConfig,
    RQTransformer,
    filter_logits,
    flatten_codes,
    pick_codes,
    unflatten_codes,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def tiny(seed: int = 0, dtype=torch.float64, **overrides) -> RQTransformer:
    options = dict(codebook_size=7, depth=3, num_positions=5, dim=16, heads=2, spatial_layers=2, depth_layers=2)
    options.update(overrides)
    torch.manual_seed(seed)
    model = RQTransformer(PriorConfig(**options)).to(dtype).eval()
    with torch.no_grad():  # break the near-uniform init so that logits differ visibly between contexts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@settings(max_examples=20)
@given(
    depth=st.integers(1, 3), codebook_size=st.integers(2, 12), positions=st.integers(1, 6), classes=st.sampled_from([0, 3]),
    batch=st.integers(1, 4), seed=st.integers(0, 2**16), temperature=st.sampled_from([1.0, 0.7, 1.5, 0.0]),
    top_k=st.sampled_from([None, 1, 3]), top_p=st.sampled_from([None, 0.5, 0.9]), conditional=st.booleans(),
)
def test_cached_sampler_gives_the_same_codes_as_full_rerun(depth, codebook_size, positions, classes, batch, seed,
                                                           temperature, top_k, top_p, conditional):
    model = tiny(seed, codebook_size=codebook_size, depth=depth, num_positions=positions, num_classes=classes)
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, positions, depth, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator) if classes and conditional else None
    kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, u=u)
    cached = model.sample(batch, labels, **kwargs)
    full = model.sample_uncached(batch, labels, **kwargs)
    assert cached.shape == (batch, positions, depth) and cached.dtype == torch.int64
    assert torch.equal(cached, full)
    assert int(cached.min()) >= 0 and int(cached.max()) < codebook_size


def test_cached_sampler_float32_matches_and_draws_differ_by_seed():
    model = tiny(1, dtype=torch.float32, codebook_size=16, num_positions=9)
    u = torch.rand(8, 9, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(model.sample(8, u=u), model.sample_uncached(8, u=u))
    a = model.sample(8, generator=torch.Generator().manual_seed(1))
    b = model.sample(8, generator=torch.Generator().manual_seed(1))
    c = model.sample(8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_sampling_is_argmax_of_the_teacher_forced_logits():
    model = tiny(2)
    codes = model.sample(3, temperature=0.0, u=torch.rand(3, 5, 3))
    logits = model(codes)
    assert torch.equal(logits.argmax(-1), codes)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), t=st.integers(0, 4), level=st.integers(0, 2))
def test_logits_depend_only_on_earlier_codes(seed, t, level):
    """logits[:, t, l] is unchanged by codes at (t, ≥l) and later positions, and changes with earlier ones."""
    model = tiny(seed % 7)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 7, (2, 5, 3), generator=g)
    base = model(codes)[:, t, level]
    later = codes.clone()
    later[:, t, level:] = (later[:, t, level:] + 1 + torch.randint(0, 6, later[:, t, level:].shape, generator=g)) % 7
    later[:, t + 1:] = torch.randint(0, 7, later[:, t + 1:].shape, generator=g)
    torch.testing.assert_close(model(later)[:, t, level], base, rtol=1e-12, atol=1e-12)
    if t > 0 or level > 0:
        earlier = codes.clone()
        if level > 0:
            earlier[:, t, level - 1] = (earlier[:, t, level - 1] + 1) % 7
        else:
            earlier[:, t - 1, 0] = (earlier[:, t - 1, 0] + 1) % 7
        assert not torch.allclose(model(earlier)[:, t, level], base)


def test_class_conditioning_changes_the_first_logits():
    model = tiny(3, num_classes=4)
    codes = torch.randint(0, 7, (4, 5, 3))
    a = model(codes, torch.tensor([0, 1, 2, 3]))
    b = model(codes, torch.tensor([1, 1, 1, 1]))
    assert torch.allclose(a[1], b[1]) and not torch.allclose(a[0], b[0])
    assert not torch.allclose(model(codes)[0, 0], a[0, 0])  # labels=None → the "no class" token


def test_loss_counts_every_code_including_zero():
    model = tiny(4).train()
    zeros = torch.zeros(3, 5, 3, dtype=torch.long)
    loss = model.loss(zeros)
    assert torch.isfinite(loss)
    logits = model(zeros)
    expected = -logits.log_softmax(-1)[..., 0].mean()
    torch.testing.assert_close(loss, expected.float().to(loss.dtype), rtol=1e-6, atol=1e-6)
    loss.backward()
    assert model.head.bias.grad[0] != 0  # code 0 is a target, not padding


def test_nll_per_depth_is_the_loss_in_bits():
    model = tiny(5)
    codes = torch.randint(0, 7, (6, 5, 3))
    bits = model.nll_per_depth(codes, batch_size=4)
    logp = model(codes).log_softmax(-1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(bits, (-logp.mean((0, 1)) / math.log(2)).double(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(float(bits.mean() * math.log(2)), float(model.loss(codes).detach()), rtol=1e-6, atol=1e-6)


def test_training_fits_a_deterministic_code_pattern():
    """A few dozen steps on codes that are a function of the class must bring the loss far below log K."""
    torch.manual_seed(0)
    model = RQTransformer(PriorConfig(codebook_size=8, depth=2, num_positions=4, dim=32, heads=2, spatial_layers=1,
                                      depth_layers=1, num_classes=4, class_dropout=0.0))
    labels = torch.arange(4).repeat(8)
    codes = torch.stack([(labels[:, None] + torch.arange(4)) % 8, (2 * labels[:, None] + torch.arange(4)) % 8], -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = float(model.loss(codes, labels).detach())
    for _ in range(120):
        loss = model.loss(codes, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert start > 1.5 and float(loss.detach()) < 0.1
    samples = model.sample(4, torch.arange(4), temperature=0.0)
    assert torch.equal(samples, codes[:4])


def test_filter_logits_top_k_top_p_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()
    assert kept(filter_logits(logits, top_k=2)) == [True, False, True, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.51)) == [True, False, True, False]
    assert kept(filter_logits(logits, top_p=0.8)) == [True, False, True, False]
    assert kept(filter_logits(logits, top_p=0.81)) == [True, False, True, True]
    assert kept(filter_logits(logits, temperature=0.0)) == [True, False, False, False]
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2)
    ties = torch.zeros(1, 5)
    assert kept(filter_logits(ties, temperature=0.0)) == [True, False, False, False, False]  # smallest index wins
    for bad in (dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(InvalidArgumentError):
            filter_logits(logits, **bad)


def test_pick_codes_is_the_inverse_cdf_of_the_filtered_distribution():
    probs = torch.tensor([0.1, 0.0, 0.2, 0.3, 0.4])
    n = 1000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # evenly spaced draws: counts = n·p up to rounding
    picks = pick_codes(probs.log().expand(n, -1), u)
    counts = torch.bincount(picks, minlength=5).double()
    assert counts[1] == 0
    assert (counts - n * probs.double()).abs().max() <= 1
    top2 = torch.bincount(pick_codes(probs.log().expand(n, -1), u, top_k=2), minlength=5)
    assert top2[:3].sum() == 0 and abs(int(top2[3]) - 3 * n // 7) <= 1
    edge = pick_codes(torch.tensor([[0.0, 0.0, -math.inf]]), torch.tensor([1.0 - 1e-12]))
    assert int(edge) == 1  # never a filtered-out code, even at the top of the CDF


def test_bad_inputs_raise_clear_errors():
    model = tiny(6, num_classes=3)
    good = torch.zeros(2, 5, 3, dtype=torch.long)
    with pytest.raises(CodeRangeError):
        model(good + 7)
    with pytest.raises(CodeRangeError):
        model(good - 1)
    with pytest.raises(ShapeError):
        model(good[..., :2])
    with pytest.raises(ShapeError):
        model(torch.zeros(2, 6, 3, dtype=torch.long))
    with pytest.raises(DTypeError):
        model(good.float())
    with pytest.raises(CodeRangeError):
        model(good, torch.tensor([0, 3]))
    with pytest.raises(ShapeError):
        model(good, torch.tensor([0]))
    with pytest.raises(InvalidArgumentError):
        tiny(6)(good, torch.tensor([0, 1]))  # unconditional model given labels
    with pytest.raises(ShapeError):
        model.sample(2, u=torch.rand(2, 4, 3))
    with pytest.raises(InvalidArgumentError):
        model.sample(2, top_k=[1, 2])  # one per depth needs 3 entries
    with pytest.raises(InvalidArgumentError):
        PriorConfig(dim=10, heads=3)
    cache = KVCache(1, 1, 1, 2, 4, device="cpu", dtype=torch.float32)
    cache.advance(2)
    with pytest.raises(InvalidArgumentError):
        cache.append(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))


def test_sampling_leaves_training_mode_and_weights_alone():
    model = tiny(7).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.sample(2, generator=torch.Generator().manual_seed(0))
    model.sample_uncached(2, generator=torch.Generator().manual_seed(0))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_code_layout_round_trip():
    codes = torch.randint(0, 9, (2, 7, 7, 2))
    flat = flatten_codes(codes)
    assert flat.shape == (2, 49, 2) and torch.equal(flat[:, 8], codes[:, 1, 1])  # raster order
    assert torch.equal(unflatten_codes(flat, 7, 7), codes)
    with pytest.raises(ShapeError):
        flatten_codes(flat)


def test_dropout_in_training_and_state_dict_round_trip():
    model = tiny(8, dropout=0.5).train()
    codes = torch.randint(0, 7, (2, 5, 3))
    assert not torch.allclose(model(codes), model(codes))
    model.eval()
    other = RQTransformer(model.config).to(torch.float64).eval()
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(codes), model(codes))
    assert F.softmax(model(codes), -1).sum(-1).sub(1).abs().max() < 1e-9
