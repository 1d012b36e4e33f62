"""Backward of the commitment loss, recomputed from x, codes and codebooks: no second pass over K.

With residuals ``r_0 = x``, ``r_{l+1} = r_l − C_l[c_l]`` and the loss ``β Σ_l g_l · mean((r_l − sg(C_l[c_l]))²)``
(``g_l`` the upstream gradient of level l's term, usually all ones), the codes and codebooks are constants and
``∂r_l/∂x = I``, so

    ∂loss/∂x = (2β / numel) Σ_l g_l · (r_l − C_l[c_l]) = (2β / numel) Σ_l g_l · r_{l+1}

with numel = N·D (the mean's denominator). Each program recomputes its rows' residuals level by level (one gather
per level) and accumulates the weighted sum in registers; the straight-through part of the gradient (``grad_out``
passed to x unchanged) needs no kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _alloc

__all__ = ["commitment_backward", "commitment_backward_kernel", "COMMITMENT_BLOCK_N", "COMMITMENT_BLOCK_D"]

# residual and gradient tiles of 16 × 128: ≤ 32 live values per thread, spill-free on sm_80 / sm_90
COMMITMENT_BLOCK_N = 16
COMMITMENT_BLOCK_D = 128


@triton.jit
def commitment_backward_kernel(
    x_ptr,  # [N, D]
    codes_ptr,  # [N, L] int64 (all levels used)
    codebooks_ptr,  # [L, K, D]
    level_grad_ptr,  # [L] g_l, already multiplied by 2β/numel
    out_ptr,  # out [N, D]
    N,
    K,
    D,
    L,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    mask = row_mask[:, None] & (cols < D)[None, :]
    offsets = rows64[:, None] * D + cols[None, :]
    residual = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    grad = tl.zeros_like(residual)
    for level in range(L):
        code = tl.load(codes_ptr + rows64 * L + level, mask=row_mask, other=0)
        base = (tl.zeros([], dtype=tl.int64) + level) * K
        chosen = tl.load(codebooks_ptr + (base + code[:, None]) * D + cols[None, :], mask=mask, other=0.0)
        residual = residual - chosen
        grad += tl.load(level_grad_ptr + level) * residual
    tl.store(out_ptr + offsets, grad, mask=mask)


def commitment_backward(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebooks: torch.Tensor,
    level_grads: torch.Tensor,
    beta: float,
    *,
    numel: int | None = None,
    block_n: int = COMMITMENT_BLOCK_N,
) -> torch.Tensor:
    """x [N, D], codes int64 [N, L], codebooks [L, K, D], level_grads [L] (g_l) -> ∂loss/∂x [N, D] in x's dtype,
    ``(2β/numel) Σ_l g_l · r_{l+1}``; ``numel`` defaults to N·D."""
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    out = _alloc.empty(n, dim, dtype=x.dtype, device=x.device)
    if n == 0:
        return out
    numel = n * dim if numel is None else numel
    scaled = (level_grads.to(x.dtype) * (2.0 * beta / numel)).contiguous()
    block_d = min(triton.next_power_of_2(dim), COMMITMENT_BLOCK_D)
    grid = (triton.cdiv(n, block_n), triton.cdiv(dim, block_d))
    commitment_backward_kernel[grid](x, codes.contiguous(), codebooks.contiguous(), scaled, out,
                                     n, num_codes, dim, num_levels, BLOCK_N=block_n, BLOCK_D=block_d)
    return out
