"""torch.library registrations (opcheck) and torch.compile(fullgraph=True) of a small model with the quantizer:
compiled and eager agree on outputs, codes, gradients and every state buffer after the update."""

from __future__ import annotations

import copy

import pytest
import torch

import fastrq
import fastrq.library  # noqa: F401  (registers torch.ops.fastrq.*)


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _state(levels=2, k=6, d=3, stored=None):
    stored = levels if stored is None else stored
    cb = _rand(0, stored, k, d)
    cs = torch.ones(stored, k)
    return cb, cs, cb.clone(), torch.tensor([123, 4])


def test_opcheck_check_finite():
    torch.library.opcheck(torch.ops.fastrq.check_finite.default, (_rand(0, 5, 3), "raise"))


@pytest.mark.parametrize("beam", [1, 3])
def test_opcheck_search_codes(beam):
    x, cb = _rand(0, 9, 3), _rand(1, 2, 6, 3)
    torch.library.opcheck(torch.ops.fastrq.search_codes.default, (x, cb, [6, 4], None, beam, "torch"))
    torch.library.opcheck(torch.ops.fastrq.search_codes.default, (x, cb, [6, 6], torch.tensor(1), beam, "torch"))


def test_opcheck_residual_walk():
    x, cb = _rand(0, 9, 3), _rand(1, 2, 6, 3)
    codes = torch.ops.fastrq.search_codes(x, cb, [6, 6], None, 1, "torch")
    torch.library.opcheck(torch.ops.fastrq.residual_walk.default, (x, cb, codes, None, None, "torch"))
    rows = torch.tensor([2, 0, 1, 2, 2, 1, 0, 2, 1])
    torch.library.opcheck(torch.ops.fastrq.residual_walk.default, (x, cb, codes, torch.tensor(2), rows, "torch"))


@pytest.mark.parametrize("active", [None, 1])
def test_opcheck_quantize_for_training(active):
    x, cb = _rand(0, 9, 3), _rand(1, 2, 6, 3)
    active = None if active is None else torch.tensor(active)
    torch.library.opcheck(torch.ops.fastrq.quantize_for_training.default, (x, cb, [6, 4], active, None, "torch"))
    rows = torch.tensor([2, 0, 1, 2, 2, 1, 0, 2, 1])
    torch.library.opcheck(torch.ops.fastrq.quantize_for_training.default, (x, cb, [6, 6], active, rows, "torch"))


def test_opcheck_kmeans_init():
    cb, cs, es, rng = _state()
    x = _rand(2, 20, 3)
    args = (cb, cs, es, torch.tensor(False), rng, x, torch.tensor(True), [6, 6], 3, False, "torch")
    torch.library.opcheck(torch.ops.fastrq.kmeans_init_.default, args)


@pytest.mark.parametrize("shared", [False, True])
def test_opcheck_codebook_update(shared):
    cb, cs, es, rng = _state(stored=1 if shared else 2)
    x = _rand(2, 20, 3)
    search_cb = cb.expand(2, -1, -1) if shared else cb
    _, codes, _, _, counts, sums = torch.ops.fastrq.quantize_for_training(x, search_cb, [6, 6], None, None, "torch")
    args = (cb, cs, es, rng, x, codes, counts, sums, torch.tensor(True), None, [6, 6], 0.9, 1e-5, 0.8, True, False)
    torch.library.opcheck(torch.ops.fastrq.codebook_update_.default, args)


class _TinyModel(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.encoder = torch.nn.Linear(6, 4)
        self.rq = fastrq.ResidualQuantizer(4, 8, 2, **kwargs)
        self.decoder = torch.nn.Linear(4, 6)

    def forward(self, x):
        quantized, codes, loss = self.rq(self.encoder(x))
        return self.decoder(quantized), codes, loss


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kmeans_init=True, dead_code_threshold=0.5),
        dict(ema=False, dead_code_threshold=0.5),
    ],
    ids=["ema-kmeans-dead", "learned-dead"],
)
def test_compile_fullgraph_matches_eager(kwargs):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = _TinyModel(**kwargs)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    for step in range(3):
        x = _rand(step, 32, 6)
        y, codes, loss = eager(x)
        (y.square().mean() + loss).backward()
        y_c, codes_c, loss_c = compiled(x)
        (y_c.square().mean() + loss_c).backward()
        torch.testing.assert_close(codes_c, codes, rtol=0, atol=0)
        torch.testing.assert_close(y_c, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
        for (name, p), p_c in zip(eager.named_parameters(), compiled_model.parameters()):
            torch.testing.assert_close(p_c.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
        for key, value in eager.state_dict().items():
            torch.testing.assert_close(compiled_model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
    eager.eval(), compiled_model.eval()
    x = _rand(9, 16, 6)
    torch.testing.assert_close(compiled(x)[1], eager(x)[1], rtol=0, atol=0)
