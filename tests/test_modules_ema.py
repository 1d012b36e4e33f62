"""State updates of the quantizer modules: the EMA formula per level, shared codebooks, convergence, k-means init,
dead-code restarts, quantizer dropout and the non-finite policy."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import disable_fused_step
from hypothesis import given
from hypothesis import strategies as st

import fastrq
from fastrq import ResidualQuantizer, VectorQuantizer
from fastrq.ops import codebook_state


def _rand(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _mixture(seed, n, means, sigma):
    gen = torch.Generator().manual_seed(seed)
    which = torch.randint(0, means.shape[0], (n,), generator=gen)
    return means[which] + sigma * torch.randn(n, means.shape[1], generator=gen)


@given(
    n=st.sampled_from([1, 9, 100]),
    levels=st.sampled_from([1, 3]),
    k=st.sampled_from([2, 7]),
    decay=st.sampled_from([0.0, 0.5, 0.99]),
    seed=st.integers(0, 2**31 - 1),
)
def test_ema_step_is_ema_update_per_level(n, levels, k, decay, seed):
    """One training step = fastrq.ops.ema_update_ on each level's own residuals (with the pre-step codebooks)."""
    torch.manual_seed(seed)
    rq = ResidualQuantizer(3, k, levels, decay=decay, eps=1e-3)
    before = _state(rq)
    x = _rand(seed, n, 3)
    _, codes, _ = rq(x)
    residual = x.clone()
    for level in range(levels):
        cb, cs, es = before["codebook"][level].clone(), before["cluster_size"][level].clone(), before["embed_sum"][level].clone()
        fastrq.ema_update_(cb, cs, es, residual, codes[:, level], decay=decay, eps=1e-3)
        torch.testing.assert_close(rq.codebook[level], cb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rq.cluster_size[level], cs, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rq.embed_sum[level], es, rtol=1e-5, atol=1e-6)
        residual = residual - before["codebook"][level][codes[:, level]]
    assert int(rq.rng_state[1]) == 1


def test_shared_codebook_accumulates_levels_and_decays_once():
    torch.manual_seed(0)
    levels, k, decay = 4, 8, 0.9
    rq = ResidualQuantizer(2, k, levels, shared_codebook=True, decay=decay)
    assert rq.codebook.shape == (1, k, 2) and rq.codebooks.shape == (levels, k, 2)
    before = _state(rq)
    x = _rand(1, 50, 2)
    _, codes, _ = rq(x)
    counts = torch.zeros(k)
    sums = torch.zeros(k, 2)
    residual = x.clone()
    for level in range(levels):
        counts += torch.bincount(codes[:, level], minlength=k)
        sums.index_add_(0, codes[:, level], residual)
        residual = residual - before["codebook"][0][codes[:, level]]
    cs, es, cb = fastrq.ops.ema_step(
        before["codebook"][0], before["cluster_size"][0], before["embed_sum"][0], counts, sums, decay=decay, eps=1e-5
    )
    torch.testing.assert_close(rq.cluster_size[0], cs)
    torch.testing.assert_close(rq.embed_sum[0], es)
    torch.testing.assert_close(rq.codebook[0], cb)
    # decay applied once: total mass = decay·old + (1 − decay)·N·L (per-level decay would give decay^L·old + …)
    torch.testing.assert_close(rq.cluster_size.sum(), decay * before["cluster_size"].sum() + (1 - decay) * 50 * levels)


def test_ema_converges_to_mixture_means():
    torch.manual_seed(0)
    means = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    vq = VectorQuantizer(2, 4, decay=0.8)
    with torch.no_grad():  # each code starts 1.5 off its cluster (nearer its own than any other)
        vq.codebook[0] = means + 1.5
        vq.embed_sum.copy_(vq.codebook * vq.cluster_size[..., None])
    for step in range(60):
        vq(_mixture(step, 256, means, 0.2))
    torch.testing.assert_close(vq.codebook[0], means, rtol=0, atol=0.1)


def test_dead_code_restart_finds_every_cluster():
    torch.manual_seed(0)
    means = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    vq = VectorQuantizer(2, 6, decay=0.8, dead_code_threshold=0.5)
    with torch.no_grad():  # all codes far away on one side: only one would ever be used without restarts
        vq.codebook[0] = torch.tensor([[50.0, 50.0]]) + torch.arange(6.0)[:, None]
        vq.embed_sum.copy_(vq.codebook * vq.cluster_size[..., None])
    for step in range(60):
        vq(_mixture(step, 256, means, 0.2))
    dist = torch.cdist(means, vq.codebook[0]).min(dim=1).values
    assert torch.all(dist < 0.3), dist


def _kill_codes_from(first: int, *modules) -> None:
    """Codes ``first``.. of every level moved far away, their cluster sizes (and EMA sums) below any threshold."""
    for module in modules:
        with torch.no_grad():
            module.codebook[:, first:] = 1e3
            module.cluster_size[:, first:] = 0.1
            if module.ema:
                module.embed_sum.copy_(module.codebook * module.cluster_size[..., None])


@pytest.mark.parametrize("options", [
    dict(num_quantizers=2),
    dict(num_quantizers=3, codebook_size=[16, 12, 8]),
    dict(num_quantizers=2, shared_codebook=True),
    dict(num_quantizers=2, ema=False),
])
def test_skipping_a_restart_without_dead_codes_changes_nothing(monkeypatch, options):
    """On the CPU a step whose update cannot leave a code below the threshold skips the restart's candidates: the
    state after a sequence of steps (some restarting, some not) is bitwise that of the full path."""
    disable_fused_step(monkeypatch)  # the skip belongs to codebook_update_, which the fused native step replaces
    options = {"codebook_size": 16, **options}
    torch.manual_seed(0)
    fast = ResidualQuantizer(4, dead_code_threshold=2.0, decay=0.8, **options)
    full = ResidualQuantizer(4, dead_code_threshold=2.0, decay=0.8, **options)
    full.load_state_dict(fast.state_dict())
    decisions = []
    decide = codebook_state._may_have_dead_codes
    monkeypatch.setattr(codebook_state, "_may_have_dead_codes", lambda *a: decisions.append(decide(*a)) or decisions[-1])
    # the skip serves the tensor-op restart (the native one is cheap enough to run at every step)
    monkeypatch.setattr(codebook_state, "_native_restart_available", lambda *a: False)
    for step in range(12):
        x = _rand(step, 600, 4)
        if step % 6 == 0:  # now and then codes 8.. fall far away and below the threshold, in both modules alike
            _kill_codes_from(8, fast, full)
        fast(x)
        with monkeypatch.context() as patch:
            patch.setattr(codebook_state, "_host_reads_are_free", lambda t: False)
            full(x)
        for key, value in fast.state_dict().items():
            assert torch.equal(value, full.state_dict()[key]), (step, key)
    assert True in decisions and False in decisions, decisions  # both kinds of step occurred


@pytest.mark.parametrize("options", [
    dict(num_quantizers=2),
    dict(num_quantizers=3, codebook_size=[16, 12, 8]),
    dict(num_quantizers=3, shared_codebook=True),
    dict(num_quantizers=2, ema=False),
    dict(num_quantizers=3, quantize_dropout=True, quantize_dropout_per_sample=True),
    dict(num_quantizers=2, groups=2),
    dict(num_quantizers=2, masked=True),
    dict(num_quantizers=2, masked="all"),
])
def test_the_native_restart_matches_the_tensor_ops(monkeypatch, options):
    """The native dead-code restart (candidates, then the replacement after the native EMA step) leaves bitwise
    the state of the tensor-op restart, step after step: shared and per-level codebooks, levels of different sizes,
    learned codebooks, per-sample dropout (skipped levels), groups, masked rows and a batch with no valid row.
    (The native pieces of codebook_update_; the fused native step that replaces them for per-level EMA codebooks
    is checked against them in tests/test_fused_step.py.)"""
    disable_fused_step(monkeypatch)
    options = {"codebook_size": 16, **options}
    masked = options.pop("masked", False)
    make = fastrq.GroupedResidualQuantizer if "groups" in options else ResidualQuantizer
    dim = 8 if "groups" in options else 4
    torch.manual_seed(0)
    native = make(dim, dead_code_threshold=2.0, decay=0.8, **options)
    tensor = make(dim, dead_code_threshold=2.0, decay=0.8, **options)
    tensor.load_state_dict(native.state_dict())
    calls, restarted = [], []
    candidates = codebook_state._native_candidates
    monkeypatch.setattr(codebook_state, "_native_candidates", lambda *a: calls.append(1) or candidates(*a))
    for step in range(8):
        x = _rand(step, 300, dim) * (1 + step % 3)
        mask = None
        if masked:
            mask = torch.zeros(300, dtype=torch.bool) if masked == "all" else _rand(step + 50, 300) > 0.3
        if step % 3 == 0:  # codes 8.. fall far away and below the threshold, in both modules alike
            _kill_codes_from(8, native, tensor)
        torch.manual_seed(step)
        native(x, mask=mask)
        with monkeypatch.context() as patch:
            patch.setattr(codebook_state, "_native_restart_available", lambda *a: False)
            patch.setattr(codebook_state, "_host_reads_are_free", lambda t: False)
            torch.manual_seed(step)
            tensor(x, mask=mask)
        for key, value in native.state_dict().items():
            assert torch.equal(value, tensor.state_dict()[key]), (step, key)
        restarted.append(bool((native.cluster_size == 2.0).any()))  # a restarted code's size is the threshold
    assert len(calls) == 8
    assert any(restarted) == (masked != "all"), restarted  # restarts happened, except without a valid row


def test_native_candidates_of_an_empty_batch_are_zeros():
    """The launcher on no rows at all (the module never calls it so, but it is exported): no row took part and
    the candidates are zeros, as the tensor version gives; a one-column slice of a shared codebook's codes reads
    every level it is given, nothing beyond."""
    from fastrq.kernels.cpu import launch

    if not launch.walk_available(torch.empty(0)):
        pytest.skip("the native library does not build here")
    books = torch.randn(2, 5, 4)
    out = torch.full((2, 5, 4), 7.0)
    assert launch.dead_code_candidates(torch.empty(0, 4), books, torch.empty(0, 2, dtype=torch.long), 2, False, 3, 0,
                                       out) == 0
    assert torch.equal(out, torch.zeros_like(out))
    x, codes = torch.randn(6, 4), torch.randint(0, 5, (6, 3))
    key = torch.tensor(11)
    want, _ = codebook_state._dead_code_candidates(x, books[:1], codes, 3, key, True)
    got = torch.empty(1, 5, 4)
    assert launch.dead_code_candidates(x, books[:1], codes.contiguous(), 3, True, 11, codebook_state._DEAD_STREAM, got) == 6
    assert torch.equal(got, want)


def test_the_restart_is_skipped_only_when_no_code_can_be_dead():
    cluster_size = torch.tensor([[5.0, 3.0, 0.0]])
    counts = torch.tensor([[5.0, 3.0, 0.0]])
    # the third code is beyond the level's size: it never counts
    assert not codebook_state._may_have_dead_codes(cluster_size, counts, [2], False, 0.8, 2.0)
    assert codebook_state._may_have_dead_codes(cluster_size, counts, [3], False, 0.8, 2.0)
    # just at the threshold after the update (3·0.8 + 1.5·0.2 = 2.7 > 2; 2·0.8 + 2·0.2 = 2.0 is not below 2, but
    # within the rounding margin it counts as possibly dead)
    assert codebook_state._may_have_dead_codes(torch.tensor([[2.0]]), torch.tensor([[2.0]]), [1], False, 0.8, 2.0)
    assert not codebook_state._may_have_dead_codes(torch.tensor([[3.0]]), torch.tensor([[1.5]]), [1], False, 0.8, 2.0)


def test_dead_code_restart_resets_state_consistently():
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 2, dead_code_threshold=0.5, decay=0.9)
    with torch.no_grad():
        rq.codebook[:, 4:] = 1e3  # codes 4..7 are never chosen
        rq.cluster_size[:, 4:] = 0.1  # and already below the threshold
        rq.embed_sum.copy_(rq.codebook * rq.cluster_size[..., None])
    before = _state(rq)
    x = _rand(0, 40, 3)
    _, codes, _ = rq(x)
    residual1 = x - before["codebook"][0][codes[:, 0]]
    for level, rows in ((0, x), (1, residual1)):
        for k in range(4, 8):
            new = rq.codebook[level, k]
            assert torch.isclose(rows, new, atol=1e-6).all(dim=1).any(), "replacement is not a residual of the batch"
            assert float(rq.cluster_size[level, k]) == 0.5
            torch.testing.assert_close(rq.embed_sum[level, k], new * 0.5)
    # live codes were not touched by the restart
    assert torch.all(rq.cluster_size[:, :4] >= 0)
    # the replacement is not undone by a stale embed_sum at the next step
    rq(_rand(1, 40, 3))
    assert rq.codebook[0, 4:].abs().max() < 100


def test_kmeans_init_fixed_point_and_consistent_sums():
    torch.manual_seed(0)
    means = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    x = _mixture(0, 300, means, 0.3)
    vq = VectorQuantizer(2, 3, kmeans_init=True, kmeans_iters=20)
    codebooks, cs, es = vq.codebook.clone(), vq.cluster_size.clone(), vq.embed_sum.clone()
    initted = torch.tensor(False)
    codebook_state.kmeans_init_(codebooks, cs, es, initted, vq.rng_state, x, torch.tensor(True), [3], 20, False, "torch")
    assert bool(initted)
    codes = torch.cdist(x, codebooks[0]).argmin(1)
    counts = torch.bincount(codes, minlength=3).float()
    for k in range(3):
        if counts[k] > 0:
            torch.testing.assert_close(codebooks[0, k], x[codes == k].mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cs[0], counts.clamp_min(1))
    torch.testing.assert_close(es, codebooks * cs[..., None])


def test_kmeans_empty_cluster_keeps_a_sample():
    x = torch.tensor([[0.0], [0.0], [0.0], [10.0]])  # 4 rows, 3 codes: duplicate seeds leave a cluster empty
    cb, cs, es = torch.zeros(1, 3, 1), torch.zeros(1, 3), torch.zeros(1, 3, 1)
    initted = torch.tensor(False)
    for seed in range(8):
        initted.fill_(False)
        codebook_state.kmeans_init_(cb, cs, es, initted, torch.tensor([seed, 0]), x, torch.tensor(True), [3], 5, False, "torch")
        assert all(v in (0.0, 10.0) for v in cb.flatten().tolist()), "an empty cluster must keep a data sample"
        assert torch.all(cs >= 1)


def test_kmeans_init_runs_once_and_second_step_does_not_collapse():
    torch.manual_seed(0)
    means = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    rq = ResidualQuantizer(2, 4, 2, kmeans_init=True, decay=0.99)
    assert not bool(rq.initted)
    rq(_mixture(0, 400, means, 0.3))
    assert bool(rq.initted)
    after_first = rq.codebook.clone()
    for step in range(1, 4):
        rq(_mixture(step, 400, means, 0.3))
    # with embed_sum = embed (no · count) the next EMA step would shrink every code towards 0 by ~count·(1−γ)
    torch.testing.assert_close(rq.codebook[0], after_first[0], rtol=0, atol=0.1)
    assert rq.codebook[0].norm(dim=1).min() > 3.0


def test_quantize_dropout_prefixes():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 4, quantize_dropout=True)
    seen = set()
    x = _rand(0, 30, 4)
    for _ in range(40):
        before = _state(rq)
        q, codes, _ = rq(x)
        active = int((codes[0] >= 0).sum())
        seen.add(active)
        assert torch.all(codes[:, :active] >= 0) and torch.all(codes[:, active:] == -1)
        # skipped levels get no update
        torch.testing.assert_close(rq.cluster_size[active:], before["cluster_size"][active:], rtol=0, atol=0)
        torch.testing.assert_close(rq.codebook[active:], before["codebook"][active:], rtol=0, atol=0)
    assert seen == {1, 2, 3, 4}
    rq.eval()
    assert torch.all(rq(x)[1] >= 0)


def test_quantize_dropout_output_is_prefix_decode():
    torch.manual_seed(1)
    rq = ResidualQuantizer(4, 8, 3, quantize_dropout=True, decay=1.0)  # decay 1: codebooks frozen
    x = _rand(0, 20, 4).requires_grad_()
    for _ in range(10):
        q, codes, loss = rq(x)
        torch.testing.assert_close(q, rq.decode(codes))
        active = int((codes[0] >= 0).sum())
        r = x.detach().double()
        expected = 0.0
        for level in range(active):
            r = r - rq.codebooks[level].double()[codes[:, level]]
            expected += 0.25 * r.square().mean()
        torch.testing.assert_close(loss.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("kmeans", [True, False])
def test_nonfinite_raise_changes_nothing(ema, kmeans):
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 2, ema=ema, kmeans_init=kmeans, dead_code_threshold=1.0)
    before = _state(rq)
    for bad in (float("nan"), float("inf")):
        x = _rand(0, 20, 3)
        x[3, 1] = bad
        with pytest.raises(fastrq.NonFiniteError):
            rq(x.requires_grad_())
        for key, value in rq.state_dict().items():
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=False)
    if not ema:
        assert rq.codebook.grad is None


def test_nonfinite_skip_warns_and_changes_no_codebook():
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 2, on_nonfinite="skip", kmeans_init=True)
    before = _state(rq)
    x = _rand(0, 20, 3)
    x[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        rq(x)
    for key in ("codebook", "cluster_size", "embed_sum", "initted"):
        torch.testing.assert_close(rq.state_dict()[key], before[key], rtol=0, atol=0)
    rq(_rand(1, 20, 3))  # a finite batch afterwards updates normally
    assert bool(rq.initted) and torch.isfinite(rq.codebook).all()


def test_nonfinite_skip_learned_codebook_gets_no_update_from_stats():
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 2, ema=False, on_nonfinite="skip")
    before = _state(rq)
    x = _rand(0, 20, 3)
    x[0, 0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rq(x)
    torch.testing.assert_close(rq.cluster_size, before["cluster_size"], rtol=0, atol=0)


def test_empty_batch_changes_no_codebook():
    """N = 0 in training: nothing to learn from; k-means waits for data, dead codes are not replaced by zeros."""
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 2, kmeans_init=True, dead_code_threshold=100.0)
    before = _state(rq)
    q, codes, loss = rq(torch.zeros(0, 3, requires_grad=True))
    assert q.shape == (0, 3) and codes.shape == (0, 2) and float(loss.detach()) == 0.0
    assert not bool(rq.initted)
    # the EMA saw no data: sizes and sums decay together, the codes stay (up to rounding of the smoothing)
    torch.testing.assert_close(rq.codebook, before["codebook"], rtol=1e-5, atol=1e-6)
    rq(_rand(0, 30, 3))
    assert bool(rq.initted)
    initialised = rq.codebook.clone()
    rq(torch.zeros(0, 3))  # an empty batch after init: EMA decays the sizes, codes stay where they are
    assert torch.isfinite(rq.codebook).all()
    # every code is below the threshold now: without rows to sample from, none may be replaced (e.g. by zeros)
    assert torch.all(rq.cluster_size < 100.0)
    assert (rq.codebook - initialised).abs().max() < 1e-4


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_native_ema_step_matches_the_formula_and_ignores_the_thread_count(decay):
    """The native EMA step (kernels/cpu, elementwise over codes, OpenMP from 2^16 elements a level) against
    fastrq.ops.ema_step, on levels large enough for its parallel branch and one left empty (n = 0 keeps it)."""
    from fastrq.kernels.cpu import launch

    levels, k, d = 3, 1024, 64
    codebooks, embed_sum = _rand(1, levels, k, d), _rand(2, levels, k, d)
    cluster_size = _rand(3, levels, k).abs()
    cluster_size[2] = 0.0  # with decay 0 and no counts, level 2 has no mass: its codebook stays
    counts = torch.randint(0, 4, (levels, k), generator=torch.Generator().manual_seed(4)).float()
    counts[2] = 0.0
    sums = _rand(5, levels, k, d)
    if not launch.can_update(codebooks, cluster_size, embed_sum):
        pytest.skip("the native library does not build here")
    want = fastrq.ops.ema_step(codebooks, cluster_size, embed_sum, counts, sums, decay=decay, eps=1e-5)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            state = [codebooks.clone(), cluster_size.clone(), embed_sum.clone()]
            launch.ema_update_(*state, counts, sums, [k] * levels, [True] * levels, decay, 1e-5)
            results.append(state)
    finally:
        torch.set_num_threads(threads)
    for got, expected in zip(results[0], (want[2], want[0], want[1])):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for one, two in zip(*results):
        assert torch.equal(one, two)
    if decay == 0.0:
        assert torch.equal(results[0][0][2], codebooks[2])
