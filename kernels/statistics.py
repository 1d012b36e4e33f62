"""Per-code EMA statistics: ``counts[k] = #{n : c_n = k}``, ``sums[k] = Σ_{n : c_n = k} x_n``.

Deterministic by construction (bitwise identical reruns), with no float atomics:

1. the rows are ordered by code with a *stable* sort (ties keep their row order), and ``counts`` is the integer
   histogram of the codes; segment starts are its exclusive prefix sum;
2. :func:`segment_sum_kernel` runs one program per (code, column block): it walks its code's segment in chunks of
   ``BLOCK_R`` rows in order, adds each chunk into a ``[BLOCK_R, BLOCK_D]`` accumulator, and reduces it once at the
   end. The order of every addition is fixed by the sort, the tile sizes and the compiled reduction tree.

Cost: one sort of N codes plus one gathered read of x. Codes with many rows make their program long (load
imbalance); an opt-in atomic path (:func:`atomic_sums_kernel`, ``deterministic=False``) adds every row straight
into ``sums`` with ``tl.atomic_add``: no sort, but the float summation order depends on scheduling, so repeated runs
can differ in the last bits. It is off by default.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _alloc

__all__ = ["code_statistics", "segment_sum_kernel", "atomic_sums_kernel", "SEGMENT_BLOCK_R", "STAT_BLOCK_D", "ATOMIC_BLOCK_N"]

SEGMENT_BLOCK_R = 32  # rows per step of a segment walk
STAT_BLOCK_D = 128  # columns per program
ATOMIC_BLOCK_N = 16  # rows per program of the atomic path


@triton.jit
def segment_sum_kernel(
    x_ptr,  # [N, D]
    order_ptr,  # [N] int64 row indices sorted (stably) by code
    starts_ptr,  # [K] int64 first position of each code's segment in order
    counts_ptr,  # [K] int64 segment lengths
    sums_ptr,  # out [K, D]
    D,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    code = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    start = tl.load(starts_ptr + code)
    count = tl.load(counts_ptr + code)
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=sums_ptr.dtype.element_ty)
    for r0 in range(0, count, BLOCK_R):
        pos = r0 + tl.arange(0, BLOCK_R)
        pos_mask = pos < count
        rows = tl.load(order_ptr + start + pos, mask=pos_mask, other=0)
        acc += tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=pos_mask[:, None] & col_mask[None, :], other=0.0)
    tl.store(sums_ptr + code * D + cols, tl.sum(acc, axis=0), mask=col_mask)


@triton.jit
def atomic_sums_kernel(
    x_ptr,  # [N, D]
    codes_ptr,  # [N] int64
    sums_ptr,  # in/out [K, D], zero-initialised
    N,
    D,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_mask = rows < N
    mask = row_mask[:, None] & (cols < D)[None, :]
    code = tl.load(codes_ptr + rows, mask=row_mask, other=0)
    values = tl.load(x_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], mask=mask, other=0.0)
    tl.atomic_add(sums_ptr + code[:, None] * D + cols[None, :], values, mask=mask)


def code_statistics(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebook_size: int,
    *,
    deterministic: bool = True,
    block_r: int = SEGMENT_BLOCK_R,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N] in [0, K) (range-checked by the caller) -> (counts [K], sums [K, D]) in x's dtype.

    ``deterministic=False`` uses the atomic path (faster for hot codes, not bitwise reproducible)."""
    n, dim = x.shape
    device = x.device
    counts_int = torch.bincount(codes, minlength=codebook_size)  # integer histogram: exact in any order
    counts = counts_int.to(x.dtype)
    block_d = min(triton.next_power_of_2(max(dim, 1)), STAT_BLOCK_D)
    if not deterministic:
        sums = torch.zeros(codebook_size, dim, dtype=x.dtype, device=device)
        if n:
            grid = (triton.cdiv(n, ATOMIC_BLOCK_N), triton.cdiv(dim, block_d))
            atomic_sums_kernel[grid](x, codes, sums, n, dim, BLOCK_N=ATOMIC_BLOCK_N, BLOCK_D=block_d)
        return counts, sums
    sums = _alloc.empty(codebook_size, dim, dtype=x.dtype, device=device)
    order = torch.sort(codes, stable=True).indices
    starts = torch.cumsum(counts_int, 0) - counts_int
    grid = (codebook_size, triton.cdiv(dim, block_d))
    segment_sum_kernel[grid](x, order, starts, counts_int, sums, dim, BLOCK_R=block_r, BLOCK_D=block_d)
    return counts, sums
