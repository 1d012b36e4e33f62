"""The naive reference implementation: the test oracle and the benchmark's "naive version".

Written to be obviously right, not fast: the search materialises the full N×K distance matrix with the exact
direct difference (``torch.cdist`` without the matrix-multiply shortcut), the EMA statistics use a dense N×K
one-hot matrix. Every function takes the validated form the dispatcher hands to a backend: rows ``[N, D]``,
contiguous, in the compute dtype (float32 or float64), and returns results in that dtype.
"""

from __future__ import annotations

import torch

__all__ = ["nearest_code", "residual_quantize", "residual_decode", "code_statistics", "quantize_for_training"]


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N]).

    codes[n] = argmin_k Σ_d (x[n, d] − codebook[k, d])², the smallest k among exact ties (``argmin`` returns the
    first minimum); sqdist[n] = Σ_d (x[n, d] − codebook[codes[n], d])².
    """
    n = x.shape[0]
    if n == 0:
        return x.new_empty(0, dtype=torch.long), x.new_empty(0)
    distance = torch.cdist(x, codebook, compute_mode="donot_use_mm_for_euclid_dist")  # [N, K], exact
    codes = distance.argmin(dim=1)
    sqdist = (x - codebook[codes]).square().sum(dim=1)
    return codes, sqdist


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy residual quantization. x [N, D], codebooks [L, K, D] -> (quantized [N, D], codes int64 [N, L]).

    r_0 = x;  c_l = nearest_code(r_l, C_l);  r_{l+1} = r_l − C_l[c_l];  quantized = Σ_l C_l[c_l].
    """
    residual = x
    quantized = torch.zeros_like(x)
    codes = []
    for codebook in codebooks:
        level_codes, _ = nearest_code(residual, codebook)
        chosen = codebook[level_codes]
        residual = residual - chosen
        quantized = quantized + chosen
        codes.append(level_codes)
    return quantized, torch.stack(codes, dim=1) if codes else x.new_empty(x.shape[0], 0, dtype=torch.long)


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """codes int64 [N, L'] (L' ≤ L, −1 = level skipped), codebooks [L, K, D] -> quantized [N, D] = Σ_l C_l[c_l]."""
    quantized = codebooks.new_zeros(codes.shape[0], codebooks.shape[2])
    for level in range(codes.shape[1]):
        level_codes = codes[:, level]
        used = level_codes >= 0
        chosen = codebooks[level][level_codes.clamp(min=0)]
        quantized = quantized + torch.where(used[:, None], chosen, torch.zeros_like(chosen))
    return quantized


def code_statistics(x: torch.Tensor, codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N] in [0, K) -> (counts [K], sums [K, D]) in x's dtype, through a dense one-hot."""
    one_hot = torch.nn.functional.one_hot(codes, codebook_size).to(x.dtype)  # [N, K]
    return one_hot.sum(dim=0), one_hot.T @ x


def quantize_for_training(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None = None,
):
    """The training pass (contract: :mod:`fastrq.ops.training`), written out: level by level the nearest of the
    level's first K_l rows by :func:`nearest_code`, then the walk with one-hot statistics."""
    from .training import walk_given_codes

    codes = torch.full((x.shape[0], codebooks.shape[0]), -1, dtype=torch.long, device=x.device)
    residual = x
    for level in range(num_active):
        table = codebooks[level, : level_sizes[level]]
        codes[:, level], _ = nearest_code(residual, table)
        residual = residual - table[codes[:, level]]
    return walk_given_codes(x, codebooks, codes, num_active, row_levels, "reference")
