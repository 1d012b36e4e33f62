/* Native CPU kernels of fastrq (float32), one translation unit:
 *   1. the fused nearest-code search and residual quantization for small D (this comment, down to "Threads");
 *   1b. its certified bf16 first pass (AVX512-BF16 builds; the bound and why the outputs are bit for bit the same);
 *   2. the sequential statistics pass and the EMA step;
 *   3. the certified bf16 search's row passes (its bound and proof: fastrq/ops/certified.py);
 *   4. the GEMM path's codebook preparation and per-level walk (fastrq/ops/torch_backend.py), row hashes, the
 *      counter-based draws (fastrq/ops/counter_random.py) and the dead-code restart (fastrq/ops/codebook_state.py),
 *      each bit for bit or within the contract its Python counterpart states.
 *
 * 1. Fused nearest-code search and residual quantization for small D.
 * The CPU counterpart of the Triton search kernel, for the sizes a training step has (N of 1k-100k rows, D <= 64;
 * the launcher uses it at D <= 32 and, with K <= 1024 codes, at D <= 64, where it beats the GEMM path):
 * one call runs every level of a row block while its residual sits in registers.
 *
 * Score: s_k = 1/2 |e_k - mu|^2 - (r - mu).(e_k - mu) (= 1/2 |r - e_k|^2 - 1/2 |r - mu|^2) in float32, one fused
 * multiply-add per (row, code, d), where mu is the level's centring shift: the codebook mean rounded to a multiple
 * of the largest power of two not above the codebook's spread (the rule of fastrq.ops.codebook_prep.centring_shifts),
 * so a common offset (data ~ 1000 + N(0, 1)) costs no precision and small-integer data stays exact. Identical codebook
 * rows get bitwise identical scores (every code runs the same instruction sequence), and the running minimum is
 * updated with a strict <, so among exactly equal scores the smallest index wins without a duplicate-row table. NaN
 * scores never win: a row holding NaN keeps code 0.
 *
 * Layout: codes of a level are scored LANES at a time (16 in one AVX-512 register, 8 in one AVX2 register) for ROWS
 * rows at once (each codebook load serves ROWS rows); lane j of code block b holds code LANES b + j, and each lane
 * keeps its own running
 * (min, argmin); the lanes are merged at the end of the level (min value, then the smallest index among equal ones),
 * or, when a large level is searched in code tiles (search_walk), at the end of each tile, the tiles then merged
 * with a strict < in increasing order. Codes at or beyond a level's size are +inf in the transposed codebook and
 * never win.
 *
 * Threads: fastrq_search_walk_parallel splits the rows into equal runs of whole ROWS-row blocks, one per OpenMP
 * thread. Built with -fopenmp, this library links libgomp.so.1 by soname, so inside a PyTorch process it shares
 * torch's own OpenMP runtime and thread team: the threads a torch op just used (and that spin for a while after it)
 * run the search, instead of competing with it for the cores. Without OpenMP the caller splits rows across Python
 * threads (each ctypes call releases the GIL). The reductions (EMA statistics, per-level errors) run over runs of
 * rows whose number depends on the shape alone, each in row order, added in run order, so every result is
 * deterministic and independent of the thread count.
 * Written with GCC/Clang vector extensions (compiled with -march=native: AVX-512 where the CPU has it, else
 * AVX2 / SSE / NEON); a few intrinsics, each with a portable form beside it: the lanes' running minimum (AVX-512F,
 * AVX2) and their merge (AVX-512F; tests/test_training_pass.py builds the library without AVX-512, without AVX2 and
 * with the other lane count to check that the forms agree) and the certified selection's compare-to-mask
 * (AVX-512BW; tests/test_certified.py does the same).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* LANES floats a vector: one AVX-512 register where the CPU has AVX-512F, else one AVX2 register (two SSE / NEON
 * registers); ROWS rows a block (each codebook load serves ROWS rows). The 16-lane layout compiled for AVX2 (pairs
 * of registers, 16 of them in all) spilled its running minima and ran 1.1-13x slower than PyTorch's GEMM path on a
 * Zen 3 (2026-12-02); 8 lanes there take 0.05-0.26x its time (benchmarks/results/2026-12-02-avx2/kernel_layouts.md).
 * ROWS = 8 on AVX2 too: 0.88-0.93x the time of 4 rows at D = 4-64 (the extra spills cost less than the codebook
 * loads saved). Every result is the same for any LANES and ROWS (each code's score is the same instructions; the
 * lanes' minima merge to the smallest index among equal scores): tests/test_training_pass.py builds the layouts and
 * compares them bitwise. Either can be set with -D. */
#ifndef LANES
#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
#endif
#ifndef ROWS
#define ROWS 8
#endif
#define MAX_DIM 64

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint16_t vh __attribute__((vector_size(LANES * sizeof(uint16_t))));
typedef int16_t vs __attribute__((vector_size(2 * LANES * sizeof(int16_t))));
typedef double vd __attribute__((vector_size(LANES / 2 * sizeof(double))));
typedef float vhf __attribute__((vector_size(LANES / 2 * sizeof(float))));
typedef float vf8 __attribute__((vector_size(8 * sizeof(float))));   /* fixed widths: results independent of LANES */
typedef double vd8 __attribute__((vector_size(8 * sizeof(double))));

/* CALL(D) with D a compile-time constant for the usual widths (unrolled d loops: 20-30 % faster at D = 4), any
 * other D through the generic body; the same instructions per row either way, so results do not depend on the
 * branch. */
#define WITH_CONSTANT_DIM(dim, CALL)                                                                                   \
    switch (dim) {                                                                                                     \
    case 4: CALL(4); break;                                                                                            \
    case 8: CALL(8); break;                                                                                            \
    case 16: CALL(16); break;                                                                                          \
    case 32: CALL(32); break;                                                                                          \
    case 64: CALL(64); break;                                                                                          \
    default: CALL(dim); break;                                                                                         \
    }

static inline vf select_f(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vi select_i(vi mask, vi a, vi b) { return (a & mask) | (b & ~mask); }

int fastrq_lanes(void) { return LANES; }
int fastrq_rows(void) { return ROWS; }
int fastrq_max_dim(void) { return MAX_DIM; }
#ifdef _OPENMP
int fastrq_openmp(void) { return 1; }
#else
int fastrq_openmp(void) { return 0; }
#endif

/* The centring shift mu of one level's first `size` codes book [size, dim] (scratch: total [dim] doubles, mean
 * [dim] floats): the mean (summed in float64, rounded to float32), rounded to a multiple of the largest power of
 * two not above the spread max |e - mean| (the rule of fastrq.ops.codebook_prep.centring_shifts); a constant level
 * is shifted by its first code. */
static inline __attribute__((always_inline)) void centring_shift(const float *restrict book, int64_t size,
                                                                 int64_t dim, double *restrict total,
                                                                 float *restrict mean, float *restrict shift) {
    for (int64_t d = 0; d < dim; d++) total[d] = 0.0;
    for (int64_t k = 0; k < size; k++)
        for (int64_t d = 0; d < dim; d++) total[d] += book[k * dim + d];
    for (int64_t d = 0; d < dim; d++) mean[d] = (float)(total[d] / (double)size);
    /* the spread: a maximum in LANES lanes (a NaN deviation is never taken, as the scalar `dev > spread`) */
    vf widest = {0};
    float spread = 0.0f;
    for (int64_t k = 0; k < size; k++) {
        const float *e = book + k * dim;
        int64_t d = 0;
        for (; d + LANES <= dim; d += LANES) {
            vf v, m;
            memcpy(&v, e + d, sizeof(v));
            memcpy(&m, mean + d, sizeof(m));
            vf dev = (vf)((vi)(v - m) & 0x7FFFFFFF); /* |v - m| */
            widest = select_f(dev > widest, dev, widest);
        }
        for (; d < dim; d++) {
            float dev = fabsf(e[d] - mean[d]);
            if (dev > spread) spread = dev;
        }
    }
    for (int j = 0; j < LANES; j++) spread = widest[j] > spread ? widest[j] : spread;
    if (spread > 0.0f) {
        float step = exp2f(floorf(log2f(spread)));
        for (int64_t d = 0; d < dim; d++) shift[d] = nearbyintf(mean[d] / step) * step;
    } else {
        for (int64_t d = 0; d < dim; d++) shift[d] = book[d];
    }
}

/* The LANES x LANES transpose of r[i][j] in place, in log2(LANES) rounds that swap the off-diagonal blocks of 1, 2,
 * 4 (and 8) (two two-source shuffles per pair of rows a round). */
#if LANES == 16
#define TRANSPOSE_ROUNDS 4
static const vi transpose_low[4] = {
    {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
    {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
    {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
};
static const vi transpose_high[4] = {
    {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
    {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
    {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
    {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
};
#elif LANES == 8
#define TRANSPOSE_ROUNDS 3
static const vi transpose_low[3] = {
    {0, 8, 2, 10, 4, 12, 6, 14},
    {0, 1, 8, 9, 4, 5, 12, 13},
    {0, 1, 2, 3, 8, 9, 10, 11},
};
static const vi transpose_high[3] = {
    {1, 9, 3, 11, 5, 13, 7, 15},
    {2, 3, 10, 11, 6, 7, 14, 15},
    {4, 5, 6, 7, 12, 13, 14, 15},
};
#else
#error "LANES must be 8 or 16"
#endif
static inline __attribute__((always_inline)) void transpose_lanes(vf r[LANES]) {
#pragma GCC unroll 4
    for (int round = 0; round < TRANSPOSE_ROUNDS; round++) {
        const int b = 1 << round;
#pragma GCC unroll 16
        for (int i = 0; i < LANES; i++) {
            if (i & b) continue;
            vf a = r[i], c = r[i + b];
            r[i] = __builtin_shuffle(a, c, transpose_low[round]);
            r[i + b] = __builtin_shuffle(a, c, transpose_high[round]);
        }
    }
}

/* Per level l (K_l = level_sizes[l] codes): the shift mu[l][d], the centred transposed codes
 * bookt[l][d][k] = books[l][k][d] - mu[l][d] and half[l][k] = 1/2 |books[l][k] - mu[l]|^2 for k < K_l; for k in
 * [K_l, kpad) the codes are 0 and the half norms +inf (never chosen). Half norms are summed over d in order
 * 0..dim-1 for every code alike (identical rows, identical scores).
 * From D = LANES: blocks of LANES codes x LANES columns, loaded as rows, centred, transposed in registers and stored as
 * columns (the column-by-column loop below read each code row once per d, from beyond the first cache level at
 * D = 64: 0.9-4.6 ns an element). */
static inline __attribute__((always_inline)) void prepare_level(const float *book, int64_t size, int64_t dim,
                                                                int64_t kpad, float *out, float *shift, float *norm) {
    double total[MAX_DIM];
    float mean[MAX_DIM];
    centring_shift(book, size, dim, total, mean, shift);
    if (dim < LANES) {
        /* loops run along memory (row by row, and the transposed output d by d: a stride of kpad floats
         * between stores thrashes the L1 cache's sets) */
        for (int64_t k = 0; k < kpad; k++) norm[k] = 0.0f;
        for (int64_t d = 0; d < dim; d++) {
            float *column = out + d * kpad;
            for (int64_t k = 0; k < size; k++) {
                float c = book[k * dim + d] - shift[d];
                column[k] = c;
                norm[k] += c * c;
            }
            for (int64_t k = size; k < kpad; k++) column[k] = 0.0f;
        }
        for (int64_t k = 0; k < kpad; k++) norm[k] = k < size ? 0.5f * norm[k] : INFINITY;
        return;
    }
    const int64_t whole = dim / LANES * LANES;
    for (int64_t k0 = 0; k0 < kpad; k0 += LANES) {
        const int64_t count = size - k0 >= LANES ? LANES : (size > k0 ? size - k0 : 0);
        vf acc = {0};
        for (int64_t d0 = 0; d0 < whole; d0 += LANES) {
            vf block[LANES], centre;
            memcpy(&centre, shift + d0, sizeof(centre));
            for (int64_t j = 0; j < LANES; j++) {
                vf row = {0};
                if (j < count) {
                    memcpy(&row, book + (k0 + j) * dim + d0, sizeof(row));
                    row -= centre;
                }
                block[j] = row;
            }
            transpose_lanes(block);
            for (int64_t i = 0; i < LANES; i++) {
                memcpy(out + (d0 + i) * kpad + k0, &block[i], sizeof(vf));
                acc += block[i] * block[i];
            }
        }
        for (int64_t d = whole; d < dim; d++) {
            vf c = {0};
            for (int64_t j = 0; j < count; j++) c[j] = book[(k0 + j) * dim + d] - shift[d];
            memcpy(out + d * kpad + k0, &c, sizeof(c));
            acc += c * c;
        }
        for (int64_t j = 0; j < LANES; j++) norm[k0 + j] = j < count ? 0.5f * acc[j] : INFINITY;
    }
}

/* Level by level, at the compiled widths with the d loops unrolled (0.69-0.82x the time at D = 4, K = 128-1,024;
 * 0.86-0.95x at D = 8-64). */
void fastrq_prepare_books(const float *books, int64_t num_levels, int64_t num_codes, int64_t dim,
                          const int64_t *level_sizes, int64_t kpad, float *bookt, float *half, float *mu) {
    for (int64_t l = 0; l < num_levels; l++) {
#define PREPARE(D) prepare_level(books + l * num_codes * (D), level_sizes[l], D, kpad, bookt + l * (D) * kpad, \
                                 mu + l * (D), half + l * kpad)
        WITH_CONSTANT_DIM(dim, PREPARE);
#undef PREPARE
    }
}

/* The running (min, argmin) of each lane: lanes where s < best (strict: a later code with an equal score never wins
 * its lane; NaN never wins) take s and code. With AVX-512F one compare into a mask and two single-instruction
 * updates (min_ps(a, b) is a < b ? a : b, exactly the select); the portable form is the same select in vector
 * code (the compiler makes two bitwise operations of each). */
static inline __attribute__((always_inline)) void keep_smaller(vf s, vi code, vf *best, vi *index) {
#if defined(__AVX512F__) && LANES == 16
    __mmask16 better = _mm512_cmp_ps_mask((__m512)s, (__m512)*best, _CMP_LT_OQ);
    *best = (vf)_mm512_min_ps((__m512)s, (__m512)*best);
    *index = (vi)_mm512_mask_mov_epi32((__m512i)*index, better, (__m512i)code);
#elif defined(__AVX2__) && LANES == 8
    __m256 better = _mm256_cmp_ps((__m256)s, (__m256)*best, _CMP_LT_OQ);
    *best = (vf)_mm256_min_ps((__m256)s, (__m256)*best);
    *index = (vi)_mm256_blendv_ps((__m256)*index, (__m256)code, better);
#else
    vi better = s < *best;
    *best = select_f(better, s, *best);
    *index = select_i(better, code, *index);
#endif
}

/* The code of the smallest of the LANES running minima, the smallest index among equal ones (the lanes never hold
 * NaN; a row whose scores were all NaN has every lane at +inf with index 0, so code 0). With AVX-512F: the minimum
 * by a shuffle tree, then the smallest index among the lanes equal to it, in about twenty instructions a row, rows
 * independent of each other; the portable form scans the lanes in order. */
static inline __attribute__((always_inline)) int32_t merge_lanes(vf best, vi index, float *best_value) {
#if defined(__AVX512F__) && LANES == 16
    float value = _mm512_reduce_min_ps((__m512)best);
    __mmask16 at = _mm512_cmp_ps_mask((__m512)best, _mm512_set1_ps(value), _CMP_EQ_OQ);
    *best_value = value;
    return _mm512_mask_reduce_min_epi32(at, (__m512i)index);
#else
    float value = INFINITY;
    int32_t code = 0;
    for (int j = 0; j < LANES; j++) {
        if (best[j] < value || (best[j] == value && index[j] < code)) {
            value = best[j];
            code = index[j];
        }
    }
    *best_value = value;
    return code;
#endif
}

/* Nearest code of up to ROWS centred residual rows r[i][d] (i < rows) among `count` codes (a multiple of LANES)
 * of a centred transposed level: bookt points at the first of them in rows of `kstride` floats ([dim][kstride]),
 * half at their half norms, code0 is the first one's index. Writes each row's code and its score. */
static inline __attribute__((always_inline)) void nearest_rows(float r[ROWS][MAX_DIM], int rows, int64_t dim,
                                                               const float *bookt, const float *half, int64_t kstride,
                                                               int64_t count, int32_t code0, int32_t *best_code,
                                                               float *best_score) {
    vi lane;
    for (int j = 0; j < LANES; j++) lane[j] = j;
    vf best[ROWS];
    vi index[ROWS];
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < LANES; j++) best[i][j] = INFINITY;
        index[i] = lane * 0;
    }
    int64_t k0 = 0;
    /* from D = 16, two code blocks at a time: each broadcast row value serves two multiply-adds (the broadcasts no
     * longer fit in registers there and were loads as many as the multiply-adds: 0.68-0.80x the time at D = 32,
     * 0.86-0.91x at D = 64; at D = 4 the broadcasts stay in registers and the pair was 1.03-1.08x slower) */
    for (; dim >= 16 && k0 + 2 * LANES <= count; k0 += 2 * LANES) {
        vf s[ROWS], t[ROWS];
        vf h, g;
        memcpy(&h, half + k0, sizeof(h));
        memcpy(&g, half + k0 + LANES, sizeof(g));
        for (int i = 0; i < ROWS; i++) {
            s[i] = h;
            t[i] = g;
        }
        for (int64_t d = 0; d < dim; d++) {
            vf c, e;
            memcpy(&c, bookt + d * kstride + k0, sizeof(c));
            memcpy(&e, bookt + d * kstride + k0 + LANES, sizeof(e));
            for (int i = 0; i < ROWS; i++) {
                s[i] -= r[i][d] * c;
                t[i] -= r[i][d] * e;
            }
        }
        vi code = lane + (code0 + (int32_t)k0), next = code + LANES;
        for (int i = 0; i < ROWS; i++) {
            keep_smaller(s[i], code, &best[i], &index[i]); /* the lower codes first: ties keep them */
            keep_smaller(t[i], next, &best[i], &index[i]);
        }
    }
    for (; k0 < count; k0 += LANES) {
        vf s[ROWS];
        vf h;
        memcpy(&h, half + k0, sizeof(h));
        for (int i = 0; i < ROWS; i++) s[i] = h;
        for (int64_t d = 0; d < dim; d++) {
            vf c;
            memcpy(&c, bookt + d * kstride + k0, sizeof(c));
            for (int i = 0; i < ROWS; i++) s[i] -= r[i][d] * c;
        }
        vi code = lane + (code0 + (int32_t)k0);
        for (int i = 0; i < ROWS; i++) keep_smaller(s[i], code, &best[i], &index[i]);
    }
    for (int i = 0; i < rows; i++) best_code[i] = merge_lanes(best[i], index[i], &best_score[i]);
}

/* LANES copies of *p (one broadcast load) */
static inline __attribute__((always_inline)) vf splat(const float *p) {
#if defined(__AVX2__) && LANES == 8
    return (vf)_mm256_broadcast_ss(p);
#else
    vf v;
    for (int j = 0; j < LANES; j++) v[j] = *p;
    return v;
#endif
}
#ifndef ROW_LANES_MAX_DIM
#define ROW_LANES_MAX_DIM (LANES == ROWS ? 7 : 0)
#endif
#if ROW_LANES_MAX_DIM > 0 && LANES != ROWS
#error "the rows-in-lanes search needs LANES == ROWS"
#endif
#ifndef CODE_CHAINS
#define CODE_CHAINS 8
#endif
/* nearest_rows with the rows in the lanes (LANES = ROWS): each vector holds one column d of the ROWS rows, each code
 * is broadcast, and lane i keeps row i's running (min, argmin) over the codes in increasing order with a strict <,
 * so no merge is needed: the same score instructions (s = h_k, then s -= r_d c_kd for d = 0 .. dim-1, one fused
 * multiply-add each) and the same result as nearest_rows. For D <= ROW_LANES_MAX_DIM without AVX-512: there the
 * codes-in-lanes layout needs ROWS x D broadcast row values, which AVX2 can neither keep in its 16 registers nor
 * fold into its multiply-adds (AVX-512 broadcasts from memory within the instruction). Measured on a Zen 3
 * (2026-12-02, interleaved -D builds): 0.72-0.84x the codes-in-lanes time at D = 2-7, N >= 6,272; 1.25-1.6x at
 * D = 8 and 16, hence the limit; CODE_CHAINS = 8 independent codes at a time, 0.82-0.93x the time of 4. */
static inline __attribute__((always_inline)) void nearest_rows_in_lanes(float r[ROWS][MAX_DIM], int rows,
                                                                        int64_t dim, const float *bookt,
                                                                        const float *half, int64_t kstride,
                                                                        int64_t count, int32_t code0,
                                                                        int32_t *best_code, float *best_score) {
#if ROW_LANES_MAX_DIM > 0
    vf column[ROW_LANES_MAX_DIM];
    for (int64_t d = 0; d < dim; d++)
        for (int i = 0; i < LANES; i++) column[d][i] = r[i][d];
    vf best;
    vi index = {0}, code = index + code0;
    for (int j = 0; j < LANES; j++) best[j] = INFINITY;
    int64_t k = 0;
    /* CODE_CHAINS codes at a time: independent chains of dim multiply-adds, kept in code order */
    for (; k + CODE_CHAINS <= count; k += CODE_CHAINS) {
        vf s[CODE_CHAINS];
        for (int j = 0; j < CODE_CHAINS; j++) s[j] = splat(half + k + j);
        for (int64_t d = 0; d < dim; d++)
            for (int j = 0; j < CODE_CHAINS; j++) s[j] -= column[d] * splat(bookt + d * kstride + k + j);
        for (int j = 0; j < CODE_CHAINS; j++) {
            keep_smaller(s[j], code, &best, &index);
            code += 1;
        }
    }
    for (; k < count; k++) {
        vf s = splat(half + k);
        for (int64_t d = 0; d < dim; d++) s -= column[d] * splat(bookt + d * kstride + k);
        keep_smaller(s, code, &best, &index);
        code += 1;
    }
    /* all ROWS lanes (the caller's arrays hold ROWS; a copy of `rows` values compiled to a slow rep movs) */
    (void)rows;
    memcpy(best_code, &index, sizeof(index));
    memcpy(best_score, &best, sizeof(best));
#else
    (void)r, (void)rows, (void)dim, (void)bookt, (void)half, (void)kstride, (void)count, (void)code0;
    (void)best_code, (void)best_score;
#endif
}

/* float32 -> bfloat16 bits, rounded to nearest even (NaN -> the quiet NaN 0x7FC0), as torch converts. */
static inline uint16_t bf16_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof(bits));
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

static inline float bf16_value(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof(value));
    return value;
}

/* ------------------------------------------------------------------------------------------------------------------
 * 1b. The fused search's certified bf16 first pass (builds with AVX512-BF16, 16 lanes).
 * Per level, with a = the centred row (float32, as nearest_rows scores it), b_k the centred codes and h_k their
 * float32 half norms (prepare_level), the float32 kernel's score r_k = fl(h_k - a.b_k) (dim fused multiply-adds in
 * order) and s_k = h_k - a.b_k (exact). The first pass scores every code as
 *     t_k = fl32(h_k + sum_d bf16(a_d) * bf16(-b_kd))      (vdpbf16ps: products exact, sums in float32)
 * and keeps each row's smallest t_j (its code j) and second smallest t', over all codes. Bound (same argument as
 * fastrq/ops/certified.py, whose docstring proves it; here without its output rounding and norm split): with
 * alpha = bf16(a) - a, beta_k = bf16(b_k) - b_k, g = gamma_{dim+2} (a float32 sum of dim + 2 terms in any order,
 * separate or fused multiply-adds), eta = 2^-126 (what a flushed subnormal can lose),
 *     |t_k - s_k| <= E = |a| beta* + |alpha| bhat* + g (H + (|a| + |alpha|) bhat*) + eta (sqrt(dim) (|a| + |alpha|
 *                        + bhat* + 2) + 4 dim + 16),
 *     |r_k - s_k| <= F = g (H + |a| b*) + (dim + 2) eta,
 * beta* = max_k |beta_k|, bhat* = max_k |bf16(b_k)|, b* = max_k |b_k|, H = max_k h_k (over the level's codes).
 * If t' - t_j > 2 (E + F), every other code has r_k > r_j: j is the float32 kernel's code, the unique minimum of
 * its scores, and the row is done. Otherwise (near-ties, exact ties, rows with NaN, inf or norms over
 * BF16_MAGNITUDE) the row is searched again by nearest_rows, in packs of ROWS such rows. Every code the walk
 * takes is therefore the float32 kernel's, bit for bit, and so is every output (tests/test_bf16_search.py).
 * The rows' norms and the bound are computed in float64 from the float32 values (relative error below 2^-40,
 * covered by the 2^-30 margin on the bound); the codebook's constants from its prepared centred codes, their
 * squared norms summed in float32 and rounded up by 2 gamma_dim (prepare_bf16). A level with non-finite or too
 * large codes keeps the float32 search. Measured: benchmarks/README.md, note 21.
 * ---------------------------------------------------------------------------------------------------------------- */
#if defined(__AVX512BF16__) && LANES == 16
#define BF16_SEARCH 1
#else
#define BF16_SEARCH 0
#endif
#define BF16_MAGNITUDE 1099511627776.0 /* 2^40: no float32 partial sum of a score can overflow below it */
#define BF16_PAIRS (MAX_DIM / 2)
#define BF16_CONSTANTS 5 /* per level: beta*, bhat*, b*, H, usable */

int fastrq_bf16_search(void) { return BF16_SEARCH; }

#if BF16_SEARCH
/* The bf16 operands of `num_active` prepared levels (bookt [A][dim][kpad], half [A][kpad] of prepare_level):
 * pairs[l][j][k] (j < ceil(dim / 2)) holds bf16(-b_k,2j) in its low and bf16(-b_k,2j+1) (0 past dim) in its high
 * half; consts[l] = (beta*, bhat*, b*, H, usable). The squared norms are summed in float32 (16 codes a vector)
 * and rounded up by (1 + 2 gamma_dim) plus dim eta (their float32 rounding and underflow), before the square root
 * (in float64, times 1 + 2^-40). Levels run on the caller's OpenMP threads. */
static void prepare_bf16(const float *bookt, const float *half, const int64_t *level_sizes, int64_t num_active,
                         int64_t dim, int64_t kpad, uint32_t *pairs, double *consts, int64_t threads) {
    const int64_t npairs = (dim + 1) / 2;
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80008000u));
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)(threads < num_active ? threads : num_active)) schedule(static, 1)
#endif
    for (int64_t l = 0; l < num_active; l++) {
        const float *bt = bookt + l * dim * kpad, *hl = half + l * kpad;
        uint32_t *out = pairs + l * npairs * kpad;
        const int64_t size = level_sizes[l] < kpad ? level_sizes[l] : kpad;
        __m512 beta = _mm512_setzero_ps(), bhat = beta, bnorm = beta, hmax = beta;
        int usable = 1;
        for (int64_t k0 = 0; k0 < kpad; k0 += LANES) {
            __m512 err = _mm512_setzero_ps(), rounded = err, exact = err;
            for (int64_t j = 0; j < npairs; j++) {
                const __m512 lo = _mm512_loadu_ps(bt + 2 * j * kpad + k0);
                const __m512 hi = 2 * j + 1 < dim ? _mm512_loadu_ps(bt + (2 * j + 1) * kpad + k0) : _mm512_setzero_ps();
                const __m512i wl = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
                const __m512i wh = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
                const __m512i word = _mm512_or_si512(wl, _mm512_slli_epi32(wh, 16));
                _mm512_storeu_si512(out + j * kpad + k0, _mm512_xor_si512(word, _mm512_castps_si512(sign)));
                const __m512 rl = _mm512_castsi512_ps(_mm512_slli_epi32(wl, 16));
                const __m512 rh = _mm512_castsi512_ps(_mm512_slli_epi32(wh, 16));
                const __m512 el = _mm512_sub_ps(rl, lo), eh = _mm512_sub_ps(rh, hi); /* exact */
                err = _mm512_fmadd_ps(el, el, _mm512_fmadd_ps(eh, eh, err));
                rounded = _mm512_fmadd_ps(rl, rl, _mm512_fmadd_ps(rh, rh, rounded));
                exact = _mm512_fmadd_ps(lo, lo, _mm512_fmadd_ps(hi, hi, exact));
            }
            /* the level's codes only (padding rows are 0 with half norm +inf) */
            const __mmask16 real = size - k0 >= LANES ? (__mmask16)0xFFFF
                                   : size > k0       ? (__mmask16)((1u << (size - k0)) - 1u)
                                                     : (__mmask16)0;
            const __m512 h = _mm512_maskz_loadu_ps(real, hl + k0);
            /* a NaN or inf anywhere in the real codes: not usable (x - x is 0 only for finite x) */
            const __m512 probe = _mm512_add_ps(_mm512_add_ps(err, rounded), _mm512_add_ps(exact, h));
            if (_mm512_mask_cmp_ps_mask(real, _mm512_sub_ps(probe, probe), _mm512_setzero_ps(), _CMP_NEQ_UQ)) usable = 0;
            beta = _mm512_mask_max_ps(beta, real, beta, err);
            bhat = _mm512_mask_max_ps(bhat, real, bhat, rounded);
            bnorm = _mm512_mask_max_ps(bnorm, real, bnorm, exact);
            hmax = _mm512_mask_max_ps(hmax, real, hmax, h);
        }
        const double gd = (double)dim * 0x1p-24 / (1.0 - (double)dim * 0x1p-24);
        const double widen = (1.0 + 2.0 * gd) * (1.0 + 0x1p-40), floor = (double)dim * 0x1p-126;
        const double b0 = sqrt((double)_mm512_reduce_max_ps(beta) * widen + floor) * (1.0 + 0x1p-40);
        const double b1 = sqrt((double)_mm512_reduce_max_ps(bhat) * widen + floor) * (1.0 + 0x1p-40);
        const double b2 = sqrt((double)_mm512_reduce_max_ps(bnorm) * widen + floor) * (1.0 + 0x1p-40);
        const double hm = (double)_mm512_reduce_max_ps(hmax);
        if (!(b1 <= BF16_MAGNITUDE && b2 <= BF16_MAGNITUDE && hm <= BF16_MAGNITUDE * BF16_MAGNITUDE)) usable = 0;
        double *c = consts + l * BF16_CONSTANTS;
        c[0] = b0, c[1] = b1, c[2] = b2, c[3] = hm, c[4] = usable;
    }
}
#endif

#if BF16_SEARCH
/* The bf16 pairs of ROWS centred rows a (bf16(a) as 16-bit values in order: pair j = (a_2j, a_2j+1), 0 past dim)
 * and each row's certification bound 2 (E + F) (+inf for a row it cannot serve: non-finite or over
 * BF16_MAGNITUDE); the norms in float64, alpha = bf16(a) - a exactly in float32. One AVX-512 pass per row
 * (vcvtneps2bf16 rounds to nearest even; as a scalar loop this was about as costly as the search at K = 256). */
static inline __attribute__((always_inline)) void bf16_rows(float a[ROWS][MAX_DIM], int64_t dim, const double *c,
                                                           uint32_t out[][BF16_PAIRS], double *bound) {
    const double g = (double)(dim + 2) * 0x1p-24 / (1.0 - (double)(dim + 2) * 0x1p-24), eta = 0x1p-126;
    const double beta = c[0], bhat = c[1], bnorm = c[2], hmax = c[3];
    for (int i = 0; i < ROWS; i++) {
        __m512d norm2 = _mm512_setzero_pd(), alpha2 = _mm512_setzero_pd();
        for (int64_t d0 = 0; d0 < dim; d0 += LANES) {
            const __mmask16 m = dim - d0 >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << (dim - d0)) - 1u);
            const __m512 v = _mm512_maskz_loadu_ps(m, a[i] + d0);
            const __m256bh h = _mm512_cvtneps_pbh(v);
            _mm256_storeu_si256((__m256i *)((uint16_t *)out[i] + d0), (__m256i)h);
            const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
            const __m512 e = _mm512_sub_ps(back, v);
            const __m512d vl = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            const __m512d vh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
            const __m512d el = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
            const __m512d eh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
            norm2 = _mm512_fmadd_pd(vl, vl, _mm512_fmadd_pd(vh, vh, norm2));
            alpha2 = _mm512_fmadd_pd(el, el, _mm512_fmadd_pd(eh, eh, alpha2));
        }
        const double up = 1.0 + 0x1p-40;
        const double norm = sqrt(_mm512_reduce_add_pd(norm2)) * up, alpha = sqrt(_mm512_reduce_add_pd(alpha2)) * up;
        if (!(norm <= BF16_MAGNITUDE && alpha <= BF16_MAGNITUDE)) { /* NaN and inf included */
            bound[i] = INFINITY;
            continue;
        }
        const double e = norm * beta + alpha * bhat + g * (hmax + (norm + alpha) * bhat) +
                         eta * (sqrt((double)dim) * (norm + alpha + bhat + 2.0) + 4.0 * (double)dim + 16.0);
        const double f = g * (hmax + norm * bnorm) + (double)(dim + 2) * eta;
        bound[i] = 2.0 * (e + f) * (1.0 + 0x1p-30);
    }
}

/* keep_smaller that also keeps each lane's second smallest score (an equal score counts as a second: a tie is
 * never certified) */
static inline __attribute__((always_inline)) void keep_two(vf s, vi code, vf *best, vf *second, vi *index) {
    __mmask16 better = _mm512_cmp_ps_mask((__m512)s, (__m512)*best, _CMP_LT_OQ);
    *second = (vf)_mm512_min_ps((__m512)*second, _mm512_max_ps((__m512)s, (__m512)*best));
    *best = (vf)_mm512_min_ps((__m512)s, (__m512)*best);
    *index = (vi)_mm512_mask_mov_epi32((__m512i)*index, better, (__m512i)code);
}

/* nearest_rows' bf16 counterpart: for ROWS rows of bf16 pairs rp, among `count` codes (a multiple of LANES) of a
 * level's pairs ([ceil(dim/2)][kstride], from code code0 on), each row's code of the smallest score, that score
 * and the second smallest score. */
static inline __attribute__((always_inline)) void nearest_rows_bf16(uint32_t rp[][BF16_PAIRS], int rows,
                                                                    int64_t dim, const uint32_t *pairs,
                                                                    const float *half, int64_t kstride,
                                                                    int64_t count, int32_t code0, int32_t *best_code,
                                                                    float *best_score, float *second_score) {
    const int64_t npairs = (dim + 1) / 2;
    vi lane;
    for (int j = 0; j < LANES; j++) lane[j] = j;
    vf best[ROWS], second[ROWS];
    vi index[ROWS];
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < LANES; j++) best[i][j] = second[i][j] = INFINITY;
        index[i] = lane * 0;
    }
    int64_t k0 = 0;
    /* two code blocks at a time: 2 ROWS independent chains (vdpbf16ps: 2 a cycle on a Zen 5, 6-cycle latency; with
     * 8 chains 0.67x that rate, measured 2026-12-02) */
    for (; k0 + 2 * LANES <= count; k0 += 2 * LANES) {
        __m512 s[ROWS], t[ROWS];
        __m512 h = _mm512_loadu_ps(half + k0), g = _mm512_loadu_ps(half + k0 + LANES);
        for (int i = 0; i < ROWS; i++) s[i] = h, t[i] = g;
        for (int64_t j = 0; j < npairs; j++) {
            __m512bh c = (__m512bh)_mm512_loadu_si512(pairs + j * kstride + k0);
            __m512bh e = (__m512bh)_mm512_loadu_si512(pairs + j * kstride + k0 + LANES);
            for (int i = 0; i < ROWS; i++) {
                __m512bh row = (__m512bh)_mm512_set1_epi32((int)rp[i][j]);
                s[i] = _mm512_dpbf16_ps(s[i], row, c);
                t[i] = _mm512_dpbf16_ps(t[i], row, e);
            }
        }
        vi code = lane + (code0 + (int32_t)k0), next = code + LANES;
        for (int i = 0; i < ROWS; i++) {
            keep_two((vf)s[i], code, &best[i], &second[i], &index[i]);
            keep_two((vf)t[i], next, &best[i], &second[i], &index[i]);
        }
    }
    for (; k0 < count; k0 += LANES) {
        __m512 s[ROWS];
        __m512 h = _mm512_loadu_ps(half + k0);
        for (int i = 0; i < ROWS; i++) s[i] = h;
        for (int64_t j = 0; j < npairs; j++) {
            __m512bh c = (__m512bh)_mm512_loadu_si512(pairs + j * kstride + k0);
            for (int i = 0; i < ROWS; i++)
                s[i] = _mm512_dpbf16_ps(s[i], (__m512bh)_mm512_set1_epi32((int)rp[i][j]), c);
        }
        vi code = lane + (code0 + (int32_t)k0);
        for (int i = 0; i < ROWS; i++) keep_two((vf)s[i], code, &best[i], &second[i], &index[i]);
    }
    for (int i = 0; i < rows; i++) {
        best_code[i] = merge_lanes(best[i], index[i], &best_score[i]);
        vf others = best[i];
        others[best_code[i] & (LANES - 1)] = INFINITY; /* lane j holds the codes = j mod LANES */
        const float a = _mm512_reduce_min_ps((__m512)second[i]), b = _mm512_reduce_min_ps((__m512)others);
        second_score[i] = a < b ? a : b;
    }
}
#endif

/* Row blocks searched together against each code tile when a level's codes are tiled: each tile of the transposed
 * codebook is read once per group instead of once per row block. */
#define GROUP_BLOCKS 16

/* Greedy residual quantization of rows [row0, row0 + count): for every level l < num_active (and, per row,
 * l < row_levels[n] when row_levels is not NULL) the nearest code c_l of the residual, r <- r - C_l[c_l].
 * Writes codes [n, num_levels] (-1 where skipped; levels >= num_active are left to the caller), when quantized is
 * not NULL quantized [n, dim] = sum_l C_l[c_l], when commit is not NULL commit [n, dim] = sum_l r_{l+1} over the row's levels, and when sqdist
 * is not NULL sqdist [n] = |r|^2 of the row's final residual r = x - quantized, by the direct difference (for one
 * level: sum_d (x_d - e_d)^2, summed in order d = 0 .. dim-1).
 * Code tiles: with kpad > tile (a multiple of 2 LANES) a level's codes are searched tile after tile, for
 * GROUP_BLOCKS row blocks at a time (the transposed codebook of a large K no longer fits the first cache levels,
 * and each row block read all of it); each row keeps the best score and code over the tiles, a later tile winning
 * only with a strictly smaller score, so the result is the untiled one: every code's score is the same
 * instructions either way, and among equal scores the smallest index wins. */
static inline __attribute__((always_inline)) void walk_groups(
    const float *x, int64_t row0, int64_t count, int64_t dim, const float *books, const float *bookt, const float *half,
    const float *mu, int64_t num_levels, int64_t num_codes, int64_t kpad, int64_t step, int64_t group_rows,
    int64_t num_active, const int64_t *row_levels, int64_t *codes, float *quantized, float *commit, float *sqdist,
    float r[][MAX_DIM], float q[][MAX_DIM], float cd[][MAX_DIM], const uint32_t *pairs, const double *consts,
    int64_t *counters) {
    float centred[ROWS][MAX_DIM];
    int64_t levels_of[GROUP_BLOCKS * ROWS];
    int32_t found[GROUP_BLOCKS * ROWS];
    float score[GROUP_BLOCKS * ROWS];
    int32_t tile_code[ROWS];
    float tile_score[ROWS];
#if BF16_SEARCH
    uint32_t row_pairs[GROUP_BLOCKS * ROWS][BF16_PAIRS];
    float second[GROUP_BLOCKS * ROWS], tile_second[ROWS];
    double bound[GROUP_BLOCKS * ROWS];
    int pending[ROWS];
    int64_t searched = 0, researched = 0;
#else
    (void)pairs, (void)consts, (void)counters;
#endif
    for (int64_t g0 = row0; g0 < row0 + count; g0 += group_rows) {
        const int64_t grows = (row0 + count - g0) < group_rows ? (row0 + count - g0) : group_rows;
        const int blocks = (int)((grows + ROWS - 1) / ROWS);
        /* plain copies of whole rows (a per-element select, row < rows ? x : 0, compiles to masked loads, which
         * cost about a third of the whole call at D = 4, K = 128: perf annotate, 2026-12-01); only the first dim
         * columns are ever read, so only they are zeroed (whole-array memsets were a tenth of the call at D = 4) */
        for (int64_t i = 0; i < (int64_t)blocks * ROWS; i++) {
            if (i < grows) {
                memcpy(r[i], x + (g0 + i) * dim, dim * sizeof(float));
                int64_t lv = row_levels ? row_levels[g0 + i] : num_active;
                levels_of[i] = lv < num_active ? (lv > 0 ? lv : 0) : num_active;
            } else {
                memset(r[i], 0, dim * sizeof(float));
                levels_of[i] = 0;
            }
            memset(q[i], 0, dim * sizeof(float));
            memset(cd[i], 0, dim * sizeof(float));
        }
        for (int64_t l = 0; l < num_active; l++) {
            const float *shift = mu + l * dim, *level_bookt = bookt + l * dim * kpad, *level_half = half + l * kpad;
#if BF16_SEARCH
            const int bf16 = pairs != NULL && consts[l * BF16_CONSTANTS + 4] != 0.0;
            const uint32_t *level_pairs = bf16 ? pairs + l * ((dim + 1) / 2) * kpad : NULL;
            for (int b = 0; bf16 && b < blocks; b++) { /* the group's bf16 rows and bounds, once a level */
                const int64_t first = (int64_t)b * ROWS;
                for (int i = 0; i < ROWS; i++)
                    for (int64_t d = 0; d < dim; d++) centred[i][d] = r[first + i][d] - shift[d];
                bf16_rows(centred, dim, consts + l * BF16_CONSTANTS, row_pairs + first, bound + first);
            }
#endif
            for (int64_t t0 = 0; t0 < kpad; t0 += step) {
                const int64_t length = (kpad - t0) < step ? (kpad - t0) : step;
                for (int b = 0; b < blocks; b++) {
                    const int64_t first = (int64_t)b * ROWS;
                    const int rows = (int)((grows - first) < ROWS ? (grows - first) : ROWS);
#if BF16_SEARCH
                    if (bf16) {
                        nearest_rows_bf16(row_pairs + first, rows, dim, level_pairs + t0, level_half + t0, kpad,
                                          length, (int32_t)t0, tile_code, tile_score, tile_second);
                        for (int i = 0; i < rows; i++) {
                            const int64_t n = first + i;
                            if (t0 == 0 || tile_score[i] < score[n]) {
                                second[n] = t0 == 0 || tile_second[i] < score[n] ? tile_second[i] : score[n];
                                score[n] = tile_score[i];
                                found[n] = tile_code[i];
                            } else if (tile_score[i] < second[n]) {
                                second[n] = tile_score[i]; /* an equal score included: then a tie */
                            }
                        }
                        continue;
                    }
#endif
                    for (int i = 0; i < ROWS; i++)
                        for (int64_t d = 0; d < dim; d++) centred[i][d] = r[first + i][d] - shift[d];
                    if (dim <= ROW_LANES_MAX_DIM)
                        nearest_rows_in_lanes(centred, rows, dim, level_bookt + t0, level_half + t0, kpad, length,
                                              (int32_t)t0, tile_code, tile_score);
                    else
                        nearest_rows(centred, rows, dim, level_bookt + t0, level_half + t0, kpad, length,
                                     (int32_t)t0, tile_code, tile_score);
                    for (int i = 0; i < rows; i++) {
                        if (t0 == 0 || tile_score[i] < score[first + i]) {
                            score[first + i] = tile_score[i];
                            found[first + i] = tile_code[i];
                        }
                    }
                }
            }
#if BF16_SEARCH
            if (bf16) {
                /* rows the bf16 pass did not certify: nearest_rows (all tiles) in packs of ROWS */
                int waiting = 0;
                for (int64_t i = 0; i <= grows; i++) {
                    if (i < grows && l < levels_of[i]) {
                        searched++;
                        if (!((double)second[i] - (double)score[i] > bound[i])) pending[waiting++] = (int)i;
                    }
                    if (waiting == ROWS || (i == grows && waiting > 0)) {
                        for (int p = 0; p < ROWS; p++)
                            for (int64_t d = 0; d < dim; d++)
                                centred[p][d] = p < waiting ? r[pending[p]][d] - shift[d] : 0.0f;
                        for (int64_t t0 = 0; t0 < kpad; t0 += step) {
                            const int64_t length = (kpad - t0) < step ? (kpad - t0) : step;
                            nearest_rows(centred, waiting, dim, level_bookt + t0, level_half + t0, kpad, length,
                                         (int32_t)t0, tile_code, tile_score);
                            for (int p = 0; p < waiting; p++) {
                                if (t0 == 0 || tile_score[p] < score[pending[p]]) {
                                    score[pending[p]] = tile_score[p];
                                    found[pending[p]] = tile_code[p];
                                }
                            }
                        }
                        researched += waiting;
                        waiting = 0;
                    }
                }
            }
#endif
            const float *book = books + l * num_codes * dim;
            for (int64_t i = 0; i < grows; i++) {
                int64_t n = g0 + i;
                if (l >= levels_of[i]) {
                    codes[n * num_levels + l] = -1;
                    continue;
                }
                codes[n * num_levels + l] = found[i];
                const float *e = book + (int64_t)found[i] * dim;
                for (int64_t d = 0; d < dim; d++) {
                    r[i][d] -= e[d];
                    q[i][d] += e[d];
                    cd[i][d] += r[i][d];
                }
            }
        }
        for (int64_t i = 0; i < grows; i++) {
            int64_t n = g0 + i;
            if (quantized) memcpy(quantized + n * dim, q[i], dim * sizeof(float));
            if (commit) memcpy(commit + n * dim, cd[i], dim * sizeof(float));
            if (sqdist) {
                float total = 0.0f;
                for (int64_t d = 0; d < dim; d++) total += r[i][d] * r[i][d];
                sqdist[n] = total;
            }
        }
    }
#if BF16_SEARCH
    if (counters && searched > 0) {
        __atomic_fetch_add(&counters[0], searched, __ATOMIC_RELAXED);
        __atomic_fetch_add(&counters[1], researched, __ATOMIC_RELAXED);
    }
#endif
}

/* walk_groups on one row block at a time with its rows on the stack, or, when a level's codes are tiled, on
 * groups of GROUP_BLOCKS row blocks whose rows (3 x GROUP_BLOCKS x ROWS x MAX_DIM floats, 96 KiB) are on the heap:
 * a thread's stack may be small (128 KiB on musl). Untiled if that allocation fails. Two instances, so that the
 * untiled one keeps its arrays on the stack (through pointers into the heap it was 5-17 % slower at D = 4-8). */
static inline __attribute__((always_inline)) void search_walk(
    const float *x, int64_t row0, int64_t count, int64_t dim, const float *books, const float *bookt, const float *half,
    const float *mu, int64_t num_levels, int64_t num_codes, int64_t kpad, int64_t tile, int64_t num_active,
    const int64_t *row_levels, int64_t *codes, float *quantized, float *commit, float *sqdist, const uint32_t *pairs,
    const double *consts, int64_t *counters) {
    /* groups also for the bf16 pass: the rows it leaves are searched again in packs gathered over the group */
    const int tiled = tile > 0 && kpad > tile;
    float (*group)[MAX_DIM] = tiled || pairs ? malloc(3 * sizeof(float[MAX_DIM]) * GROUP_BLOCKS * ROWS) : NULL;
    if (group) {
        walk_groups(x, row0, count, dim, books, bookt, half, mu, num_levels, num_codes, kpad, tiled ? tile : kpad,
                    GROUP_BLOCKS * ROWS, num_active, row_levels, codes, quantized, commit, sqdist, group,
                    group + GROUP_BLOCKS * ROWS, group + 2 * GROUP_BLOCKS * ROWS, pairs, consts, counters);
        free(group);
        return;
    }
    float r[ROWS][MAX_DIM], q[ROWS][MAX_DIM], cd[ROWS][MAX_DIM];
    walk_groups(x, row0, count, dim, books, bookt, half, mu, num_levels, num_codes, kpad, kpad, ROWS, num_active,
                row_levels, codes, quantized, commit, sqdist, r, q, cd, NULL, NULL, NULL);
}

/* search_walk at the compiled widths */
static void search_walk_at_width(const float *x, int64_t row0, int64_t count, int64_t dim, const float *books,
                                 const float *bookt, const float *half, const float *mu, int64_t num_levels,
                                 int64_t num_codes, int64_t kpad, int64_t tile, int64_t num_active,
                                 const int64_t *row_levels, int64_t *codes, float *quantized, float *commit,
                                 float *sqdist, const uint32_t *pairs, const double *consts, int64_t *counters) {
#define WALK(D) search_walk(x, row0, count, D, books, bookt, half, mu, num_levels, num_codes, kpad, tile, num_active, \
                            row_levels, codes, quantized, commit, sqdist, pairs, consts, counters)
    WITH_CONSTANT_DIM(dim, WALK);
#undef WALK
}

void fastrq_search_walk(const float *x, int64_t row0, int64_t count, int64_t dim, const float *books,
                        const float *bookt, const float *half, const float *mu, int64_t num_levels, int64_t num_codes,
                        int64_t kpad, int64_t tile, int64_t num_active, const int64_t *row_levels, int64_t *codes, float *quantized,
                        float *commit, float *sqdist) {
    search_walk_at_width(x, row0, count, dim, books, bookt, half, mu, num_levels, num_codes, kpad, tile, num_active,
                         row_levels, codes, quantized, commit, sqdist, NULL, NULL, NULL);
}

/* fastrq_search_walk over all n rows on `threads` OpenMP threads (sequentially without OpenMP): thread t takes
 * the blocks [B t / T, B (t + 1) / T) of the B = ceil(n / ROWS) row blocks. Every row's result is computed by the
 * same instructions whichever thread runs it, so the outputs do not depend on the thread count.
 * bf16: 0 the float32 search; 1 the certified bf16 first pass (1b) where the build has it (fastrq_bf16_search),
 * on the levels whose codes allow it; the outputs are the same bit for bit. level_sizes [num_levels]: each level's code count; counters (NULL or int64 [2]): the
 * row-levels the bf16 pass searched and those it searched again in float32 are added to them. */
void fastrq_search_walk_parallel(const float *x, int64_t n, int64_t threads, int64_t dim, const float *books,
                                 const float *bookt, const float *half, const float *mu, int64_t num_levels,
                                 int64_t num_codes, int64_t kpad, int64_t tile, int64_t num_active,
                                 const int64_t *row_levels, int64_t *codes, float *quantized, float *commit,
                                 float *sqdist, const int64_t *level_sizes, int64_t bf16, int64_t *counters) {
    int64_t blocks = (n + ROWS - 1) / ROWS;
    if (threads < 1) threads = 1;
    if (threads > blocks) threads = blocks > 0 ? blocks : 1;
    uint32_t *pairs = NULL;
    double *consts = NULL;
    (void)level_sizes; /* read by the bf16 pass only */
    if (BF16_SEARCH && n > 0 && num_active > 0 && bf16) {
        pairs = malloc(sizeof(uint32_t) * (size_t)(num_active * ((dim + 1) / 2) * kpad));
        consts = malloc(sizeof(double) * (size_t)(num_active * BF16_CONSTANTS));
        if (pairs && consts) {
#if BF16_SEARCH
            prepare_bf16(bookt, half, level_sizes, num_active, dim, kpad, pairs, consts, threads);
#endif
        } else { /* no memory: the float32 search */
            free(pairs), free(consts);
            pairs = NULL, consts = NULL;
        }
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(static, 1)
#endif
    for (int64_t t = 0; t < threads; t++) {
        int64_t r0 = blocks * t / threads * ROWS;
        int64_t r1 = blocks * (t + 1) / threads * ROWS;
        if (r1 > n) r1 = n;
        if (r1 > r0)
            search_walk_at_width(x, r0, r1 - r0, dim, books, bookt, half, mu, num_levels, num_codes, kpad, tile,
                                 num_active, row_levels, codes, quantized, commit, sqdist, pairs, consts, counters);
    }
    free(pairs), free(consts);
}

/* nearest_code in one call (its fixed cost is what small N pays): the one-level preparation of codebook [K, dim]
 * into scratch (kpad * (dim + 1) + dim floats, kpad = K rounded up to LANES), then the search of x [n, dim] with
 * codes [n] and the direct-difference sqdist [n]. */
void fastrq_nearest_code(const float *x, int64_t n, int64_t threads, int64_t dim, const float *codebook,
                         int64_t num_codes, int64_t kpad, int64_t tile, float *scratch, int64_t *codes, float *sqdist,
                         int64_t bf16, int64_t *counters) {
    float *bookt = scratch, *half = scratch + dim * kpad, *mu = scratch + (dim + 1) * kpad;
    const int64_t size = num_codes;
    fastrq_prepare_books(codebook, 1, num_codes, dim, &size, kpad, bookt, half, mu);
    fastrq_search_walk_parallel(x, n, threads, dim, codebook, bookt, half, mu, 1, num_codes, kpad, tile, 1, NULL,
                                codes, NULL, NULL, sqdist, &size, bf16, counters);
}

/* One row and level of the walk's reductions (fastrq_statistics): sum += r, r -= e, and |r|^2 returned. Written in
 * 8-wide vectors: the scalar loop (the compiler could not rule out that sums aliases the rows) with one dependent
 * chain of dim double additions took 55 ns a row and level at D = 64 (perf, 2026-12-02). */
static inline __attribute__((always_inline)) double walk_row_statistics(float *restrict r, float *restrict sum,
                                                                        const float *restrict e, int64_t dim) {
    vd8 acc = {0.0};
    int64_t d = 0;
    for (; d + 8 <= dim; d += 8) {
        vf8 rv, sv, ev;
        memcpy(&rv, r + d, sizeof(rv));
        memcpy(&sv, sum + d, sizeof(sv));
        memcpy(&ev, e + d, sizeof(ev));
        sv += rv;
        rv -= ev;
        memcpy(sum + d, &sv, sizeof(sv));
        memcpy(r + d, &rv, sizeof(rv));
        vd8 wide = __builtin_convertvector(rv, vd8);
        acc += wide * wide;
    }
    double err = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; d < dim; d++) {
        sum[d] += r[d];
        r[d] -= e[d];
        err += (double)r[d] * r[d];
    }
    return err;
}

/* The statistics of rows [0, n) of x (and their codes) into sqerr_out (double [num_levels]), counts and sums,
 * which it zeroes first (the errors summed in a local array: runs on other threads write next to sqerr_out). */
static inline __attribute__((always_inline)) void statistics(const float *x, int64_t n, int64_t dim,
                                                             const float *books, int64_t num_levels,
                                                             int64_t num_codes, int64_t num_active,
                                                             const int64_t *codes, double *sqerr_out, float *counts,
                                                             float *sums) {
    double sqerr[num_levels > 0 ? num_levels : 1];
    for (int64_t l = 0; l < num_levels; l++) sqerr[l] = 0.0;
    memset(counts, 0, (size_t)(num_levels * num_codes) * sizeof(float));
    memset(sums, 0, (size_t)(num_levels * num_codes * dim) * sizeof(float));
    float r[MAX_DIM];
    for (int64_t row = 0; row < n; row++) {
        memcpy(r, x + row * dim, dim * sizeof(float));
        for (int64_t l = 0; l < num_active; l++) {
            int64_t c = codes[row * num_levels + l];
            if (c < 0) break;
            float *sum = sums + (l * num_codes + c) * dim;
            const float *e = books + (l * num_codes + c) * dim;
            counts[l * num_codes + c] += 1.0f;
            sqerr[l] += walk_row_statistics(r, sum, e, dim);
        }
    }
    for (int64_t l = 0; l < num_levels; l++) sqerr_out[l] = sqerr[l];
}

/* statistics() of rows [r0, r1) at the compiled widths. */
static void statistics_run(const float *x, int64_t r0, int64_t r1, int64_t dim, const float *books,
                           int64_t num_levels, int64_t num_codes, int64_t num_active, const int64_t *codes,
                           double *sqerr, float *counts, float *sums) {
#define STATS(D) statistics(x + r0 * (D), r1 - r0, D, books, num_levels, num_codes, num_active, \
                            codes + r0 * num_levels, sqerr, counts, sums)
    WITH_CONSTANT_DIM(dim, STATS);
#undef STATS
}

/* Rows per chunk of the statistics, at least (and at least 4 K: each chunk beyond the first costs a merge of its
 * [L, K, D] sums). */
#define STATISTICS_CHUNK_ROWS 2048
#define STATISTICS_MAX_CHUNKS 4

/* How many chunks of rows fastrq_statistics sums separately: a function of the shape only, never of the thread
 * count, so the results are the same on any number of threads. */
int64_t fastrq_statistics_chunks(int64_t n, int64_t num_codes) {
    const int64_t rows = 4 * num_codes > STATISTICS_CHUNK_ROWS ? 4 * num_codes : STATISTICS_CHUNK_ROWS;
    int64_t chunks = n / rows;
    if (chunks < 1) chunks = 1;
    return chunks > STATISTICS_MAX_CHUNKS ? STATISTICS_MAX_CHUNKS : chunks;
}

/* The reductions of the walk (deterministic, whatever the thread count): per level l the squared error left
 * sqerr[l] = sum_n |r_{l+1,n}|^2 (in double; each row's |r|^2 over whole chunks of 8 columns in 8 partial sums,
 * d mod 8, added as a fixed tree, then the remaining columns in order), the counts [L, K] and the sums [L, K, dim]
 * of r_l per code, over the (row, level) pairs with codes >= 0. The rows are cut into fastrq_statistics_chunks
 * equal runs, each summed in row order (on up to `threads` OpenMP threads), then the runs' sums added in run
 * order: 0.57-0.73x the time of the single pass on 2 threads at N = 4,096-65,536 (D = 4-64, 2026-12-02; 1.0-1.1x on
 * one thread; a first version, whose runs summed their errors into adjacent doubles, shared that cache line and
 * gained nothing). scratch: (chunks - 1) * num_levels * num_codes * (dim + 1) floats for the runs after the first. */
void fastrq_statistics(const float *x, int64_t n, int64_t threads, int64_t dim, const float *books,
                       int64_t num_levels, int64_t num_codes, int64_t num_active, const int64_t *codes,
                       float *sqerr_out, float *counts, float *sums, float *scratch) {
    const int64_t chunks = fastrq_statistics_chunks(n, num_codes);
    const int64_t levels = num_levels > 0 ? num_levels : 1, table = num_levels * num_codes;
    double errors[STATISTICS_MAX_CHUNKS][levels];
    if (chunks == 1) { /* no parallel region at all: entering one, even an empty one, costs about a microsecond */
        statistics_run(x, 0, n, dim, books, num_levels, num_codes, num_active, codes, errors[0], counts, sums);
    } else {
        if (threads < 1) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(static, 1) if (threads > 1)
#endif
        for (int64_t c = 0; c < chunks; c++) {
            float *chunk_counts = c == 0 ? counts : scratch + (c - 1) * table * (dim + 1);
            float *chunk_sums = c == 0 ? sums : chunk_counts + table;
            statistics_run(x, n * c / chunks, n * (c + 1) / chunks, dim, books, num_levels, num_codes, num_active,
                           codes, errors[c], chunk_counts, chunk_sums);
        }
        for (int64_t c = 1; c < chunks; c++) { /* elementwise, in run order */
            const float *chunk_counts = scratch + (c - 1) * table * (dim + 1), *chunk_sums = chunk_counts + table;
            for (int64_t i = 0; i < table; i++) counts[i] += chunk_counts[i];
            for (int64_t i = 0; i < table * dim; i++) sums[i] += chunk_sums[i];
        }
    }
    for (int64_t l = 0; l < num_levels; l++) {
        double total = 0.0;
        for (int64_t c = 0; c < chunks; c++) total += errors[c][l];
        sqerr_out[l] = (float)total;
    }
}

/* The EMA codebook step of every stored codebook s < num_stored with active[s] != 0 (fastrq.ops.ema_step):
 *   cluster_size <- decay * cluster_size + (1 - decay) * counts
 *   embed_sum    <- decay * embed_sum    + (1 - decay) * sums
 *   n = sum_k cluster_size;  smoothed = (cluster_size + eps) / (n + K_s * eps) * n
 *   codebook     <- embed_sum / smoothed            (kept as it is when n = 0)
 * in place, over the first level_sizes[s] codes (the padding rows stay as they are). */
void fastrq_ema_update(float *codebooks, float *cluster_size, float *embed_sum, const float *counts,
                       const float *sums, int64_t num_stored, int64_t num_codes, int64_t dim,
                       const int64_t *level_sizes, const uint8_t *active, double decay, double eps) {
    const float keep = (float)decay, take = (float)(1.0 - decay), epsf = (float)eps;
    for (int64_t s = 0; s < num_stored; s++) {
        if (!active[s]) continue;
        const int64_t size = level_sizes[s];
        float *cs = cluster_size + s * num_codes;
        const float *cnt = counts + s * num_codes;
        float total = 0.0f;
        for (int64_t k = 0; k < size; k++) {
            float a = cs[k] * keep, b = cnt[k] * take;
            cs[k] = a + b;
        }
        for (int64_t k = 0; k < size; k++) total += cs[k];
        float *es = embed_sum + s * num_codes * dim;
        const float *sm = sums + s * num_codes * dim;
        float *cb = codebooks + s * num_codes * dim;
        const int refresh = total > 0.0f;
        const float denominator = total + (float)size * epsf;
        /* per code: its embed_sum row, then (n > 0) its codebook row from it, in one pass; elementwise, so the
         * result does not depend on the thread count */
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (size * dim >= (1 << 16))
#endif
        for (int64_t k = 0; k < size; k++) {
            float *e = es + k * dim;
            const float *m = sm + k * dim;
            for (int64_t d = 0; d < dim; d++) {
                float a = e[d] * keep, b = m[d] * take;
                e[d] = a + b;
            }
            if (!refresh) continue;
            float smoothed = (cs[k] + epsf) / denominator * total;
            if (smoothed < 1.17549435e-38f) smoothed = 1.17549435e-38f;
            float *c = cb + k * dim;
            for (int64_t d = 0; d < dim; d++) c[d] = e[d] / smoothed;
        }
    }
}

/* ------------------------------------------------------------------------------------------------------------------
 * The certified bf16 search's row work (fastrq.ops.certified, whose docstring holds the bound and its proof): the
 * augmented bf16 rows before its GEMM, and the candidate selection and exact float32 re-score after it, one pass
 * per row instead of some forty tensor ops per row block.
 * ---------------------------------------------------------------------------------------------------------------- */

/* bf16_bits of LANES values at once, left in the upper halves of float32 patterns (the lower halves zero): the
 * bf16 values themselves when read as float32. */
static inline vu bf16_rounded(vf v) {
    vu bits;
    memcpy(&bits, &v, sizeof(bits));
    vi nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
    vu rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    return (vu)select_i(nan, (vi)(bits * 0u + 0x7FC00000u), (vi)rounded);
}

/* LANES float32 values at src: their bf16 patterns, xor sign (0x8000: those of the negated values, negation being
 * exact), stored at out; returns the values themselves and sets *rounded to bf16(values) as float32. */
static inline vf bf16_store_lanes(const float *src, uint16_t *out, uint32_t sign, vf *rounded) {
    vf v;
    memcpy(&v, src, sizeof(v));
    vu top = bf16_rounded(v);
    memcpy(rounded, &top, sizeof(*rounded));
    vh halves = __builtin_convertvector((top >> 16) ^ sign, vh);
    memcpy(out, &halves, sizeof(halves));
    return v;
}

/* For centred float32 rows a [R, D]: the augmented bf16 rows aug [R, D + 4] = (bf16(a), 1, 1, c, 0) with
 * c = bf16(1/2 fl(sum_d a_d^2)), and terms [R, 3] (float64) = (|a|, |alpha|, c): the norms as float32 computes them,
 * fl(sqrt(fl(sum_d fl(v_d^2)))) in any order, with alpha = bf16(a) - a (exact in float32). */
void fastrq_certified_rows(const float *rows, int64_t num_rows, int64_t dim, uint16_t *aug, double *terms,
                           int64_t threads) {
    if (threads < 1) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(static) if (threads > 1)
#endif
    for (int64_t n = 0; n < num_rows; n++) {
        const float *a = rows + n * dim;
        uint16_t *out = aug + n * (dim + 4);
        /* LANES partial sums (the norms may be summed in any order), the conversion without branches */
        vf squares = {0}, rounding = {0};
        int64_t d = 0;
        for (; d + LANES <= dim; d += LANES) {
            vf b;
            vf v = bf16_store_lanes(a + d, out + d, 0u, &b);
            vf alpha = b - v;
            squares += v * v;
            rounding += alpha * alpha;
        }
        float sq = 0.0f, sr = 0.0f;
        for (int k = 0; k < LANES; k++) {
            sq += squares[k];
            sr += rounding[k];
        }
        for (; d < dim; d++) {
            uint16_t b = bf16_bits(a[d]);
            float alpha = bf16_value(b) - a[d];
            out[d] = b;
            sq += a[d] * a[d];
            sr += alpha * alpha;
        }
        uint16_t constant = bf16_bits(0.5f * sq);
        out[dim] = out[dim + 1] = 0x3F80; /* 1.0 */
        out[dim + 2] = constant;
        out[dim + 3] = 0;
        terms[n * 3] = (double)sqrtf(sq);
        terms[n * 3 + 1] = (double)sqrtf(sr);
        terms[n * 3 + 2] = (double)bf16_value(constant);
    }
}

/* The sum of the lanes of v, as a tree (any order: the bounds that use it allow it). */
static inline float sum_lanes(vf v) {
#if LANES == 16
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#else
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#endif
    return v[0];
}

/* a . b in float32, summed in LANES partial sums (the re-score's bound holds for any order) */
static inline float dot_any_order(const float *a, const float *b, int64_t dim) {
    vf acc = {0};
    int64_t d = 0;
    for (; d + LANES <= dim; d += LANES) {
        vf u, v;
        memcpy(&u, a + d, sizeof(u));
        memcpy(&v, b + d, sizeof(v));
        acc += u * v;
    }
    float dot = sum_lanes(acc);
    for (; d < dim; d++) dot += a[d] * b[d];
    return dot;
}

#define STRIDE (2 * LANES) /* int16 outputs per vector */

/* The smallest lane of v, as a tree of shuffles. */
static inline int16_t min_lanes_s(vs v) {
    vs w, less;
#define FOLD(...)                                                                                                      \
    w = __builtin_shufflevector(v, v, __VA_ARGS__);                                                                    \
    less = w < v;                                                                                                      \
    v = (less & w) | (~less & v)
#if LANES == 16
    FOLD(16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
         15);
    FOLD(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 24, 25, 26, 27, 28, 29, 30, 31, 16, 17, 18, 19, 20, 21, 22,
         23);
    FOLD(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11, 20, 21, 22, 23, 16, 17, 18, 19, 28, 29, 30, 31, 24, 25, 26,
         27);
    FOLD(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 18, 19, 16, 17, 22, 23, 20, 21, 26, 27, 24, 25, 30, 31, 28,
         29);
    FOLD(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14, 17, 16, 19, 18, 21, 20, 23, 22, 25, 24, 27, 26, 29, 28, 31,
         30);
#else
    FOLD(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    FOLD(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    FOLD(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    FOLD(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#endif
#undef FOLD
    return v[0];
}

/* Bit k set when p[k] <= limit, for the STRIDE outputs at p: one compare into a mask register with AVX-512BW; the
 * portable form otherwise (which compilers vectorise, a little less tightly). */
static inline uint32_t at_most(const int16_t *p, int16_t limit) {
#if defined(__AVX512BW__) && LANES == 16
    __m512i chunk;
    memcpy(&chunk, p, sizeof(chunk));
    return (uint32_t)_mm512_cmple_epi16_mask(chunk, _mm512_set1_epi16(limit));
#else
    vs chunk;
    memcpy(&chunk, p, sizeof(chunk));
    vs passes = chunk <= limit;
    uint32_t mask = 0;
    for (int k = 0; k < STRIDE; k++) mask |= (uint32_t)(passes[k] & 1) << k;
    return mask;
#endif
}

/* After the GEMM: per row n, from its bf16 outputs (stored tile after tile: output of code t*tile + j at
 * store[(t*R + n)*tile + j], read as int16 patterns, whose order is the values' for outputs >= 0; negative outputs,
 * which only rounding makes, sort below every other and are always candidates):
 *   v = the smallest output, W = w0 |a| + w1 |alpha| + w2 c + w3 v + w4 |v| + offset (the weights fold in the bound's
 *   constants), T = W+ (1 + 2^-22) / (1 - u_o) + 2^-140 rounded to float32, then up to a bf16 pattern;
 *   candidates = codes k < num_codes whose pattern is <= T's.
 * One candidate: it is the code. 2 .. max_candidates: re-scored exactly, s_k = half[k] - fl32(a . b_k), the smallest
 * s_k and among equal ones the smallest k. Rows with more, with none, or out of range (|a| > magnitude_limit, T not
 * finite) get status 2: the caller searches them again with the float32 path. counters [3] (+=): re-scored rows,
 * rows left to the exact path, candidates. */
void fastrq_certified_select(const uint16_t *store, int64_t num_rows, int64_t tile, int64_t tiles, int64_t num_codes,
                             const double *terms, const double *weights, double offset, double scale,
                             double magnitude_limit, const float *rows, int64_t dim, const float *centred,
                             const float *half, int64_t max_candidates, int64_t *codes, uint8_t *status,
                             int64_t *counters, int64_t threads) {
    int64_t rescored = 0, exact = 0, candidates = 0;
    enum { MAX_PICK = 130 };
    if (max_candidates > MAX_PICK - 2) max_candidates = MAX_PICK - 2; /* more: the exact path, still correct */
    if (threads < 1) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(static) if (threads > 1) \
    reduction(+ : rescored, exact, candidates)
#endif
    for (int64_t n = 0; n < num_rows; n++) {
        /* pass 1: the row's smallest output v (tails included) */
        vs least;
        for (int k = 0; k < STRIDE; k++) least[k] = INT16_MAX;
        int16_t smallest = INT16_MAX;
        for (int64_t t = 0; t < tiles; t++) {
            const int16_t *p = (const int16_t *)store + (t * num_rows + n) * tile;
            int64_t width = num_codes - t * tile < tile ? num_codes - t * tile : tile;
            int64_t j = 0;
            for (; j + STRIDE <= width; j += STRIDE) {
                vs chunk;
                memcpy(&chunk, p + j, sizeof(chunk));
                vs less = chunk < least;
                least = (less & chunk) | (~less & least);
            }
            for (; j < width; j++) smallest = p[j] < smallest ? p[j] : smallest;
        }
        int16_t lanes_min = min_lanes_s(least);
        smallest = lanes_min < smallest ? lanes_min : smallest;
        double v = (double)bf16_value((uint16_t)smallest);
        const double *term = terms + n * 3;
        double w = weights[0] * term[0] + weights[1] * term[1] + weights[2] * term[2] + weights[3] * v +
                   weights[4] * fabs(v) + offset;
        if (w < 0.0) w = 0.0; /* NaN stays NaN and fails the range check below */
        float t32 = (float)(w * scale + 0x1p-140);
        uint32_t bits;
        memcpy(&bits, &t32, sizeof(bits));
        int32_t limit = (int32_t)((bits + 0xFFFFu) >> 16);
        if (!(term[0] <= magnitude_limit) || limit < 0 || limit >= 0x7F80) {
            status[n] = 2;
            codes[n] = 0;
            exact++;
            continue;
        }
        /* pass 2: the candidates, in increasing code order: per STRIDE outputs a mask of those <= T, its set bits
         * in order; each tile's re-scored exactly as they are found */
        int64_t found = 0, first = 0, best_code = -1;
        float best = INFINITY;
        const float *a = rows + n * dim;
        for (int64_t t = 0; t < tiles && found <= max_candidates; t++) {
            const int16_t *p = (const int16_t *)store + (t * num_rows + n) * tile;
            int64_t width = num_codes - t * tile < tile ? num_codes - t * tile : tile;
            int64_t whole = width - width % STRIDE;
            int64_t picked[MAX_PICK];
            int count = 0;
            for (int64_t j0 = 0; j0 < whole && count <= max_candidates; j0 += STRIDE)
                for (uint32_t mask = at_most(p + j0, (int16_t)limit); mask && count <= max_candidates; mask &= mask - 1)
                    picked[count++] = j0 + __builtin_ctz(mask);
            for (int64_t j = whole; j < width && count <= max_candidates; j++)
                if (p[j] <= limit) picked[count++] = j;
            /* the candidates' float32 rows are scattered over the codebook: request them all before the first
             * dot product, so that their cache misses overlap */
            for (int c = 0; c < count && c <= max_candidates; c++) {
                const char *row = (const char *)(centred + (t * tile + picked[c]) * dim);
                for (int64_t byte = 0; byte < dim * (int64_t)sizeof(float); byte += 64) __builtin_prefetch(row + byte);
            }
            for (int c = 0; c < count; c++) {
                int64_t k = t * tile + picked[c];
                found++;
                if (found == 1) first = k;
                if (found > max_candidates) break;
                float score = half[k] - dot_any_order(a, centred + k * dim, dim);
                if (score < best || best_code < 0) { /* codes ascend: strict < keeps the smallest among ties */
                    best = score;
                    best_code = k;
                }
            }
        }
        candidates += found;
        if (found == 0 || found > max_candidates || best_code < 0) {
            status[n] = 2;
            codes[n] = 0;
            exact++;
        } else if (found == 1) {
            status[n] = 0;
            codes[n] = first;
        } else {
            status[n] = 1;
            codes[n] = best_code;
            rescored++;
        }
    }
    counters[0] += rescored;
    counters[1] += exact;
    counters[2] += candidates;
}

/* The certified search's codebook operands (fastrq.ops.certified.CertifiedLevel) of centred float32 codes b [K, D]
 * with half norms h [K]: aug [padded, D + 4] bf16 = (-bf16(b_k), hi(h_k), lo(h_k), 1, 0) for k < K (hi = bf16(h),
 * lo = bf16(h - hi)) and (0, .., 0, +inf, 0, 0, 0) for the padding codes; constants [5] (float64, before the
 * caller's slack) = (max_k |bf16(b_k) - b_k|, max_k |bf16(b_k)|, max_k |b_k|, max_k h_k, max_k |h_k - hi - lo|). */
void fastrq_certified_codes(const float *codes, const float *half, int64_t num_codes, int64_t dim, int64_t padded,
                            uint16_t *aug, double *constants) {
    double beta = 0.0, bhat = 0.0, bnorm = 0.0, hmax = -INFINITY, hsplit = 0.0;
    int nonfinite = 0;
    const int64_t width = dim + 4;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (num_codes * dim >= (1 << 16)) \
    reduction(max : beta, bhat, bnorm, hmax, hsplit) reduction(| : nonfinite)
#endif
    for (int64_t k = 0; k < num_codes; k++) {
        const float *b = codes + k * dim;
        uint16_t *out = aug + k * width;
        /* float64 sums in LANES / 2 partial sums (any order: the caller's slack covers float64 evaluation); the
         * conversion without branches, LANES codes' coordinates at a time (as fastrq_certified_rows) */
        vd rounding_v = {0}, rounded_v = {0}, exact_v = {0};
        int64_t d = 0;
        for (; d + LANES <= dim; d += LANES) {
            vf r32;
            vf e32 = bf16_store_lanes(b + d, out + d, 0x8000u, &r32); /* -bf16(b) */
#if LANES == 16
#define LOW_HALF 0, 1, 2, 3, 4, 5, 6, 7
#define HIGH_HALF 8, 9, 10, 11, 12, 13, 14, 15
#else
#define LOW_HALF 0, 1, 2, 3
#define HIGH_HALF 4, 5, 6, 7
#endif
            vhf e_lo = __builtin_shufflevector(e32, e32, LOW_HALF);
            vhf e_hi = __builtin_shufflevector(e32, e32, HIGH_HALF);
            vhf r_lo = __builtin_shufflevector(r32, r32, LOW_HALF);
            vhf r_hi = __builtin_shufflevector(r32, r32, HIGH_HALF);
#undef LOW_HALF
#undef HIGH_HALF
            vd e = __builtin_convertvector(e_lo, vd), r = __builtin_convertvector(r_lo, vd);
            rounding_v += (r - e) * (r - e);
            rounded_v += r * r;
            exact_v += e * e;
            e = __builtin_convertvector(e_hi, vd), r = __builtin_convertvector(r_hi, vd);
            rounding_v += (r - e) * (r - e);
            rounded_v += r * r;
            exact_v += e * e;
        }
        double rounding = 0.0, rounded = 0.0, exact = 0.0;
        for (int j = 0; j < LANES / 2; j++) {
            rounding += rounding_v[j];
            rounded += rounded_v[j];
            exact += exact_v[j];
        }
        for (; d < dim; d++) {
            uint16_t bits = bf16_bits(b[d]);
            double r = (double)bf16_value(bits), e = (double)b[d];
            out[d] = bits ^ 0x8000u;
            rounding += (r - e) * (r - e);
            rounded += r * r;
            exact += e * e;
        }
        uint16_t hi = bf16_bits(half[k]);
        uint16_t lo = bf16_bits(half[k] - bf16_value(hi));
        out[dim] = hi;
        out[dim + 1] = lo;
        out[dim + 2] = 0x3F80; /* 1.0 */
        out[dim + 3] = 0;
        double split = fabs((double)half[k] - (double)bf16_value(hi) - (double)bf16_value(lo));
        rounding = sqrt(rounding), rounded = sqrt(rounded), exact = sqrt(exact);
        beta = rounding > beta ? rounding : beta;
        bhat = rounded > bhat ? rounded : bhat;
        bnorm = exact > bnorm ? exact : bnorm;
        hmax = (double)half[k] > hmax ? (double)half[k] : hmax;
        hsplit = split > hsplit ? split : hsplit;
        /* NaN anywhere must reach the caller's validity check (a max reduction would drop it) */
        nonfinite |= rounding != rounding || rounded != rounded || exact != exact || half[k] != half[k];
    }
    if (nonfinite) beta = NAN;
    for (int64_t k = num_codes; k < padded; k++) {
        uint16_t *out = aug + k * width;
        memset(out, 0, (size_t)width * sizeof(uint16_t));
        out[dim] = 0x7F80; /* +inf: the padding codes' output, never a candidate */
    }
    constants[0] = beta;
    constants[1] = bhat;
    constants[2] = bnorm;
    constants[3] = hmax;
    constants[4] = hsplit;
}

/* Row hashes of codebooks viewed as int32 bit patterns [rows, dim]: hashes[r] = sum_d bits[r][d] * weights[d] in
 * wrapping int64 arithmetic, exactly fastrq.ops.codebook_prep.row_hashes. */
void fastrq_row_hashes(const int32_t *bits, int64_t num_rows, int64_t dim, const int64_t *weights, int64_t *hashes) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (num_rows * dim >= (1 << 16))
#endif
    for (int64_t r = 0; r < num_rows; r++) {
        uint64_t total = 0;
        const int32_t *row = bits + r * dim;
        for (int64_t d = 0; d < dim; d++) total += (uint64_t)(int64_t)row[d] * (uint64_t)weights[d];
        hashes[r] = (int64_t)total;
    }
}

/* repeated[l] = 1 when two of the first sizes[l] hashes of level l (hashes [L, K]) are equal: an open-addressing
 * table of 2^b >= 2 K_l slots per level (scratch: at least that many int64). */
void fastrq_repeated_hashes(const int64_t *hashes, int64_t num_levels, int64_t num_codes, const int64_t *sizes,
                            int64_t *scratch, int64_t slots, uint8_t *repeated) {
    for (int64_t l = 0; l < num_levels; l++) {
        const int64_t *h = hashes + l * num_codes;
        uint8_t *used = (uint8_t *)(scratch + slots);
        memset(used, 0, (size_t)slots);
        repeated[l] = 0;
        for (int64_t k = 0; k < sizes[l] && !repeated[l]; k++) {
            uint64_t slot = ((uint64_t)h[k] * 0x9E3779B97F4A7C15ull) >> 32;
            for (;; slot++) {
                slot &= (uint64_t)(slots - 1);
                if (!used[slot]) {
                    used[slot] = 1;
                    scratch[slot] = h[k];
                    break;
                }
                if (scratch[slot] == h[k]) {
                    repeated[l] = 1;
                    break;
                }
            }
        }
    }
}

/* fastrq.ops.counter_random's hash, bit for bit: z = splitmix64(key * 0x2545F491 + stream), then for position p
 * out[p] = (splitmix64(z + p * 0x632BE5AB) & (2^62 - 1)) % high (high >= 1), in wrapping 64-bit arithmetic. */
static inline uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fastrq_hash_uniform_int(int64_t key, int64_t stream, int64_t count, int64_t high, int64_t *out) {
    uint64_t z = splitmix64((uint64_t)key * 0x2545F491ull + (uint64_t)stream);
    for (int64_t p = 0; p < count; p++) {
        uint64_t h = splitmix64(z + (uint64_t)p * 0x632BE5ABull) & ((1ull << 62) - 1);
        out[p] = (int64_t)(h % (uint64_t)high);
    }
}

/* Dead-code replacement candidates, fastrq.ops.codebook_state._dead_code_candidates bit for bit: for stored
 * codebook s and code k, the residual at level s (shared codebook: at a random level below num_active) of the
 * draw-th row that took part (codes[r * codes_stride] >= 0), draw = hash_uniform_int(key, stream + 2 s, K,
 * max(valid, 1))[k], computed with the codebooks given (the pre-update ones); skipped levels of a row (code -1)
 * subtract code 0, as the tensor version's clamp does. x rows are x_stride floats apart (a group's columns of a
 * wider x), codes rows codes_stride apart, with the group's levels (at least num_active - 1 of a shared codebook's,
 * num_stored otherwise); cands [num_stored, num_codes, dim]; valid_rows: scratch of n int64. Returns the number of
 * rows that took part (with none, every candidate is the last row's residual, as searchsorted + clamp give, and
 * the caller replaces nothing; with n = 0, zeros). */
int64_t fastrq_dead_code_candidates(const float *x, int64_t n, int64_t dim, int64_t x_stride, const float *books,
                                    int64_t num_stored, int64_t num_codes, const int64_t *codes, int64_t codes_stride,
                                    int64_t num_active, int64_t shared, int64_t key, int64_t stream,
                                    int64_t *valid_rows, float *cands) {
    if (n <= 0) { /* no row: zeros, as the tensor version gives */
        memset(cands, 0, (size_t)(num_stored * num_codes * dim) * sizeof(float));
        return 0;
    }
    int64_t valid = 0;
    for (int64_t r = 0; r < n; r++)
        if (codes[r * codes_stride] >= 0) valid_rows[valid++] = r;
    const uint64_t high = valid > 0 ? (uint64_t)valid : 1u, level_high = num_active > 0 ? (uint64_t)num_active : 1u;
    const uint64_t low62 = (1ull << 62) - 1;
    for (int64_t st = 0; st < num_stored; st++) {
        const uint64_t z_row = splitmix64((uint64_t)key * 0x2545F491ull + (uint64_t)(stream + 2 * st));
        const uint64_t z_level = splitmix64((uint64_t)key * 0x2545F491ull + (uint64_t)(stream + 2 * st + 1));
        for (int64_t k = 0; k < num_codes; k++) {
            const uint64_t draw = (splitmix64(z_row + (uint64_t)k * 0x632BE5ABull) & low62) % high;
            const int64_t row = valid > 0 ? valid_rows[draw] : n - 1;
            float *out = cands + (st * num_codes + k) * dim;
            memcpy(out, x + row * x_stride, dim * sizeof(float));
            const int64_t *row_codes = codes + row * codes_stride;
            int64_t below;
            if (shared) {
                const int64_t level_of = (int64_t)((splitmix64(z_level + (uint64_t)k * 0x632BE5ABull) & low62) % level_high);
                below = level_of < num_active - 1 ? level_of : num_active - 1;
            } else {
                below = st < num_active ? st : num_active;
            }
            for (int64_t l = 0; l < below; l++) {
                const int64_t code = row_codes[l] > 0 ? row_codes[l] : 0;
                const float *e = books + ((shared ? 0 : l) * num_codes + code) * dim;
                for (int64_t d = 0; d < dim; d++) out[d] -= e[d];
            }
        }
    }
    return valid;
}

/* The restart after the EMA step, in place (fastrq.ops.codebook_state.codebook_update_): every code k < sizes[s]
 * of an active stored codebook s whose cluster size is below the threshold (NaN never is) takes its candidate:
 * codebook row = cand, cluster_size = threshold, embed_sum row (when not NULL) = cand * threshold. */
void fastrq_restart_dead(float *codebooks, float *cluster_size, float *embed_sum, const float *cands,
                         int64_t num_stored, int64_t num_codes, int64_t dim, const int64_t *level_sizes,
                         const uint8_t *active, double threshold) {
    const float limit = (float)threshold;
    for (int64_t s = 0; s < num_stored; s++) {
        if (!active[s]) continue;
        for (int64_t k = 0; k < level_sizes[s]; k++) {
            float *cs = cluster_size + s * num_codes + k;
            if (!(*cs < limit)) continue;
            const int64_t at = (s * num_codes + k) * dim;
            *cs = limit;
            memcpy(codebooks + at, cands + at, dim * sizeof(float));
            if (embed_sum)
                for (int64_t d = 0; d < dim; d++) embed_sum[at + d] = cands[at + d] * limit;
        }
    }
}

/* One EMA training step of a quantizer whose L levels have their own stored codebooks (not shared), in one call
 * (fastrq.ops.codebook_state.training_step_): the search and walk of fastrq_search_walk_parallel and the
 * reductions of fastrq_statistics on the codebooks as they are, then, when every level's squared error is finite,
 * the state update of fastrq.ops.codebook_state.codebook_update_: with threshold > 0 the dead-code candidates from
 * the pre-update codebooks (key = rng_state[0] * 7919 + rng_state[1], wrapping), the EMA step of the levels
 * l < num_active, the restart of the codes it leaves below the threshold (when any row took part) and the step
 * counter rng_state[1] + 1; a skipped step changes nothing (the caller's policy raises or advances the counter,
 * as codebook_update_ does). The same calls in the same order as the tensor-op path's native
 * pieces, so the state is bitwise what that path gives; its Python between them (about 150 us a step at N = 1,024,
 * 2026-12-02) is what this saves. prepared: num_active * (dim * kpad + kpad + dim) floats of scratch; valid_rows
 * [max(n, 1)] and cands [L, K, dim] scratch for the restart (unused without it); statistics_scratch: that of
 * fastrq_statistics. Returns 1 when the state was
 * updated, 0 when the step was skipped (non-finite input). */
int64_t fastrq_training_step(const float *x, int64_t n, int64_t threads, int64_t dim, float *codebooks,
                             float *cluster_size, float *embed_sum, int64_t *rng_state, int64_t num_levels,
                             int64_t num_codes, const int64_t *level_sizes, int64_t kpad, int64_t tile,
                             int64_t num_active, const int64_t *row_levels, float *prepared, int64_t *codes,
                             float *quantized, float *commit, float *sqerr, float *counts, float *sums, double decay,
                             double eps, double threshold, int64_t stream, int64_t *valid_rows, float *cands,
                             float *statistics_scratch, int64_t bf16, int64_t *counters) {
    float *bookt = prepared, *half = prepared + num_active * dim * kpad;
    float *mu = half + num_active * kpad;
    fastrq_prepare_books(codebooks, num_active, num_codes, dim, level_sizes, kpad, bookt, half, mu);
    fastrq_search_walk_parallel(x, n, threads, dim, codebooks, bookt, half, mu, num_levels, num_codes, kpad, tile,
                                num_active, row_levels, codes, quantized, commit, NULL, level_sizes, bf16, counters);
    fastrq_statistics(x, n, threads, dim, codebooks, num_levels, num_codes, num_active, codes, sqerr, counts, sums,
                      statistics_scratch);
    int64_t finite = 1;
    for (int64_t l = 0; l < num_levels; l++)
        if (!isfinite(sqerr[l])) finite = 0;
    if (finite) {
        uint8_t active[num_levels > 0 ? num_levels : 1];
        for (int64_t l = 0; l < num_levels; l++) active[l] = l < num_active;
        int64_t took_part = 0;
        if (threshold > 0.0) {
            const int64_t key = (int64_t)((uint64_t)rng_state[0] * 7919u + (uint64_t)rng_state[1]);
            took_part = fastrq_dead_code_candidates(x, n, dim, dim, codebooks, num_levels, num_codes, codes, num_levels,
                                                    num_active, 0, key, stream, valid_rows, cands);
        }
        fastrq_ema_update(codebooks, cluster_size, embed_sum, counts, sums, num_levels, num_codes, dim, level_sizes,
                          active, decay, eps);
        if (threshold > 0.0 && took_part > 0)
            fastrq_restart_dead(codebooks, cluster_size, embed_sum, cands, num_levels, num_codes, dim, level_sizes,
                                active, threshold);
        rng_state[1] = (int64_t)((uint64_t)rng_state[1] + 1u);
    }
    return finite;
}

/* The statistics a training step reports per level l (ResidualQuantizer._stats), into out [4, L] float32:
 *   mse[l]        = sqerr[l] / numel
 *   usage[l]      = #{k : counts[l][k] > 0} / K_l
 *   perplexity[l] = exp(-sum_k p_k log p_k),  p_k = counts[l][k] / max(sum_k counts[l][k], 1)   (in double)
 *   dead[l]       = #{k < K_s : cluster_size[s][k] < threshold}, s = l (s = 0 for a shared codebook, num_stored 1)
 * Eleven tensor ops otherwise (about 100 us a step on this machine, 2026-12-02). */
void fastrq_level_statistics(const float *sqerr, const float *counts, const float *cluster_size, int64_t num_levels,
                             int64_t num_stored, int64_t num_codes, const int64_t *level_sizes, double numel,
                             double threshold, float *out) {
    const float limit = (float)threshold, scale = (float)numel;
    for (int64_t l = 0; l < num_levels; l++) {
        const float *c = counts + l * num_codes;
        double total = 0.0, entropy = 0.0;
        int64_t used = 0;
        for (int64_t k = 0; k < num_codes; k++) {
            total += c[k];
            used += c[k] > 0.0f;
        }
        const double denominator = total > 1.0 ? total : 1.0;
        for (int64_t k = 0; k < num_codes; k++)
            if (c[k] > 0.0f) {
                const double p = c[k] / denominator;
                entropy -= p * log(p);
            }
        const int64_t s = num_stored == 1 ? 0 : l;
        const float *cs = cluster_size + s * num_codes;
        int64_t dead = 0;
        for (int64_t k = 0; k < level_sizes[s]; k++) dead += cs[k] < limit;
        out[l] = sqerr[l] / scale;
        out[num_levels + l] = (float)used / (float)level_sizes[l];
        out[2 * num_levels + l] = (float)exp(entropy);
        out[3 * num_levels + l] = (float)dead;
    }
}

/* One level of the walk for codes found by another search (the GEMM path of the torch backend), over rows
 * r [n, dim] in place: with e = book[codes[i]],
 *   sums[codes[i]] += r_i and counts[codes[i]] += 1   (when sums is not NULL; the statistics of r_l)
 *   r_i -= e;  quantized_i (= or +=) e;  commit_i (= or +=) r_i;  *sqerr += |r_i|^2 (double; when commit is not NULL)
 * where "=" is for the first level (first != 0) and "+=" after it. Every sum in row order, whatever the thread
 * count: the statistics are split by code (thread t adds the rows whose code is in its range, each code's rows still in
 * row order), the row updates by rows, and the squared norms (scratch: n floats) are added up in row order after
 * them. So the results are those of one sequential pass, bit for bit. The codes are split in contiguous ranges
 * (num_codes: the book's rows), not modulo the team: neighbouring counts on one cache line would bounce between
 * the cores on every row (measured: slower than one thread). */
void fastrq_walk_level(const int64_t *codes, int64_t n, int64_t dim, const float *book, int64_t num_codes,
                       float *residual, float *quantized, float *commit, float *sums, float *counts, double *sqerr,
                       int64_t first, float *norms, int64_t threads) {
    if (threads < 1) threads = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads((int)threads) if (threads > 1)
#endif
    {
#ifdef _OPENMP
        const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
#else
        const int64_t team = 1, me = 0;
#endif
        const int64_t low = num_codes * me / team, high = num_codes * (me + 1) / team;
        if (sums)
            for (int64_t i = 0; i < n; i++) {
                const int64_t c = codes[i];
                if (c < low || c >= high) continue;
                float *restrict s = sums + c * dim;
                const float *restrict r = residual + i * dim;
                for (int64_t d = 0; d < dim; d++) s[d] += r[d];
                counts[c] += 1.0f;
            }
#ifdef _OPENMP
#pragma omp barrier
#pragma omp for schedule(static)
#endif
        for (int64_t i = 0; i < n; i++) {
            const float *restrict e = book + codes[i] * dim;
            float *restrict r = residual + i * dim;
            float *restrict q = quantized + i * dim;
            for (int64_t d = 0; d < dim; d++) r[d] -= e[d];
            if (first) memcpy(q, e, (size_t)dim * sizeof(float));
            else for (int64_t d = 0; d < dim; d++) q[d] += e[d];
            if (commit) {
                float *restrict c = commit + i * dim;
                if (first) memcpy(c, r, (size_t)dim * sizeof(float));
                else for (int64_t d = 0; d < dim; d++) c[d] += r[d];
                norms[i] = dot_any_order(r, r, dim); /* each row in float32 partial sums, rows in float64 */
            }
        }
    }
    if (commit) {
        double total = 0.0;
        for (int64_t i = 0; i < n; i++) total += (double)norms[i];
        *sqerr += total;
    }
}

/* The torch backend's codebook preparation (fastrq.ops.torch_backend.PreparedLevels) for float32 codebooks
 * [L, K, D], level l using its first sizes[l] codes: the shift mu_l (centring_shift), the half norms
 * half[l][k] = 1/2 fl(sum_d (C_l[k] - mu_l)^2) for k < K_l, +inf beyond (padding codes are never chosen), and, only
 * when some level's shift is not 0, the centred codes centred[l][k] = C_l[k] - mu_l of every level and k < K (else
 * centred is not written: the caller uses the codebooks themselves, C - 0 = C, and touches no new memory).
 * Returns the number of shifted levels, or -1 when a level's scratch could not be allocated (nothing is used). */
int64_t fastrq_prepare_centred(const float *books, int64_t num_levels, int64_t num_codes, int64_t dim,
                               const int64_t *level_sizes, float *centred, float *half, float *shifts) {
    int64_t failed = 0, shifted = 0;
    const int parallel = num_levels > 1 && num_codes * dim >= (1 << 15);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (parallel) reduction(| : failed) reduction(+ : shifted)
#endif
    for (int64_t l = 0; l < num_levels; l++) {
        /* per-level scratch on the heap: D is unbounded here and OpenMP threads have small stacks */
        double *total = malloc((size_t)(dim > 0 ? dim : 1) * (sizeof(double) + sizeof(float)));
        if (!total) {
            failed = 1;
            continue;
        }
        float *shift = shifts + l * dim;
        centring_shift(books + l * num_codes * dim, level_sizes[l], dim, total, (float *)(total + dim), shift);
        free(total);
        for (int64_t d = 0; d < dim; d++)
            if (shift[d] != 0.0f) { /* -0 counts as 0, as the Python rule's shifts.ne(0) */
                shifted++;
                break;
            }
    }
    if (failed) return -1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (parallel)
#endif
    for (int64_t l = 0; l < num_levels; l++) {
        const float *restrict book = books + l * num_codes * dim;
        const float *restrict mu = shifts + l * dim;
        float *restrict out = centred + l * num_codes * dim;
        float *restrict norm = half + l * num_codes;
        const int64_t size = level_sizes[l];
        for (int64_t k = 0; k < num_codes; k++) {
            const float *row = book + k * dim;
            if (shifted) {
                for (int64_t d = 0; d < dim; d++) out[k * dim + d] = row[d] - mu[d];
                row = out + k * dim;
            }
            /* any summation order: both searches read these same half norms */
            float sq = dot_any_order(row, row, dim);
            norm[k] = k < size ? 0.5f * sq : INFINITY;
        }
    }
    return shifted;
}
