"""The ``"triton"`` backend of :mod:`fastrq.ops.backends`: the contract functions over validated input.

Input: rows ``[N, D]`` contiguous, compute dtype float32 or float64, one device (CUDA, or the CPU under
``TRITON_INTERPRET=1``); results in that dtype. float64 is searched with exact float64 products (``tl.dot`` with
``input_precision="ieee"``, DMMA / FMA on GPUs; slow on GPUs without fp64 throughput but correct). float32 uses the
precision mode of :mod:`fastrq.kernels.precision` (``FASTRQ_TRITON_PRECISION``).
"""

from __future__ import annotations

import torch

from fastrq.ops.backends import triton_unavailable_reason

from . import decode, search, statistics

__all__ = ["nearest_code", "residual_quantize", "residual_decode", "code_statistics", "unavailable_reason"]


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the kernels can run on tensors of ``device``, else why not."""
    return triton_unavailable_reason(device)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N], direct difference of the chosen row)."""
    return search.nearest_code(x, codebook)


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebooks [L, K, D] -> (quantized [N, D], codes int64 [N, L]); all levels in one launch."""
    return search.residual_quantize(x, codebooks)


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """codes int64 [N, L'] (−1 = skipped), codebooks [L, K, D] -> [N, D]."""
    return decode.residual_decode(codes, codebooks)


def code_statistics(x: torch.Tensor, codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N] -> (counts [K], sums [K, D]); deterministic (bitwise identical reruns)."""
    return statistics.code_statistics(x, codes, codebook_size)
