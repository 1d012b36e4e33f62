"""Conversion from vector-quantize-pytorch (VQP, installed by the bench extra): the converted fastrq module gives
VQP's codes in eval on the same input, carries the EMA state, and says what it cannot carry over."""

from __future__ import annotations

import warnings

import pytest
import torch

import fastrq

vqp = pytest.importorskip("vector_quantize_pytorch", reason="vector-quantize-pytorch comes with the bench extra")


def _trained_vqp_rvq(seed=0, **kwargs):
    torch.manual_seed(seed)
    module = vqp.ResidualVQ(dim=8, codebook_size=32, num_quantizers=3, decay=0.8, rotation_trick=False, **kwargs)
    module.train()
    for step in range(3):
        module(torch.randn(1, 400, 8, generator=torch.Generator().manual_seed(step)))
    return module.eval()


def _convert(module, cls=fastrq.ResidualQuantizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_vector_quantize_pytorch(module).eval()


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(codebook_dim=4), dict(shared_codebook=True), dict(threshold_ema_dead_code=2),
     dict(quantize_dropout=True, quantize_dropout_cutoff_index=1), dict(use_cosine_sim=True)],
    ids=["plain", "codebook_dim", "shared", "dead-codes", "dropout", "cosine"],
)
def test_converted_residual_vq_gives_identical_codes(kwargs):
    source = _trained_vqp_rvq(**kwargs)
    converted = _convert(source)
    x = torch.randn(1, 500, 8, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        quantized, codes, _ = source(x)
        ours_q, ours_codes, _ = converted(x[0])
    assert torch.equal(ours_codes, codes[0])
    torch.testing.assert_close(ours_q, quantized[0], rtol=1e-5, atol=1e-5)
    assert converted.decay == 0.8 and converted.commitment_weight == 1.0
    if "threshold_ema_dead_code" in kwargs:
        assert converted.dead_code_threshold == 2.0
    if "quantize_dropout" in kwargs:
        assert converted.quantize_dropout and converted.dropout.cutoff_index == 1


def test_converted_state_is_vqps_ema_state_and_training_continues():
    source = _trained_vqp_rvq()
    converted = _convert(source)
    for level, layer in enumerate(source.layers):
        assert torch.equal(converted.codebook[level], layer._codebook.embed[0])
        assert torch.equal(converted.embed_sum[level], layer._codebook.embed_avg[0])
        assert torch.equal(converted.cluster_size[level], layer._codebook.cluster_size[0])
    converted.train()
    q, codes, loss = converted(torch.randn(64, 8, requires_grad=True))
    loss.backward()
    assert torch.isfinite(converted.codebook).all()


def test_converted_vector_quantize_gives_identical_codes():
    torch.manual_seed(0)
    source = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.8, rotation_trick=True)
    source.train()
    source(torch.randn(1, 300, 8))
    source.eval()
    converted = _convert(source, fastrq.VectorQuantizer)
    assert converted.rotation_trick
    x = torch.randn(1, 400, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(converted(x[0])[1], source(x)[1][0])


def test_what_cannot_be_carried_over_is_said():
    source = _trained_vqp_rvq()
    with pytest.warns(UserWarning, match="L·grad"):
        converted = fastrq.ResidualQuantizer.from_vector_quantize_pytorch(source)
    assert any("L·grad" in note for note in converted.conversion_notes)
    with pytest.raises(fastrq.InvalidArgumentError, match="heads"):
        fastrq.VectorQuantizer.from_vector_quantize_pytorch(vqp.VectorQuantize(dim=8, codebook_size=16, heads=2))
    with pytest.raises(fastrq.InvalidArgumentError, match="layernorm_after_project_in"):
        fastrq.VectorQuantizer.from_vector_quantize_pytorch(
            vqp.VectorQuantize(dim=8, codebook_size=16, codebook_dim=4, layernorm_after_project_in=True)
        )


def test_learnable_codebook_and_per_level_sizes_convert():
    torch.manual_seed(0)
    learned = vqp.VectorQuantize(dim=8, codebook_size=16, learnable_codebook=True, ema_update=False).eval()
    converted = _convert(learned, fastrq.VectorQuantizer)
    assert not converted.ema and isinstance(converted.codebook, torch.nn.Parameter)
    x = torch.randn(1, 200, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(converted(x[0])[1], learned(x)[1][0])
    ragged = vqp.ResidualVQ(dim=8, codebook_size=(16, 8), num_quantizers=2, rotation_trick=False).eval()
    converted = _convert(ragged)
    assert converted.level_sizes == [16, 8]
    with torch.no_grad():
        assert torch.equal(converted(x[0])[1], ragged(x)[1][0])
    with pytest.raises(fastrq.InvalidArgumentError, match="ResidualVQ"):
        fastrq.ResidualQuantizer.from_vector_quantize_pytorch(torch.nn.Linear(2, 2))


def test_vqp_residual_vq_passes_l_times_the_gradient():
    """The documented difference (migration guide): VQP's straight-through ResidualVQ multiplies the input
    gradient by the number of levels; fastrq's passes it unchanged."""
    torch.manual_seed(0)
    source = vqp.ResidualVQ(dim=4, codebook_size=16, num_quantizers=3, rotation_trick=False, commitment_weight=0.0)
    x = torch.randn(1, 50, 4, requires_grad=True)
    source(x)[0].sum().backward()
    assert torch.all(x.grad == 3.0)
    ours = fastrq.ResidualQuantizer(4, 16, 3, commitment_weight=0.0)
    y = torch.randn(50, 4, requires_grad=True)
    ours(y)[0].sum().backward()
    assert torch.all(y.grad == 1.0)
