"""The ``"triton"`` backend of :mod:`fastrq.ops.backends`: the contract functions over validated input.

Input: rows ``[N, D]`` contiguous, compute dtype float32 or float64, one device (CUDA, or the CPU under
``TRITON_INTERPRET=1``); results in that dtype. float64 is searched with exact float64 products. float32 uses the
precision mode of :mod:`fastrq.kernels.precision` (``FASTRQ_TRITON_PRECISION``).

Every entry point runs through the first-use self-check of :mod:`fastrq.kernels.selfcheck`: the first call of each
(device, kernel configuration) is compared with the torch backend on a small problem, and a configuration that fails
falls back to the torch backend (with one warning).
"""

from __future__ import annotations

import torch

from fastrq.ops.backends import triton_unavailable_reason

from . import decode, search, selfcheck, statistics

__all__ = ["nearest_code", "residual_quantize", "residual_decode", "code_statistics", "quantize_for_training",
           "unavailable_reason"]


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the kernels can run on tensors of ``device``, else why not."""
    return triton_unavailable_reason(device)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N], direct difference of the chosen row)."""
    return selfcheck.guarded("nearest_code", x, codebook.shape[0], search.nearest_code, x, codebook)


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebooks [L, K, D] -> (quantized [N, D], codes int64 [N, L]); all levels in one launch."""
    return selfcheck.guarded("residual_quantize", x, codebooks.shape[1], search.residual_quantize, x, codebooks)


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """codes int64 [N, L'] (−1 = skipped), codebooks [L, K, D] -> [N, D]."""
    return decode.residual_decode(codes, codebooks)


def code_statistics(x: torch.Tensor, codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N] -> (counts [K], sums [K, D]); deterministic (bitwise identical reruns)."""
    return statistics.code_statistics(x, codes, codebook_size)


def quantize_for_training(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused training step: greedy search, walk, level errors and per-level statistics; two Triton launches for
    any L (search + walk + errors, then the statistics), no host sync, bitwise deterministic.

    Args:
        x ``[N, D]`` float32 / float64, contiguous; codebooks ``[L, K, D]`` same dtype, contiguous, level l using
        its first ``level_sizes[l]`` rows (the rest is never chosen); ``num_active`` in [1, L]: levels ≥ it are
        skipped; ``row_levels`` None or int ``[N]``: levels ≥ row_levels[n] are skipped for row n too (0 = the row
        is masked out).

    Returns, with r_0 = x, r_{l+1} = r_l − C_l[c_l] over the row's active levels:
        quantized ``[N, D]`` = Σ C_l[c_l] (0 for a masked row); codes int64 ``[N, L]`` (−1 where skipped);
        level_sqerr ``[L]`` = Σ over rows active at l of ‖r_{l+1}‖²; commit_dir ``[N, D]`` = Σ r_{l+1};
        counts ``[L, K]`` (x's dtype) and sums ``[L, K, D]`` of r_l per level and code over the active rows.
    """
    return selfcheck.guarded("quantize_for_training", x, codebooks.shape[1], _quantize_for_training, x, codebooks,
                             level_sizes, num_active, row_levels)


def _quantize_for_training(x, codebooks, level_sizes, num_active, row_levels, *, config=None, precision=None):
    out = search.search_walk(x, codebooks, level_sizes, num_active, row_levels, precision=precision, config=config)
    codes = out["codes"]
    level_sqerr = search.level_errors(out["level_err"])  # fixed-order reduction of the per-program partials
    counts, sums = statistics.level_statistics(x, codes, codebooks, codebooks.shape[1])
    return out["quantized"], codes, level_sqerr, out["commit_dir"], counts, sums
