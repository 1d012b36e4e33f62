"""Beam search in ResidualQuantizer: never worse than greedy, works in train and eval and for any batch size,
and finds better paths than greedy where greedy is known to be suboptimal."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastrq import ResidualQuantizer
from fastrq.ops import search


def _rand(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _final_error64(x, codebooks, codes):
    r = x.double()
    for level in range(codes.shape[1]):
        r = r - codebooks[level].double()[codes[:, level]]
    return r.square().sum(-1)


@given(
    n=st.sampled_from([1, 2, 5, 40]),
    d=st.sampled_from([1, 2, 5]),
    k=st.sampled_from([2, 4, 9]),
    levels=st.sampled_from([2, 3, 4]),
    beam=st.sampled_from([2, 3, 8]),
    seed=st.integers(0, 2**31 - 1),
)
def test_beam_never_worse_than_greedy(n, d, k, levels, beam, seed):
    torch.manual_seed(seed)
    greedy = ResidualQuantizer(d, k, levels).eval()
    beamed = ResidualQuantizer(d, k, levels, beam_size=beam).eval()
    beamed.load_state_dict(greedy.state_dict())
    x = _rand(seed, n, d, scale=1.5)
    codes_g, codes_b = greedy.encode(x), beamed.encode(x)
    assert codes_b.shape == (n, levels) and codes_b.dtype == torch.int64
    err_g = _final_error64(x, greedy.codebooks, codes_g)
    err_b = _final_error64(x, greedy.codebooks, codes_b)
    assert torch.all(err_b <= err_g + 1e-5 * (1 + err_g))


def test_beam_improves_on_a_greedy_trap():
    codebooks = torch.tensor([[[1.0], [0.0]], [[0.9], [3.0]]])
    x = torch.tensor([[0.9]])  # greedy: code 0 (1.0), residual −0.1, level 1 best 0.9 → err 1.0²; beam: 0 then 0.9 → 0
    greedy = search.greedy_codes(x, codebooks, [2, 2], "torch")
    beamed = search.beam_codes(x, codebooks, [2, 2], beam_size=2)
    assert greedy.tolist() == [[0, 0]] and beamed.tolist() == [[1, 0]]
    assert float(_final_error64(x, codebooks, beamed)) < 1e-12 < float(_final_error64(x, codebooks, greedy))


def test_beam_alone_beats_greedy_on_average():
    """The beam itself (without the greedy fallback of the module) finds lower-error paths on random data."""
    x = _rand(0, 500, 4)
    codebooks = _rand(1, 4, 16, 4) * torch.tensor([1.0, 0.6, 0.4, 0.3])[:, None, None]
    greedy = search.greedy_codes(x, codebooks, [16] * 4, "torch")
    beamed = search.beam_codes(x, codebooks, [16] * 4, beam_size=8)
    err_g, err_b = _final_error64(x, codebooks, greedy), _final_error64(x, codebooks, beamed)
    assert err_b.mean() < 0.95 * err_g.mean()
    assert (err_b < err_g - 1e-9).sum() > 50


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_beam_search_runs_in_train_and_eval_for_any_batch(batch, training):
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 3, beam_size=4).train(training)
    x = _rand(0, batch, 5, 4).requires_grad_()
    q, codes, loss = rq(x)
    assert q.shape == x.shape and codes.shape == (batch, 5, 3)
    (q.sum() + loss).backward()
    assert torch.isfinite(x.grad).all()


def test_beam_search_is_row_blocked(monkeypatch):
    """Blocking the rows (to bound memory) does not change the result."""
    torch.manual_seed(0)
    x = _rand(0, 50, 3)
    codebooks = _rand(1, 3, 6, 3)
    whole = search.beam_codes(x, codebooks, [6] * 3, 3)
    monkeypatch.setattr(search, "BEAM_TILE_ELEMENTS", 3 * 6 * 7)  # 7 rows per block
    blocked = search.beam_codes(x, codebooks, [6] * 3, 3)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=0)


def test_beam_with_per_level_sizes_respects_sizes():
    torch.manual_seed(0)
    rq = ResidualQuantizer(2, [2, 5, 3], 3, beam_size=3).eval()
    codes = rq.encode(_rand(0, 64, 2))
    assert all(int(codes[:, level].max()) < size for level, size in enumerate([2, 5, 3]))
