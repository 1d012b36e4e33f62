"""Triton kernels of the nearest-code search and of greedy residual quantization (all L levels in one launch).

Notation (per level l): codebook ``C_l [K, D]``, centring shift ``μ_l [D]`` (about the codebook mean, see
:func:`fastrq.ops.codebook_prep.centring_shift`), centred and (in approximate modes) rounded rows ``ê_k = round(C_l[k] − μ_l)``,
half norms ``h_k = ½‖ê_k‖²`` computed once per call on the host from the same ``ê``. For a residual row r the search
minimises

    s_k = h_k − (r − μ_l)·ê_k          (= ½‖r − C_l[k]‖² − ½‖r − μ_l‖² in exact arithmetic)

over k. ‖r − μ‖² is argmin-irrelevant and never added; nothing is clamped (both would create false ties).
NaN policy: a NaN score counts as +inf, so a row holding NaN or infinity gets code 0 (or the nearest code among
its finite scores) and a non-finite squared distance; the other rows are unaffected.

Each program owns ``BLOCK_N`` rows and streams the codebook in tiles of ``BLOCK_K`` codes, in increasing order:

- per tile, ``tl.min(..., return_indices=True)`` gives the row-wise minimum and its *first* position (Triton's
  argmin breaks ties to the left);
- tiles are merged into the running (min, argmin) with a strict ``<``, so an equal score in a later tile never
  wins: among exact ties the smallest index wins. No atomics anywhere; the N×K score matrix never leaves the chip.
- duplicate codebook rows (whose computed scores could differ by rounding) are settled by ``canon_ptr``: the
  host's table of "first row equal to row k"; the chosen code is mapped through it.

The residual is updated with the *uncentred* chosen row, ``r ← r − C_l[c_l]`` (exact gather, fp32 or fp64), and the
quantized sum accumulates ``q ← q + C_l[c_l]`` in the same order as the reference.

Outputs (each optional through a constexpr flag): codes int64 ``[N, L]``, quantized ``[N, D]``, the final squared
residual per row ``Σ_d r_L²`` (for L = 1 that is the direct-difference distance of :func:`nearest_code`), and per
program per level ``Σ_{rows} ‖r_{l+1}‖²`` (``[num_programs, L]``, summed afterwards in a fixed order: deterministic).

Two kernels:

- :func:`rq_registers_kernel` (``D ≤ REGISTER_MAX_D``): the whole ``[BLOCK_N, D_PAD]`` residual and sum stay in
  registers across all levels. Scores by ``tl.dot`` (``USE_DOT``), or for ``D ≤ 16`` by a broadcast multiply-add on
  CUDA cores (tensor cores would be ≥ 75 % padding at D = 4).
- :func:`rq_chunked_kernel` (large D): the residual lives in a scratch buffer owned by the program (L1/L2 resident)
  and every dot loops over ``BLOCK_D`` chunks of D; the sum is accumulated in the output in place.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile_products(rc, e, PRECISION: tl.constexpr, USE_DOT: tl.constexpr):
    """rc [BLOCK_N, BD] · e [BLOCK_K, BD]ᵀ -> [BLOCK_N, BLOCK_K] (accumulated in fp32, or fp64 for fp64 data)."""
    if USE_DOT:
        if PRECISION == "bf16":
            return tl.dot(rc.to(tl.bfloat16), tl.trans(e.to(tl.bfloat16)), out_dtype=tl.float32)
        elif PRECISION == "bf16_emulated":
            # the interpreter (triton 3.8) multiplies bf16 tensors' raw bits: round to bf16, multiply in fp32
            return tl.dot(rc.to(tl.bfloat16).to(tl.float32), tl.trans(e), input_precision="ieee")
        else:
            return tl.dot(rc, tl.trans(e), input_precision=PRECISION)
    else:
        # small D: one multiply-add per (row, code, d) on CUDA cores, reduced inside the thread
        return tl.sum(rc[:, None, :] * e[None, :, :], axis=2)


@triton.jit
def _merge_tile(best, best_idx, scores, k0):
    """Merge a [BLOCK_N, BLOCK_K] score tile starting at code k0 into the running (min, argmin), strict ``<``."""
    tile_min, tile_arg = tl.min(scores, axis=1, return_indices=True, return_indices_tie_break_left=True)
    better = tile_min < best
    best = tl.where(better, tile_min, best)
    best_idx = tl.where(better, tile_arg + k0, best_idx)
    return best, best_idx


@triton.jit
def rq_registers_kernel(
    x_ptr,  # [N, D] rows, contiguous
    codebooks_ptr,  # [L, K, D] the original codebooks (gathered for the residual update)
    centred_ptr,  # [L, K, D] ê = round(C − μ): the operand of the dot
    half_norms_ptr,  # [L, K] ½‖ê‖²
    shifts_ptr,  # [L, D] μ_l
    canon_ptr,  # [L, K] int32 first row equal to row k (read only when HAS_CANON)
    codes_ptr,  # out [N, L] int64
    quantized_ptr,  # out [N, D] Σ_l C_l[c_l] (written when WRITE_QUANTIZED)
    sqdist_ptr,  # out [N] ‖r_L‖² (written when WRITE_SQDIST)
    level_err_ptr,  # out [num_programs, L] Σ_rows ‖r_{l+1}‖² (written when WRITE_LEVEL_ERR)
    N,
    K,
    D,
    L,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    D_PAD: tl.constexpr,  # next power of two ≥ D (≥ 16 when USE_DOT)
    PRECISION: tl.constexpr,
    USE_DOT: tl.constexpr,
    HAS_CANON: tl.constexpr,
    WRITE_QUANTIZED: tl.constexpr,
    WRITE_SQDIST: tl.constexpr,
    WRITE_LEVEL_ERR: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, D_PAD)
    col_mask = cols < D
    tile_mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows64[:, None] * D + cols[None, :]

    residual = tl.load(x_ptr + offsets, mask=tile_mask, other=0.0)
    for level in range(L):
        level64 = tl.zeros([], dtype=tl.int64) + level  # 64-bit offsets: L·K·D may exceed 2³¹
        shift = tl.load(shifts_ptr + level64 * D + cols, mask=col_mask, other=0.0)
        centred = tl.where(col_mask[None, :], residual - shift[None, :], 0.0)
        best = tl.full([BLOCK_N], float("inf"), dtype=residual.dtype)
        best_idx = tl.zeros([BLOCK_N], dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            codes_k = k0 + tl.arange(0, BLOCK_K)
            code_mask = codes_k < K
            e = tl.load(
                centred_ptr + (level64 * K + codes_k[:, None]) * D + cols[None, :],
                mask=code_mask[:, None] & col_mask[None, :],
                other=0.0,
            )
            half_norm = tl.load(half_norms_ptr + level64 * K + codes_k, mask=code_mask, other=0.0)
            scores = half_norm[None, :] - _tile_products(centred, e, PRECISION, USE_DOT).to(residual.dtype)
            # padding codes and NaN scores count as +inf (NaN policy: a row whose scores are all NaN gets code 0)
            scores = tl.where(code_mask[None, :] & (scores == scores), scores, float("inf"))
            best, best_idx = _merge_tile(best, best_idx, scores, k0)
        if HAS_CANON:
            best_idx = tl.load(canon_ptr + level64 * K + best_idx, mask=row_mask, other=0)
        tl.store(codes_ptr + rows64 * L + level, best_idx.to(tl.int64), mask=row_mask)
        chosen = tl.load(
            codebooks_ptr + (level64 * K + best_idx[:, None]) * D + cols[None, :], mask=tile_mask, other=0.0
        )
        residual = residual - chosen
        if WRITE_LEVEL_ERR:
            row_err = tl.sum(residual * residual, axis=1)
            tl.store(level_err_ptr + pid * L + level, tl.sum(tl.where(row_mask, row_err, 0.0), axis=0))
    if WRITE_SQDIST:
        tl.store(sqdist_ptr + rows64, tl.sum(residual * residual, axis=1), mask=row_mask)
    if WRITE_QUANTIZED:
        # Σ_l C_l[c_l] in level order, from the codes just written (L2 hits): keeping the sum in registers during
        # the search would double the live tile and spill.
        tl.debug_barrier()  # the codes were stored by other threads of this program
        quantized = tl.zeros_like(residual)
        for level in range(L):
            level64 = tl.zeros([], dtype=tl.int64) + level
            code = tl.load(codes_ptr + rows64 * L + level, mask=row_mask, other=0)
            quantized += tl.load(codebooks_ptr + (level64 * K + code[:, None]) * D + cols[None, :], mask=tile_mask, other=0.0)
        tl.store(quantized_ptr + offsets, quantized, mask=tile_mask)


@triton.jit
def rq_chunked_kernel(
    x_ptr,  # [N, D]
    codebooks_ptr,  # [L, K, D]
    centred_ptr,  # [L, K, D]
    half_norms_ptr,  # [L, K]
    shifts_ptr,  # [L, D]
    canon_ptr,  # [L, K] int32
    residual_ptr,  # scratch [N, D]: this program's rows of the residual (ends as r_L)
    codes_ptr,  # out [N, L] int64
    quantized_ptr,  # out [N, D] (always written: it accumulates in place)
    sqdist_ptr,  # out [N]
    level_err_ptr,  # out [num_programs, L]
    N,
    K,
    D,
    L,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    HAS_CANON: tl.constexpr,
    WRITE_SQDIST: tl.constexpr,
    WRITE_LEVEL_ERR: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    chunk = tl.arange(0, BLOCK_D)

    # residual ← x, quantized ← 0 (this program's rows only)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + chunk
        mask = row_mask[:, None] & (cols < D)[None, :]
        offsets = rows64[:, None] * D + cols[None, :]
        xs = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        tl.store(residual_ptr + offsets, xs, mask=mask)
        tl.store(quantized_ptr + offsets, tl.zeros_like(xs), mask=mask)
    tl.debug_barrier()  # other threads of this program read what was just stored

    for level in range(L):
        level64 = tl.zeros([], dtype=tl.int64) + level  # 64-bit offsets: L·K·D may exceed 2³¹
        best = tl.full([BLOCK_N], float("inf"), dtype=residual_ptr.dtype.element_ty)
        best_idx = tl.zeros([BLOCK_N], dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            codes_k = k0 + tl.arange(0, BLOCK_K)
            code_mask = codes_k < K
            acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=residual_ptr.dtype.element_ty)
            for d0 in range(0, D, BLOCK_D):
                cols = d0 + chunk
                col_mask = cols < D
                r = tl.load(
                    residual_ptr + rows64[:, None] * D + cols[None, :],
                    mask=row_mask[:, None] & col_mask[None, :],
                    other=0.0,
                )
                shift = tl.load(shifts_ptr + level64 * D + cols, mask=col_mask, other=0.0)
                centred = tl.where(col_mask[None, :], r - shift[None, :], 0.0)
                e = tl.load(
                    centred_ptr + (level64 * K + codes_k[:, None]) * D + cols[None, :],
                    mask=code_mask[:, None] & col_mask[None, :],
                    other=0.0,
                )
                acc += _tile_products(centred, e, PRECISION, True).to(acc.dtype)
            half_norm = tl.load(half_norms_ptr + level64 * K + codes_k, mask=code_mask, other=0.0)
            scores = half_norm[None, :] - acc
            scores = tl.where(code_mask[None, :] & (scores == scores), scores, float("inf"))
            best, best_idx = _merge_tile(best, best_idx, scores, k0)
        if HAS_CANON:
            best_idx = tl.load(canon_ptr + level64 * K + best_idx, mask=row_mask, other=0)
        tl.store(codes_ptr + rows64 * L + level, best_idx.to(tl.int64), mask=row_mask)
        row_err = tl.zeros([BLOCK_N], dtype=residual_ptr.dtype.element_ty)
        tl.debug_barrier()  # every thread has read the residual before it is overwritten
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + chunk
            mask = row_mask[:, None] & (cols < D)[None, :]
            offsets = rows64[:, None] * D + cols[None, :]
            chosen = tl.load(codebooks_ptr + (level64 * K + best_idx[:, None]) * D + cols[None, :], mask=mask, other=0.0)
            r = tl.load(residual_ptr + offsets, mask=mask, other=0.0) - chosen
            tl.store(residual_ptr + offsets, r, mask=mask)
            q = tl.load(quantized_ptr + offsets, mask=mask, other=0.0) + chosen
            tl.store(quantized_ptr + offsets, q, mask=mask)
            row_err += tl.sum(r * r, axis=1)
        tl.debug_barrier()
        if WRITE_LEVEL_ERR:
            tl.store(level_err_ptr + pid * L + level, tl.sum(tl.where(row_mask, row_err, 0.0), axis=0))
        if WRITE_SQDIST:
            if level == L - 1:
                tl.store(sqdist_ptr + rows64, row_err, mask=row_mask)
