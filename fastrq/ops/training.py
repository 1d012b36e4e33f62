"""The quantizer's training forward pass: greedy search, residual walk, per-level errors, the commitment gradient
direction and the EMA statistics, in one pass per backend.

With ``r_0 = x``, ``e_l = C_l[c_l]`` and ``r_{l+1} = r_l − e_l`` over the levels a row takes part in (levels below
``num_active`` and, per row, below ``row_levels[n]``; ``row_levels[n] = 0`` leaves the row out entirely):

    quantized  [N, D]    = Σ_l e_l                               (0 for a row that takes no level)
    codes      [N, L]    = c_l, −1 where the (row, level) pair is skipped
    level_sqerr [L]      = Σ_n ‖r_{l+1, n}‖²                      (the commitment loss of level l is it / (N·D))
    commit_dir [N, D]    = Σ_l r_{l+1}                            (∂ commitment / ∂x = 2β / (N·D) · commit_dir)
    counts     [L, K]    = #{n : c_l(n) = k},  sums [L, K, D] = Σ_{n : c_l(n) = k} r_{l, n}

Every backend implements :func:`quantize_for_training` with exactly this contract (``fastrq.ops.reference`` is the
oracle, ``fastrq.ops.torch_backend`` one walk over row blocks, ``fastrq.kernels.backend`` fused kernels);
:func:`walk_given_codes` computes the same outputs for codes found elsewhere (beam search).
"""

from __future__ import annotations

import torch

from .backends import resolve_backend

__all__ = ["quantize_for_training", "walk_given_codes"]


def quantize_for_training(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None,
    backend: str,
):
    """Rows x ``[N, D]`` and codebooks ``[L, K, D]`` in the compute dtype (contiguous, one device; level l uses its
    first ``level_sizes[l]`` rows) → ``(quantized, codes, level_sqerr, commit_dir, counts, sums)`` as in the module
    docstring. Deterministic for a given backend and thread count."""
    x, codebooks = x.detach(), codebooks.detach()  # the caller's autograd Function owns the gradients
    impl = resolve_backend(backend, x.device)
    run = getattr(impl, "quantize_for_training", None)
    if run is None:  # a backend without its own fused pass: its greedy search, then the walk here
        from .search import greedy_codes

        codes = torch.full((x.shape[0], codebooks.shape[0]), -1, dtype=torch.long, device=x.device)
        codes[:, :num_active] = greedy_codes(x, codebooks[:num_active], level_sizes, backend)
        return walk_given_codes(x, codebooks, codes, num_active, row_levels, backend)
    return run(x, codebooks, level_sizes, num_active, row_levels)


def walk_given_codes(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    codes: torch.Tensor,
    num_active: int,
    row_levels: torch.Tensor | None,
    backend: str,
):
    """The outputs of :func:`quantize_for_training` for given codes ``[N, L]`` (valid in the first ``num_active``
    levels; the rest, and the pairs ``row_levels`` skips, are ignored and come back as −1)."""
    x, codebooks = x.detach(), codebooks.detach()
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    impl = resolve_backend(backend, x.device)
    quantized = torch.zeros_like(x)
    commit_dir = torch.zeros_like(x)
    sums = x.new_zeros(num_levels, num_codes, dim)
    counts = x.new_zeros(num_levels, num_codes)
    out_codes = torch.full_like(codes, -1)
    sqerr = []
    residual = x.clone(memory_format=torch.contiguous_format)
    for level in range(num_active):
        level_codes = codes[:, level].clamp(min=0).contiguous()
        if row_levels is None:
            active = None
            out_codes[:, level] = codes[:, level]
        else:
            active = (row_levels > level)[:, None]
            out_codes[:, level] = torch.where(active[:, 0], codes[:, level], -1)
        contribution = residual if active is None else residual * active
        level_counts, sums[level] = impl.code_statistics(contribution, level_codes, num_codes)
        if active is not None:  # skipped rows add a zero row to the sums and a zero weight to the counts
            level_counts = torch.bincount(level_codes, weights=active[:, 0].to(x.dtype), minlength=num_codes)
        counts[level] = level_counts
        chosen = codebooks[level].index_select(0, level_codes)
        if active is not None:
            chosen = chosen * active
        residual.sub_(chosen)
        quantized.add_(chosen)
        left = residual if active is None else residual * active
        commit_dir.add_(left)
        flat = left.reshape(-1)
        sqerr.append(torch.dot(flat, flat))
    level_sqerr = x.new_zeros(num_levels)
    if sqerr:
        level_sqerr[:num_active] = torch.stack(sqerr)
    return quantized, out_codes, level_sqerr, commit_dir, counts, sums
