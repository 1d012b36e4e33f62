"""Per-level, per-code statistics of the residuals, all levels in one launch, deterministic (no float atomics):

    counts[l, k] = #{n : c_{l,n} = k},        sums[l, k] = Σ_{n : c_{l,n} = k} r_{l,n}

with ``r_{0,n} = x_n`` and ``r_{l+1,n} = r_{l,n} − C_l[c_{l,n}]``; pairs with code −1 (skipped) take no part.

1. Every active (row, level) pair gets the key ``l·K + c`` (skipped pairs ``L·K``); one *stable* sort of the ``L·N``
   keys orders the pairs by (level, code) with rows in increasing order inside each segment; segment bounds come
   from ``searchsorted`` (integer, exact; unlike ``bincount`` it is deterministic on CUDA).
2. :func:`level_sums_kernel` runs one program per (level, code, column block): it walks its segment in order in chunks
   of ``BLOCK_R`` rows, recomputes each row's ``r_l`` from x and the row's codes of the levels before (the same
   subtractions in the same order as the search: bitwise the same residual), adds the chunk into a
   ``[BLOCK_R, BLOCK_D]`` accumulator and reduces once. Every addition's order is fixed by the sort and the tiles, so
   reruns are bitwise identical.

Cost: one sort of L·N keys, and per (row, level) pair l + 1 gathered rows (x and the earlier codes' rows, which sit
in L2). A code with many rows makes its program long (load imbalance).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _alloc

__all__ = ["level_statistics", "stats_launch", "code_statistics", "level_sums_kernel", "STAT_BLOCK_R", "STAT_BLOCK_D"]

STAT_BLOCK_R = 32  # rows per step of a segment walk
STAT_BLOCK_D = 128  # columns per program


@triton.jit
def level_sums_kernel(
    x_ptr,  # [N, D]
    codebooks_ptr,  # [L, KC, D]
    codes_ptr,  # [N, LT] int64, −1 = skipped
    order_ptr,  # [LT·N] int64 positions of the pairs (level-major: level·N + row), sorted by (level, code)
    bounds_ptr,  # [LT·K + 1] int64 segment bounds in order
    sums_ptr,  # out [LT, K, D]
    N,
    K,  # codes per level of the statistics (segments per level)
    KC,  # codes per level in codebooks_ptr
    LT,
    D: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    segment = tl.program_id(0).to(tl.int64)  # level·K + code
    level = segment // K
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    start = tl.load(bounds_ptr + segment)
    count = tl.load(bounds_ptr + segment + 1) - start
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=sums_ptr.dtype.element_ty)
    for r0 in range(0, count, BLOCK_R):
        pos = r0 + tl.arange(0, BLOCK_R)
        pos_mask = pos < count
        mask = pos_mask[:, None] & col_mask[None, :]
        rows = tl.load(order_ptr + start + pos, mask=pos_mask, other=0) - level * N
        residual = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=mask, other=0.0)
        for j in range(level):
            code = tl.load(codes_ptr + rows * LT + j, mask=pos_mask, other=0)
            residual = residual - tl.load(codebooks_ptr + (j * KC + code[:, None]) * D + cols[None, :], mask=mask,
                                          other=0.0)
        acc += residual
    tl.store(sums_ptr + segment * D + cols, tl.sum(acc, axis=0), mask=col_mask)


def _segments(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order [L·N], bounds [L·K + 1]) of the pairs sorted by (level, code), skipped pairs last."""
    n, levels = codes.shape
    offsets = (torch.arange(levels, device=codes.device) * num_codes)[:, None]
    keys = torch.empty(levels * n, dtype=codes.dtype, device=codes.device)  # level-major, the same ops for any L
    torch.add(codes.T, offsets, out=keys.view(levels, n))
    keys.view(levels, n).masked_fill_(codes.T < 0, levels * num_codes)  # a Python scalar: no host-to-device copy
    sorted_keys, order = torch.sort(keys, stable=True)
    bounds = torch.searchsorted(sorted_keys, torch.arange(levels * num_codes + 1, device=codes.device))
    return order, bounds


def stats_launch(x: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, num_codes: int,
                 *, block_r: int = STAT_BLOCK_R):
    """(kernel, args, kwargs, (counts, sums)) of the statistics launch: counts are ready, sums are the kernel's
    to fill (works on meta tensors, for the static check)."""
    n, dim = x.shape
    levels = codes.shape[1]
    order, bounds = _segments(codes, num_codes)
    counts = (bounds[1:] - bounds[:-1]).view(levels, num_codes).to(x.dtype)
    sums = _alloc.empty(levels, num_codes, dim, dtype=x.dtype, device=x.device)
    block_d = min(triton.next_power_of_2(max(dim, 1)), STAT_BLOCK_D)
    args = (x, codebooks, codes, order, bounds, sums, n, num_codes, codebooks.shape[1], levels)
    kwargs = dict(D=dim, BLOCK_R=block_r, BLOCK_D=block_d)
    return level_sums_kernel, args, kwargs, (counts, sums)


def level_statistics(x: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, num_codes: int,
                     *, block_r: int = STAT_BLOCK_R) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N, L] (−1 = skipped; active levels a prefix per row), codebooks [L', KC, D] (L' ≥ L)
    -> (counts [L, K] in x's dtype, sums [L, K, D] of the residuals r_l), bitwise deterministic, one launch."""
    kernel, args, kwargs, (counts, sums) = stats_launch(x, codes, codebooks, num_codes, block_r=block_r)
    levels, dim = codes.shape[1], x.shape[1]
    if levels * num_codes:
        kernel[(levels * num_codes, triton.cdiv(dim, kwargs["BLOCK_D"]))](*args, **kwargs)
    return counts, sums


def code_statistics(x: torch.Tensor, codes: torch.Tensor, codebook_size: int,
                    *, block_r: int = STAT_BLOCK_R) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N] in [0, K) (range-checked by the caller) -> (counts [K], sums [K, D]) in x's dtype:
    the one-level case of :func:`level_statistics` (no residual walk: level 0 sums x itself)."""
    counts, sums = level_statistics(x, codes[:, None].contiguous(), x.new_zeros(1, 1, x.shape[1]), codebook_size,
                                    block_r=block_r)
    return counts[0], sums[0]
