"""The functional ops with inputs that require grad: an encoder output as x, an ``nn.Parameter`` or an
``nn.Embedding`` weight as the codebook. Every backend and CPU path must accept them, and the outputs that are
differentiable for fixed codes must carry the analytic gradient."""

from __future__ import annotations

import pytest
import torch

import fastrq
from tests.strategies import backend_env

VARIANTS = ["reference", "torch", "torch-native", "torch-pure", "torch-faiss", pytest.param("triton", marks=pytest.mark.triton)]


def _inputs(kind: str, n=40, d=4, k=9, levels=2):
    gen = torch.Generator().manual_seed(0)
    encoder = torch.nn.Linear(3, d)
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(d, 3, generator=gen))
    x = encoder(torch.randn(n, 3, generator=gen))  # an encoder output: requires grad, not a leaf
    if kind == "parameter":
        book = torch.nn.Parameter(torch.randn(levels, k, d, generator=gen))
        return x, book, book
    embedding = torch.nn.Embedding(levels * k, d)
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(levels * k, d, generator=gen))
    return x, embedding.weight.view(levels, k, d), embedding.weight


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["parameter", "embedding"])
def test_nearest_code_sqdist_gradient(variant, kind):
    x, books, leaf = _inputs(kind)
    with backend_env(variant) as backend:
        codes, sqdist = fastrq.nearest_code(x, books[0], backend=backend)
    assert sqdist.requires_grad
    sqdist.sum().backward()
    chosen = books[0].detach()[codes]
    expected_book_grad = torch.zeros_like(books[0]).index_add_(0, codes, -2 * (x.detach() - chosen))
    leaf_grad = leaf.grad.view_as(books)[0]
    torch.testing.assert_close(leaf_grad, expected_book_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nearest_code_sqdist_gradient_reaches_the_encoder(variant):
    x, books, _ = _inputs("parameter")
    x.retain_grad()
    with backend_env(variant) as backend:
        codes, sqdist = fastrq.nearest_code(x, books[0], backend=backend)
    sqdist.sum().backward()
    torch.testing.assert_close(x.grad, 2 * (x.detach() - books[0].detach()[codes]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["parameter", "embedding"])
def test_residual_quantize_and_decode_gradient_reaches_the_codebooks(variant, kind):
    x, books, leaf = _inputs(kind)
    with backend_env(variant) as backend:
        quantized, codes = fastrq.residual_quantize(x, books, backend=backend)
        decoded = fastrq.residual_decode(codes, books, backend=backend)
    assert quantized.requires_grad and decoded.requires_grad
    weights = torch.randn_like(quantized)
    (quantized * weights).sum().backward()
    expected = torch.zeros_like(books)
    for level in range(books.shape[0]):
        expected[level].index_add_(0, codes[:, level], weights)
    torch.testing.assert_close(leaf.grad.view_as(books), expected)
    torch.testing.assert_close(decoded, quantized)


@pytest.mark.parametrize("variant", VARIANTS)
def test_code_statistics_sums_gradient_and_ema_update_of_a_parameter(variant):
    x, books, _ = _inputs("parameter")
    x.retain_grad()
    codes = torch.arange(x.shape[0]) % books.shape[1]
    with backend_env(variant) as backend:
        counts, sums = fastrq.code_statistics(x, codes, books.shape[1], backend=backend)
        assert not counts.requires_grad and sums.requires_grad
        weights = torch.randn_like(sums)
        (sums * weights).sum().backward()
        torch.testing.assert_close(x.grad, weights[codes])
        codebook = torch.nn.Parameter(books.detach()[0].clone())
        cluster_size, embed_sum = torch.ones(books.shape[1]), codebook.detach().clone()
        fastrq.ema_update_(codebook, cluster_size, embed_sum, x, codes, decay=0.5, backend=backend)
    assert codebook.grad is None and torch.isfinite(codebook).all()
