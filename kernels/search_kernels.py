"""Triton kernel of the greedy residual-quantization search: search, residual walk and level errors of all L levels
in one launch.

Notation (per level l): codebook ``C_l [K, D]`` (the first ``K_l`` rows valid), centring shift ``μ_l [D]``, centred
rows ``ê_k = C_l[k] − μ_l`` (rounded to the mode's operand format where the mode is approximate), half norms
``h_k = ½‖ê_k‖²`` (host, once per call; ``+inf`` for the padding rows k ≥ K_l, so they are never chosen). For a residual
row r the search maximises

    a_k = (r − μ_l)·ê_k − h_k          (= −½‖r − C_l[k]‖² + ½‖r − μ_l‖² in exact arithmetic)

i.e. minimises the distance. The accumulator of every product starts at ``−h_k`` (the host stores ``nh = −h``), so the
tensor cores (or the FMAs) produce ``a_k`` directly and the epilogue is a compare and two selects per (row, code).

*Running elementwise tile.* A program owns ``BLOCK_N`` rows and streams the codebook in tiles of ``BLOCK_K`` codes
in increasing order. It keeps a ``[BLOCK_N, BLOCK_K]`` tile of the best ``a`` seen in each column and the tile start
``k0`` where it was seen; a later tile replaces an entry only when strictly larger, so each column keeps its first
maximum. After the last tile, one max and one min reduction per row give the smallest code among the row's maxima:
among exact ties the smallest index wins. Padding codes (h = +inf) give a = −inf and never win; a NaN score compares
false and never wins, so a row whose scores are all NaN (a NaN or inf row) keeps code 0. Duplicate rows are mapped to
their first occurrence through the host's ``canon`` table.

*Walk.* The residual is updated with the *uncentred* chosen row, ``r ← r − C_l[c_l]``. After the level loop a second
pass re-walks the levels from x with the stored codes, in the same order, for the outputs: ``quantized = Σ_l C_l[c_l]``
(the decode order), ``commit_dir = Σ_l r_{l+1}``, per-program level errors ``Σ_rows ‖r_{l+1}‖²`` ``[programs, L]``
(summed afterwards in a fixed order: deterministic, no float atomics) and ``‖r_L‖²`` per row. Levels ``≥ NUM_ACTIVE``
and levels ``≥ row_levels[n]`` are skipped (code −1, no contribution).

*Modes* (``MODE``, a constexpr):

- ``"fma"`` (D ≤ 4 in ``ieee`` and float64): broadcast multiply-add on CUDA cores, one FMA per (row, code, d). D is
  a constexpr, the codebook operand is stored transposed ``[L, D, K]`` so one code column ``e_d`` is one contiguous
  load, and each thread sums over D in its own registers (no shuffles). Every other case runs ``tl.dot`` (K
  dimension padded to 8 for float32, 16 for bf16, 4 for float64: Triton's smallest dot shapes).
- ``"ieee"`` / ``"tf32"``: one ``tl.dot`` per tile (fp32 FMA or one TF32 product; fp64: DMMA).
- ``"tf32x3"``: three TF32 products ``c_s·e_b + c_b·e_s + c_b·e_b``. The codebook comes split (big, small) from the
  host; the residual is split once per level (bit rounding to TF32), not per tile.
- ``"bf16"``: the codebook operand is stored as bf16, the residual converted once per level; fp32 accumulation.
- ``"certified"``: a bf16 pass keeping, per column, the best and the second best; then per row the ``CANDIDATES``
  best column maxima are re-scored in exact fp32 (``ŝ = h − Σ c_d ê_d`` over the unrounded float32 rows), and the row
  is certified when the lower bound of every other code's first-pass score beats the best re-score by
  ``certified_margin`` (:mod:`fastrq.kernels.precision`). If any row of the program is not certified, the program
  searches the level again in ``FALLBACK`` mode (tf32x3 / ieee) and takes that answer for those rows.
- ``"*_emulated"``: the interpreter's stand-in for bf16 (triton 3.8's interpreter multiplies bf16 tensors' raw bits):
  the bf16 operands are widened to fp32 and multiplied exactly, which is what the tensor cores compute.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _round_tf32(x):
    """float32 -> nearest TF32 value (ties away from zero), by bits: add half a TF32 ulp, clear the 13 low bits."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + 0x1000) & -8192).to(tl.float32, bitcast=True)


@triton.jit
def _column(tile, cols, d: tl.constexpr):
    """Column d of a [R, C] tile as a [R] vector (a masked in-thread sum when the row is in one thread)."""
    return tl.sum(tl.where(cols[None, :] == d, tile, 0.0), axis=1)


@triton.jit
def _fma_scores(c, cols, opt_ptr, nh, codes_k, level64, KP, D: tl.constexpr):
    """a[n, k] = nh[k] + Σ_d c[n, d]·e[k, d], one FMA per (n, k, d); e stored transposed [L, D, KP]."""
    acc = tl.broadcast_to(nh, (c.shape[0], nh.shape[1]))
    for d in tl.static_range(D):
        e_d = tl.load(opt_ptr + (level64 * D + d) * KP + codes_k)
        acc += _column(c, cols, d)[:, None] * e_d
    return acc


@triton.jit
def _dot_acc(ca, cb, op_ptr, op2_ptr, b_offsets, acc, MODE: tl.constexpr):
    """acc + c·eᵀ for one code tile (or one D chunk of it) through tl.dot; ``ca``/``cb`` are the residual operand(s)
    of the mode (tf32x3: big, small; bf16: the bf16 residual; else the residual)."""
    if MODE == "tf32x3":
        e_big = tl.load(op_ptr + b_offsets)
        e_small = tl.load(op2_ptr + b_offsets)
        acc = tl.dot(cb, tl.trans(e_big), acc, input_precision="tf32")
        acc = tl.dot(ca, tl.trans(e_small), acc, input_precision="tf32")
        acc = tl.dot(ca, tl.trans(e_big), acc, input_precision="tf32")
    elif MODE == "bf16":
        acc = tl.dot(ca, tl.trans(tl.load(op_ptr + b_offsets)), acc, out_dtype=tl.float32)
    elif MODE == "bf16_emulated":
        acc = tl.dot(ca, tl.trans(tl.load(op_ptr + b_offsets).to(tl.float32)), acc, input_precision="ieee")
    elif MODE == "tf32":
        acc = tl.dot(ca, tl.trans(tl.load(op_ptr + b_offsets)), acc, input_precision="tf32")
    else:  # ieee (float32 FMA inside tl.dot; float64: DMMA / FMA)
        acc = tl.dot(ca, tl.trans(tl.load(op_ptr + b_offsets)), acc, input_precision="ieee")
    return acc


@triton.jit
def _dot_scores(ca, cb, op_ptr, op2_ptr, nh, b_offsets, MODE: tl.constexpr, BLOCK_N: tl.constexpr):
    """a = nh + c·eᵀ for one code tile (the accumulator starts at −h)."""
    acc = tl.broadcast_to(nh[None, :], (BLOCK_N, nh.shape[0]))
    return _dot_acc(ca, cb, op_ptr, op2_ptr, b_offsets, acc, MODE)


@triton.jit
def _operands(c, MODE: tl.constexpr):
    """The residual operand(s) of the mode, made once per level: tf32x3 (big, small) by bit rounding; bf16 the bf16
    residual (emulated: rounded, kept in fp32); else c itself."""
    if MODE == "tf32x3":
        ca = _round_tf32(c)
        cb = _round_tf32(c - ca)
    elif MODE == "bf16":
        ca = c.to(tl.bfloat16)
        cb = ca
    elif MODE == "bf16_emulated":
        ca = c.to(tl.bfloat16).to(tl.float32)
        cb = ca
    else:
        ca = c
        cb = c
    return ca, cb


@triton.jit
def _merge(best, best_k0, acc, k0, ASM: tl.constexpr):
    """Elementwise running maximum with the tile start of the first maximum (strict >: earlier tiles win ties;
    NaN compares false and never wins; ``max`` returns the non-NaN operand).

    ``ASM`` (on GPUs): one inline-asm block per element, setp + selp + max. Written in plain Triton, LLVM's SLP
    vectoriser groups the compares into ``<N x i1>`` vectors that the NVPTX backend packs into bit masks and
    unpacks again (≈ 4 extra integer instructions per element, seen in the PTX); the asm block is opaque to it."""
    if ASM:
        if acc.dtype == tl.float64:
            best, best_k0 = tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.gt.f64 p, $2, $3; selp.b32 $1, $4, $5, p; max.f64 $0, $3, $2; }",
                "=d,=r,d,d,r,r", [acc, best, k0 + tl.zeros_like(best_k0), best_k0],
                dtype=(tl.float64, tl.int32), is_pure=True, pack=1)
        else:
            best, best_k0 = tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.gt.f32 p, $2, $3; selp.b32 $1, $4, $5, p; max.f32 $0, $3, $2; }",
                "=r,=r,r,r,r,r", [acc, best, k0 + tl.zeros_like(best_k0), best_k0],
                dtype=(tl.float32, tl.int32), is_pure=True, pack=1)
        return best, best_k0
    best_k0 = tl.where(acc > best, k0, best_k0)
    return tl.maximum(best, acc), best_k0


@triton.jit
def _first_best(best, best_k0, jcols, KP):
    """Smallest code among the row maxima of the running tile: [BLOCK_N] int32."""
    top = tl.max(best, axis=1)
    return tl.min(tl.where(best == top[:, None], best_k0 + jcols[None, :], KP), axis=1)


@triton.jit
def _exact_search(c, cols, op_ptr, op2_ptr, opt_ptr, nh_ptr, level64, KP, D: tl.constexpr, DP: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr, ASM: tl.constexpr):
    """The search over all KP codes of one level in ``MODE`` (not certified): [BLOCK_N] int32 codes."""
    jcols = tl.arange(0, BLOCK_K)
    best = tl.full((BLOCK_N, BLOCK_K), float("-inf"), dtype=tl.float32 if c.dtype == tl.bfloat16 else c.dtype)
    best_k0 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.int32)
    if MODE == "fma":
        for k0 in range(0, KP, BLOCK_K):
            codes_k = k0 + jcols[None, :]  # [1, BLOCK_K]: 2-D loads anchor a layout that spreads codes over lanes
            nh = tl.load(nh_ptr + level64 * KP + codes_k)
            acc = _fma_scores(c, cols, opt_ptr, nh, codes_k, level64, KP, D)
            best, best_k0 = _merge(best, best_k0, acc, k0, ASM)
    else:
        ca, cb = _operands(c, MODE)
        b_offsets = (level64 * KP + jcols[:, None]) * DP + cols[None, :]
        nh_ptrs = nh_ptr + level64 * KP + jcols
        for k0 in range(0, KP, BLOCK_K):
            nh = tl.load(nh_ptrs)
            acc = _dot_scores(ca, cb, op_ptr, op2_ptr, nh, b_offsets, MODE, BLOCK_N)
            best, best_k0 = _merge(best, best_k0, acc, k0, ASM)
            b_offsets += BLOCK_K * DP
            nh_ptrs += BLOCK_K
    return _first_best(best, best_k0, jcols, KP)


@triton.jit
def _certified_search(c, cols, row_mask, bf_ptr, fp_ptr, fb_ptr, fb2_ptr, nh_ptr, cert_ptr, diag_ptr, pid, level,
                      level64, KP, NUM_LEVELS, D: tl.constexpr, DP: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, PASS_MODE: tl.constexpr, FALLBACK: tl.constexpr,
                      CANDIDATES: tl.constexpr, WRITE_DIAG: tl.constexpr, ASM: tl.constexpr):
    """bf16 first pass + exact re-score + certificate; programs with an uncertified row search again exactly."""
    jcols = tl.arange(0, BLOCK_K)
    best = tl.full((BLOCK_N, BLOCK_K), float("-inf"), dtype=tl.float32)
    second = tl.full((BLOCK_N, BLOCK_K), float("-inf"), dtype=tl.float32)
    best_k0 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.int32)
    if PASS_MODE == "bf16":
        ca = c.to(tl.bfloat16)
    else:
        ca = c.to(tl.bfloat16).to(tl.float32)
    b_offsets = (level64 * KP + jcols[:, None]) * DP + cols[None, :]
    nh_ptrs = nh_ptr + level64 * KP + jcols
    for k0 in range(0, KP, BLOCK_K):
        nh = tl.load(nh_ptrs)
        acc = _dot_scores(ca, ca, bf_ptr, bf_ptr, nh, b_offsets, PASS_MODE, BLOCK_N)
        second = tl.maximum(second, tl.minimum(best, acc))
        best, best_k0 = _merge(best, best_k0, acc, k0, ASM)
        b_offsets += BLOCK_K * DP
        nh_ptrs += BLOCK_K
    # candidates: the CANDIDATES best column maxima; everything else is bounded by the next column maximum
    # and by every column's second best
    bound_other = tl.max(second, axis=1)
    taken = best
    top_score = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)  # best fp32 re-score ŝ (minimised)
    top_code = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for _ in tl.static_range(CANDIDATES):
        column_top = tl.max(taken, axis=1)
        j = tl.min(tl.where(taken == column_top[:, None], jcols[None, :], BLOCK_K), axis=1)
        pick = jcols[None, :] == j[:, None]
        code = tl.sum(tl.where(pick, best_k0 + jcols[None, :], 0), axis=1)
        taken = tl.where(pick, float("-inf"), taken)
        e = tl.load(fp_ptr + (level64 * KP + code[:, None]) * DP + cols[None, :])
        nh = tl.load(nh_ptr + level64 * KP + code)
        rescore = -(nh + tl.sum(c * e, axis=1))  # ŝ = h − c·ê in fp32
        better = (rescore < top_score) | ((rescore == top_score) & (code < top_code))
        top_score = tl.where(better, rescore, top_score)
        top_code = tl.where(better, code, top_code)
    bound_other = tl.maximum(bound_other, tl.max(taken, axis=1))  # a upper bound = −(lower bound of s̃)
    # certified_margin = k_c·‖c‖ + k_α·‖α‖ + k_0, α = bf16(c) − c (exact in fp32), the level's (k_c, k_α, k_0)
    alpha = ca.to(tl.float32) - c
    c_norm = tl.sqrt(tl.sum(c * c, axis=1))
    alpha_norm = tl.sqrt(tl.sum(alpha * alpha, axis=1))
    margin = (tl.load(cert_ptr + level64 * 3) * c_norm + tl.load(cert_ptr + level64 * 3 + 1) * alpha_norm
              + tl.load(cert_ptr + level64 * 3 + 2))
    certified = (-bound_other) - top_score > margin  # false for NaN
    certified = certified | (~row_mask)
    missing = tl.sum((~certified).to(tl.int32), axis=0)
    if WRITE_DIAG:
        tl.store(diag_ptr + pid * NUM_LEVELS + level, missing)
    code = top_code
    if missing > 0:
        exact = _exact_search(c, cols, fb_ptr, fb2_ptr, fb_ptr, nh_ptr, level64, KP, D, DP, BLOCK_N, BLOCK_K,
                              FALLBACK, ASM)
        code = tl.where(certified, top_code, exact)
    return code


@triton.jit
def rq_search_kernel(
    x_ptr,  # [N, D] rows, contiguous
    codebooks_ptr,  # [L, KC, D] the codebooks as given (gathered for the walk)
    op_ptr,  # main dot operand: fma [L, D, KP] (transposed); tf32x3 big / tf32 / ieee / bf16 / certified bf16 [L, KP, DP]
    op2_ptr,  # tf32x3 small [L, KP, DP]; certified: the unrounded fp32 centred rows (re-score)
    op3_ptr,  # certified fallback operand (tf32x3 big or ieee rows) [L, KP, DP]
    op4_ptr,  # certified fallback small (tf32x3) [L, KP, DP]
    nh_ptr,  # [L, KP] −h (−inf for padding codes)
    shifts_ptr,  # [L, DP] μ_l (zero-padded)
    canon_ptr,  # [L, KP] int32 first row equal to row k (HAS_CANON)
    cert_ptr,  # [L, 3] float32 certificate coefficients (k_c, k_α, k_0) (certified only)
    row_levels_ptr,  # [N] int32/int64 levels searched per row (HAS_ROW_LEVELS)
    codes_ptr,  # out [N, LT] int64, −1 = skipped
    quantized_ptr,  # out [N, D] Σ_l C_l[c_l] (WRITE_QUANTIZED)
    commit_ptr,  # out [N, D] Σ_l r_{l+1} over active levels (WRITE_COMMIT)
    sqdist_ptr,  # out [N] ‖r_L‖² (WRITE_SQDIST)
    level_err_ptr,  # out [programs, LT] Σ_rows ‖r_{l+1}‖² (WRITE_LEVEL_ERR)
    diag_ptr,  # out [programs, LT] int32 uncertified rows per program and level (WRITE_DIAG)
    N,
    KP,  # padded codes per level (a multiple of BLOCK_K)
    KC,  # codes per level in codebooks_ptr
    NUM_ACTIVE,  # levels searched (≤ LT)
    LT,  # levels in the codes output
    D: tl.constexpr,
    DP: tl.constexpr,  # padded D of the dot operand (power of two; = the register tile width)
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    MODE: tl.constexpr,
    FALLBACK: tl.constexpr,  # certified only: the exact mode of the re-search
    CANDIDATES: tl.constexpr,  # certified only: re-scored candidates per row
    HAS_CANON: tl.constexpr,
    HAS_ROW_LEVELS: tl.constexpr,
    WRITE_QUANTIZED: tl.constexpr,
    WRITE_COMMIT: tl.constexpr,
    WRITE_SQDIST: tl.constexpr,
    WRITE_LEVEL_ERR: tl.constexpr,
    WRITE_DIAG: tl.constexpr,
    ASM: tl.constexpr,  # inline PTX for the epilogue (GPUs; the interpreter runs the plain Triton form)
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, DP)
    col_mask = cols < D
    tile_mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows64[:, None] * D + cols[None, :]
    if HAS_ROW_LEVELS:
        row_levels = tl.load(row_levels_ptr + rows64, mask=row_mask, other=0)
    else:
        row_levels = tl.full((BLOCK_N,), 0, dtype=tl.int32) + NUM_ACTIVE

    residual = tl.load(x_ptr + offsets, mask=tile_mask, other=0.0)
    for level in range(NUM_ACTIVE):
        level64 = tl.zeros([], dtype=tl.int64) + level  # 64-bit offsets: L·K·D may exceed 2³¹
        shift = tl.load(shifts_ptr + level64 * DP + cols)
        c = residual - shift[None, :]  # padding columns stay 0 (residual and shift are 0 there)
        if MODE == "certified":
            code = _certified_search(c, cols, row_mask, op_ptr, op2_ptr, op3_ptr, op4_ptr, nh_ptr, cert_ptr,
                                     diag_ptr, pid, level, level64, KP, LT, D, DP, BLOCK_N, BLOCK_K, "bf16", FALLBACK,
                                     CANDIDATES, WRITE_DIAG, ASM)
        elif MODE == "certified_emulated":
            code = _certified_search(c, cols, row_mask, op_ptr, op2_ptr, op3_ptr, op4_ptr, nh_ptr, cert_ptr,
                                     diag_ptr, pid, level, level64, KP, LT, D, DP, BLOCK_N, BLOCK_K,
                                     "bf16_emulated", FALLBACK, CANDIDATES, WRITE_DIAG, ASM)
        else:
            code = _exact_search(c, cols, op_ptr, op2_ptr, op_ptr, nh_ptr, level64, KP, D, DP, BLOCK_N, BLOCK_K, MODE,
                                 ASM)
        if HAS_CANON:
            code = tl.load(canon_ptr + level64 * KP + code)
        active = row_mask & (level < row_levels)
        tl.store(codes_ptr + rows64 * LT + level, tl.where(active, code, -1).to(tl.int64), mask=row_mask)
        chosen = tl.load(codebooks_ptr + (level64 * KC + code[:, None]) * D + cols[None, :],
                         mask=active[:, None] & col_mask[None, :], other=0.0)
        residual = residual - chosen
    for level in range(NUM_ACTIVE, LT):
        tl.store(codes_ptr + rows64 * LT + level, tl.full((BLOCK_N,), -1, dtype=tl.int64), mask=row_mask)

    if WRITE_QUANTIZED or WRITE_COMMIT or WRITE_SQDIST or WRITE_LEVEL_ERR:
        # Re-walk the levels from x with the stored codes, in the search's order (bitwise the same residuals):
        # keeping these sums live during the search would double the register tile.
        tl.debug_barrier()  # the codes were stored by other threads of this program
        walk = tl.load(x_ptr + offsets, mask=tile_mask, other=0.0)
        quantized = tl.zeros_like(walk)
        commit = tl.zeros_like(walk)
        for level in range(LT):
            level64 = tl.zeros([], dtype=tl.int64) + level
            code = tl.load(codes_ptr + rows64 * LT + level, mask=row_mask, other=-1)
            used = code >= 0
            chosen = tl.load(codebooks_ptr + (level64 * KC + code[:, None]) * D + cols[None, :],
                             mask=used[:, None] & col_mask[None, :], other=0.0)
            walk = walk - chosen
            quantized += chosen
            if WRITE_COMMIT:
                commit += tl.where(used[:, None], walk, 0.0)
            if WRITE_LEVEL_ERR:
                sq = tl.where(used[:, None], walk * walk, 0.0)
                tl.store(level_err_ptr + pid * LT + level, tl.sum(tl.sum(sq, axis=1), axis=0))
        if WRITE_QUANTIZED:
            tl.store(quantized_ptr + offsets, quantized, mask=tile_mask)
        if WRITE_COMMIT:
            tl.store(commit_ptr + offsets, commit, mask=tile_mask)
        if WRITE_SQDIST:
            tl.store(sqdist_ptr + rows64, tl.sum(walk * walk, axis=1), mask=row_mask)


@triton.jit
def rq_large_kernel(
    x_ptr,  # [N, D] rows, contiguous
    codebooks_ptr,  # [L, KC, D]
    op_ptr,  # [L, KP, DP] dot operand (tf32x3: big; bf16: bf16)
    op2_ptr,  # [L, KP, DP] tf32x3 small
    nh_ptr,  # [L, KP] −h
    shifts_ptr,  # [L, DP]
    canon_ptr,  # [L, KP] int32
    row_levels_ptr,  # [N] (HAS_ROW_LEVELS)
    residual_ptr,  # scratch [programs·BLOCK_N, DP] compute dtype: the residual of this program's rows
    a_ptr,  # scratch [programs·BLOCK_N, DP] the level's residual operand (tf32x3 big / bf16 / c), in its dot dtype
    a2_ptr,  # scratch [programs·BLOCK_N, DP] tf32x3 small
    codes_ptr,  # out [N, LT] int64
    quantized_ptr,  # out [N, D]
    commit_ptr,  # out [N, D]
    sqdist_ptr,  # out [N]
    level_err_ptr,  # out [programs, LT, DP // BLOCK_D] per-chunk partials
    N,
    KP,
    KC,
    NUM_ACTIVE,
    LT,
    D: tl.constexpr,
    DP: tl.constexpr,
    BLOCK_D: tl.constexpr,  # D chunk (a static loop of DP // BLOCK_D chunks)
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    MODE: tl.constexpr,
    HOIST_A: tl.constexpr,
    HAS_CANON: tl.constexpr,
    HAS_ROW_LEVELS: tl.constexpr,
    WRITE_QUANTIZED: tl.constexpr,
    WRITE_COMMIT: tl.constexpr,
    WRITE_SQDIST: tl.constexpr,
    WRITE_LEVEL_ERR: tl.constexpr,
    ASM: tl.constexpr,
):
    """Large D (the register tile would spill): the residual and the level's dot operand live in per-row scratch
    (this program's rows, L1/L2 resident); every code tile runs a static loop over the D chunks. The residual
    operand is made (split / converted) once per level and only read inside the K loop (no stores there), so the
    compiler may hoist it out of the loop. The walk outputs are made chunk by chunk after the search."""
    CHUNKS: tl.constexpr = DP // BLOCK_D
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    chunk = tl.arange(0, BLOCK_D)
    jcols = tl.arange(0, BLOCK_K)
    if HAS_ROW_LEVELS:
        row_levels = tl.load(row_levels_ptr + rows64, mask=row_mask, other=0)
    else:
        row_levels = tl.full((BLOCK_N,), 0, dtype=tl.int32) + NUM_ACTIVE
    for ci in tl.static_range(CHUNKS):
        cols = ci * BLOCK_D + chunk
        xs = tl.load(x_ptr + rows64[:, None] * D + cols[None, :], mask=row_mask[:, None] & (cols < D)[None, :],
                     other=0.0)
        tl.store(residual_ptr + rows64[:, None] * DP + cols[None, :], xs)
    tl.debug_barrier()
    for level in range(NUM_ACTIVE):
        level64 = tl.zeros([], dtype=tl.int64) + level
        for ci in tl.static_range(CHUNKS):
            cols = ci * BLOCK_D + chunk
            offs = rows64[:, None] * DP + cols[None, :]
            c = tl.load(residual_ptr + offs) - tl.load(shifts_ptr + level64 * DP + cols)[None, :]
            ca, cb = _operands(c, MODE)
            tl.store(a_ptr + offs, ca)
            if MODE == "tf32x3":
                tl.store(a2_ptr + offs, cb)
        tl.debug_barrier()
        best = tl.full((BLOCK_N, BLOCK_K), float("-inf"), dtype=residual_ptr.dtype.element_ty)
        best_k0 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.int32)
        b_offsets = (level64 * KP + jcols[:, None]) * DP + chunk[None, :]
        nh_ptrs = nh_ptr + level64 * KP + jcols
        # the residual operand, loaded once per level (HOIST_A): a tuple of chunks, loop-invariant in the K loop,
        # which the compiler keeps in shared memory; else re-read per code tile from the (L1-resident) scratch
        a_chunks = ()
        a2_chunks = ()
        if HOIST_A:
            for ci in tl.static_range(CHUNKS):
                offs = rows64[:, None] * DP + (ci * BLOCK_D + chunk)[None, :]
                a_chunks = a_chunks + (tl.load(a_ptr + offs),)
                if MODE == "tf32x3":
                    a2_chunks = a2_chunks + (tl.load(a2_ptr + offs),)
        for k0 in range(0, KP, BLOCK_K):
            acc = tl.broadcast_to(tl.load(nh_ptrs)[None, :], (BLOCK_N, BLOCK_K))
            if HOIST_A:
                for ci in tl.static_range(CHUNKS):
                    ca = a_chunks[ci]
                    cb = a2_chunks[ci] if MODE == "tf32x3" else ca
                    acc = _dot_acc(ca, cb, op_ptr, op2_ptr, b_offsets + ci * BLOCK_D, acc, MODE)
            else:
                # a run-time chunk loop: the pipeliner buffers one [BLOCK_K, BLOCK_D] chunk per stage, not the
                # whole [BLOCK_K, DP] tile (tf32x3 at D = 256: 128 KiB per stage otherwise)
                for d0 in range(0, DP, BLOCK_D):
                    offs = rows64[:, None] * DP + (d0 + chunk)[None, :]
                    ca = tl.load(a_ptr + offs)
                    cb = tl.load(a2_ptr + offs) if MODE == "tf32x3" else ca
                    acc = _dot_acc(ca, cb, op_ptr, op2_ptr, b_offsets + d0, acc, MODE)
            best, best_k0 = _merge(best, best_k0, acc, k0, ASM)
            b_offsets += BLOCK_K * DP
            nh_ptrs += BLOCK_K
        code = _first_best(best, best_k0, jcols, KP)
        if HAS_CANON:
            code = tl.load(canon_ptr + level64 * KP + code)
        active = row_mask & (level < row_levels)
        tl.store(codes_ptr + rows64 * LT + level, tl.where(active, code, -1).to(tl.int64), mask=row_mask)
        for ci in tl.static_range(CHUNKS):
            cols = ci * BLOCK_D + chunk
            offs = rows64[:, None] * DP + cols[None, :]
            chosen = tl.load(codebooks_ptr + (level64 * KC + code[:, None]) * D + cols[None, :],
                             mask=active[:, None] & (cols < D)[None, :], other=0.0)
            tl.store(residual_ptr + offs, tl.load(residual_ptr + offs) - chosen)
        tl.debug_barrier()
    for level in range(NUM_ACTIVE, LT):
        tl.store(codes_ptr + rows64 * LT + level, tl.full((BLOCK_N,), -1, dtype=tl.int64), mask=row_mask)

    if WRITE_QUANTIZED or WRITE_COMMIT or WRITE_SQDIST or WRITE_LEVEL_ERR:
        tl.debug_barrier()  # the codes were stored by other threads of this program
        final = tl.zeros((BLOCK_N,), dtype=residual_ptr.dtype.element_ty)
        for ci in tl.static_range(CHUNKS):  # chunks outside, levels inside: three [BLOCK_N, BLOCK_D] tiles live
            cols = ci * BLOCK_D + chunk
            col_mask = cols < D
            tile_mask = row_mask[:, None] & col_mask[None, :]
            offsets = rows64[:, None] * D + cols[None, :]
            walk = tl.load(x_ptr + offsets, mask=tile_mask, other=0.0)
            quantized = tl.zeros_like(walk)
            commit = tl.zeros_like(walk)
            for level in range(LT):
                level64 = tl.zeros([], dtype=tl.int64) + level
                code = tl.load(codes_ptr + rows64 * LT + level, mask=row_mask, other=-1)
                used = code >= 0
                chosen = tl.load(codebooks_ptr + (level64 * KC + code[:, None]) * D + cols[None, :],
                                 mask=used[:, None] & col_mask[None, :], other=0.0)
                walk = walk - chosen
                quantized += chosen
                if WRITE_COMMIT:
                    commit += tl.where(used[:, None], walk, 0.0)
                if WRITE_LEVEL_ERR:
                    sq = tl.where(used[:, None], walk * walk, 0.0)
                    tl.store(level_err_ptr + (pid * LT + level) * CHUNKS + ci, tl.sum(tl.sum(sq, axis=1), axis=0))
            if WRITE_QUANTIZED:
                tl.store(quantized_ptr + offsets, quantized, mask=tile_mask)
            if WRITE_COMMIT:
                tl.store(commit_ptr + offsets, commit, mask=tile_mask)
            final += tl.sum(walk * walk, axis=1)
        if WRITE_SQDIST:
            tl.store(sqdist_ptr + rows64, final, mask=row_mask)
