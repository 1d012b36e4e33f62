"""The fused training step (``fastrq.ops.training.quantize_and_update_``: search, walk, statistics, EMA, dead-code
restart and step counter in one native call) against the two-step path it replaces (the training pass, then
``codebook_update_``): bitwise the same outputs, gradients and state, step after step, over shapes, ragged levels,
restarts, quantizer dropout, masks, ties, offset data and non-finite input."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import disable_fused_step
from hypothesis import given
from hypothesis import strategies as st

import fastrq
from fastrq.errors import NonFiniteError
from fastrq.kernels.cpu import launch

pytestmark = pytest.mark.skipif(launch.library() is None, reason="the native library does not build here")


class _Calls:
    """Counts the fused native steps that ran."""

    def __init__(self, monkeypatch):
        self.count = 0
        run = launch.training_step_

        def counted(*args, **kwargs):
            self.count += 1
            return run(*args, **kwargs)

        monkeypatch.setattr(launch, "training_step_", counted)


def _batch(seed: int, n: int, dim: int, scale: float, offset: float) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * scale + offset


def _steps(module, batches, masks, upstreams):
    """Training steps (forward with statistics, backward of a loss on the output and the commitment loss); the
    outputs, input gradients and statistics of each, then the state."""
    outputs = []
    for step, (x, mask, upstream) in enumerate(zip(batches, masks, upstreams)):
        leaf = x.clone().requires_grad_()
        torch.manual_seed(1000 + step)  # quantizer dropout draws from torch's generator
        quantized, codes, loss, stats = module(leaf, mask=mask, return_stats=True)
        ((quantized * upstream).sum() + loss).backward()
        outputs.append((quantized.detach(), codes, loss.detach(), leaf.grad, *stats.values()))
    return outputs, {key: value.clone() for key, value in module.state_dict().items()}


def _assert_same(fused, unfused):
    (out_a, state_a), (out_b, state_b) = fused, unfused
    for step, (a, b) in enumerate(zip(out_a, out_b)):
        for index, (u, v) in enumerate(zip(a, b)):
            assert torch.equal(u, v) or (u.is_floating_point() and torch.allclose(u, v, equal_nan=True, rtol=0, atol=0)), (step, index)
    for key, value in state_a.items():
        assert torch.equal(value, state_b[key]), key


@given(
    dim=st.sampled_from([1, 3, 4, 8, 16, 33, 64]),
    sizes=st.sampled_from([[16], [128], [16, 16], [16, 12, 5], [64, 64, 64], [300, 40]]),
    n=st.sampled_from([1, 7, 64, 300]),
    threshold=st.sampled_from([0.0, 2.0]),
    dropout=st.sampled_from(["none", "batch", "per-sample"]),
    mask=st.sampled_from(["none", "some", "all"]),
    data=st.sampled_from(["normal", "offset", "ties"]),
    decay=st.sampled_from([0.0, 0.8, 0.99]),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_fused_step_matches_the_two_step_path(dim, sizes, n, threshold, dropout, mask, data, decay, seed):
    """Outputs, input gradients, statistics and the whole state (codebooks, EMA buffers, step counter) bitwise
    equal to the training pass followed by ``codebook_update_``, over four steps; "ties": codebooks with duplicate
    rows and rows on them (the smallest index must win in both); "offset": data ~ 50 + N(0, 1), far from the
    initial codebooks (every code but one goes dead, so restarts run)."""
    levels = len(sizes)
    options = dict(codebook_size=sizes, num_quantizers=levels, dead_code_threshold=threshold, decay=decay)
    if dropout != "none" and levels > 1:
        options.update(quantize_dropout=True, quantize_dropout_per_sample=dropout == "per-sample")
    torch.manual_seed(seed)
    fused = fastrq.ResidualQuantizer(dim, **options).train()
    if data == "ties":
        with torch.no_grad():
            fused.codebook[:, 1::2] = fused.codebook[:, 0:-1:2].clone()  # every odd code repeats the one before it
            fused.embed_sum.copy_(fused.codebook * fused.cluster_size[..., None])
    unfused = fastrq.ResidualQuantizer(dim, **options).train()
    unfused.load_state_dict(fused.state_dict())
    scale, offset = (1.0, 50.0) if data == "offset" else (dim ** -0.5, 0.0)
    batches = [_batch(seed + step, n, dim, scale, offset) for step in range(4)]
    if data == "ties":
        on_codes = fused.codebook[0, torch.arange(n // 2) % sizes[0]].clone()  # rows exactly on (twinned) codes
        batches = [torch.cat([on_codes, b[n // 2 :]]) for b in batches]
    masks = [None] * 4
    if mask != "none":
        masks = [torch.zeros(n, dtype=torch.bool) if mask == "all" else _batch(seed + 50 + s, n, 1, 1, 0)[:, 0] > -0.5
                 for s in range(4)]
    upstreams = [_batch(seed + 90 + step, n, dim, 1.0, 0.0) for step in range(4)]
    eligible = dim <= launch.SMALL_DIM or max(sizes) <= launch.WIDE_MAX_CODES
    with pytest.MonkeyPatch.context() as patch:
        calls = _Calls(patch)
        got = _steps(fused, batches, masks, upstreams)
        assert calls.count == (4 if eligible else 0)
        disable_fused_step(patch)
        want = _steps(unfused, batches, masks, upstreams)
        assert calls.count == (4 if eligible else 0)  # the two-step path never calls it
    _assert_same(got, want)


def test_the_fused_step_runs_for_the_default_modules_only(monkeypatch):
    """VectorQuantizer and ResidualQuantizer with EMA take the fused step; a learned, shared, cosine or
    per-level-loss quantizer, a frozen codebook, eval mode and no_grad do not (they run their own paths)."""
    calls = _Calls(monkeypatch)
    x = _batch(0, 64, 4, 1.0, 0.0)
    fastrq.VectorQuantizer(4, 16).train()(x)
    fastrq.ResidualQuantizer(4, 16, 3, dead_code_threshold=1.0).train()(x)
    assert calls.count == 2
    for options in (dict(ema=False), dict(shared_codebook=True), dict(use_cosine_sim=True), dict(loss_per_level=True),
                    dict(rotation_trick=True), dict(freeze_codebook=True), dict(beam_size=2)):
        fastrq.ResidualQuantizer(4, 16, 2, **options).train()(x)
    quantizer = fastrq.ResidualQuantizer(4, 16, 2)
    quantizer.eval()(x)
    with torch.no_grad():
        quantizer.train()(x)
    assert calls.count == 2


@pytest.mark.parametrize("policy", ["raise", "skip"])
@pytest.mark.parametrize("bad", ["nan", "overflow"])
def test_the_fused_step_on_non_finite_input(monkeypatch, policy, bad):
    """A batch holding NaN, or finite but with squared residuals that overflow: under "raise" an error naming the
    cause and the state exactly as it was (step counter included); under "skip" a warning, the codebooks and EMA
    buffers as they were and the step counter advanced: what the two-step path does."""
    torch.manual_seed(0)
    fused = fastrq.ResidualQuantizer(4, 16, 2, on_nonfinite=policy, dead_code_threshold=1.0).train()
    unfused = fastrq.ResidualQuantizer(4, 16, 2, on_nonfinite=policy, dead_code_threshold=1.0).train()
    unfused.load_state_dict(fused.state_dict())
    x = _batch(1, 64, 4, 1.0, 0.0)
    if bad == "nan":
        x[3, 1] = float("nan")
    else:
        x[3] = 3e38
    calls = _Calls(monkeypatch)
    before = {key: value.clone() for key, value in fused.state_dict().items()}
    results = []
    for module, two_steps in ((fused, False), (unfused, True)):
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if two_steps:
                disable_fused_step(patch)
            if policy == "raise":
                with pytest.raises(NonFiniteError, match="overflowed" if bad == "overflow" else "NaN or infinity"):
                    module(x)
            else:
                module(x)
                assert any("skipped" in str(w.message) for w in caught)
        results.append({key: value.clone() for key, value in module.state_dict().items()})
    assert calls.count == 1
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key
        if key == "rng_state" and policy == "skip":
            assert value[1] == before[key][1] + 1
        else:
            assert torch.equal(value, before[key]), key
