"""Decode: ``out[n] = Σ_{l < L', c[n, l] ≠ −1} C_l[c[n, l]]``, a gather-sum over the levels, one launch.

Each program owns ``BLOCK_N`` rows × ``BLOCK_D`` columns and adds the chosen rows level by level in order (the
same summation order as the reference and the encoder's quantized sum, starting from 0), skipping −1 codes.
Codes are range-checked by the caller (:func:`fastrq.ops.residual_decode`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _alloc

__all__ = ["residual_decode", "decode_launch", "DECODE_BLOCK_N", "DECODE_BLOCK_D", "decode_kernel"]

# rows × columns per program: 16 × 128 keeps every thread at ≤ 16 accumulators (spill-free on sm_80 / sm_90)
DECODE_BLOCK_N = 16
DECODE_BLOCK_D = 128


@triton.jit
def decode_kernel(
    codes_ptr,  # [N, LC] int64, −1 = skipped
    codebooks_ptr,  # [L, K, D]
    out_ptr,  # out [N, D]
    N,
    K,
    D,
    LC,  # levels present in codes (L' ≤ L)
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    col_mask = cols < D
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for level in range(LC):
        code = tl.load(codes_ptr + rows64 * LC + level, mask=row_mask, other=-1)
        used = code >= 0
        base = (tl.zeros([], dtype=tl.int64) + level) * K
        chosen = tl.load(
            codebooks_ptr + (base + code[:, None]) * D + cols[None, :],
            mask=(used & row_mask)[:, None] & col_mask[None, :],
            other=0.0,
        )
        acc += chosen
    tl.store(out_ptr + rows64[:, None] * D + cols[None, :], acc, mask=row_mask[:, None] & col_mask[None, :])


def decode_launch(codes: torch.Tensor, codebooks: torch.Tensor, *, block_n: int = DECODE_BLOCK_N):
    """(kernel, args, kwargs, out) of the decode launch (works on meta tensors, for the static check)."""
    n, levels_used = codes.shape
    _, num_codes, dim = codebooks.shape
    out = _alloc.empty(n, dim, dtype=codebooks.dtype, device=codebooks.device)
    block_d = min(triton.next_power_of_2(dim), DECODE_BLOCK_D)
    args = (codes, codebooks, out, n, num_codes, dim, levels_used)
    return decode_kernel, args, dict(BLOCK_N=block_n, BLOCK_D=block_d), out


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor, *, block_n: int = DECODE_BLOCK_N) -> torch.Tensor:
    """codes int64 [N, L'] (L' ≤ L, −1 = skipped, range-checked), codebooks [L, K, D] -> [N, D] in their dtype."""
    kernel, args, kwargs, out = decode_launch(codes.contiguous(), codebooks.contiguous(), block_n=block_n)
    n, dim = out.shape
    if n:
        kernel[(triton.cdiv(n, kwargs["BLOCK_N"]), triton.cdiv(dim, kwargs["BLOCK_D"]))](*args, **kwargs)
    return out
