/* Fused nearest-code search and residual quantization for small D on the CPU (float32).
 *
 * The CPU counterpart of the Triton search kernel, for the sizes a training step has (N of 1k-100k rows, D <= 32):
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
 * Layout: codes of a level are scored 16 at a time (LANES, one AVX-512 register) for ROWS rows at once (each
 * codebook load serves ROWS rows); lane j of code block b holds code 16b + j, and each lane keeps its own running
 * (min, argmin); the lanes are merged at the end of the level (min value, then the smallest index among equal ones).
 * Codes at or beyond a level's size are +inf in the transposed codebook and never win.
 *
 * Threads: fastrq_search_walk_parallel splits the rows into equal runs of whole ROWS-row blocks, one per OpenMP
 * thread. Built with -fopenmp, this library links libgomp.so.1 by soname, so inside a PyTorch process it shares
 * torch's own OpenMP runtime and thread team: the threads a torch op just used (and that spin for a while after it)
 * run the search, instead of competing with it for the cores. Without OpenMP the caller splits rows across Python
 * threads (each ctypes call releases the GIL). The reductions (EMA statistics, per-level errors) run in one
 * sequential pass in row order, so every result is deterministic and independent of the thread count.
 * Written with GCC/Clang vector extensions (compiled with -march=native: AVX-512 where the CPU has it, else
 * AVX2 / SSE / NEON), no intrinsics.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 16
#define ROWS 8
#define MAX_DIM 32

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline vf select_f(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vi select_i(vi mask, vi a, vi b) { return (a & mask) | (b & ~mask); }

int fastrq_lanes(void) { return LANES; }
int fastrq_max_dim(void) { return MAX_DIM; }
#ifdef _OPENMP
int fastrq_openmp(void) { return 1; }
#else
int fastrq_openmp(void) { return 0; }
#endif

/* Per level l (K_l = level_sizes[l] codes): the shift mu[l][d], the centred transposed codes
 * bookt[l][d][k] = books[l][k][d] - mu[l][d] and half[l][k] = 1/2 |books[l][k] - mu[l]|^2 for k < K_l; for k in
 * [K_l, kpad) the codes are 0 and the half norms +inf (never chosen). */
void fastrq_prepare_books(const float *books, int64_t num_levels, int64_t num_codes, int64_t dim,
                          const int64_t *level_sizes, int64_t kpad, float *bookt, float *half, float *mu) {
    for (int64_t l = 0; l < num_levels; l++) {
        const float *book = books + l * num_codes * dim;
        const int64_t size = level_sizes[l];
        float *out = bookt + l * dim * kpad;
        float *shift = mu + l * dim;
        float *norm = half + l * kpad;
        /* the mean in float32 (as torch's mean), then the spread max |e - mean|; loops run along memory (row by row,
         * and the transposed output d by d: a stride of kpad floats between stores thrashes the L1 cache's sets) */
        float spread = 0.0f;
        float mean[MAX_DIM];
        double total[MAX_DIM];
        for (int64_t d = 0; d < dim; d++) total[d] = 0.0;
        for (int64_t k = 0; k < size; k++)
            for (int64_t d = 0; d < dim; d++) total[d] += book[k * dim + d];
        for (int64_t d = 0; d < dim; d++) mean[d] = (float)(total[d] / (double)size);
        for (int64_t k = 0; k < size; k++)
            for (int64_t d = 0; d < dim; d++) {
                float dev = fabsf(book[k * dim + d] - mean[d]);
                if (dev > spread) spread = dev;
            }
        if (spread > 0.0f) {
            float step = exp2f(floorf(log2f(spread)));
            for (int64_t d = 0; d < dim; d++) shift[d] = nearbyintf(mean[d] / step) * step;
        } else {
            for (int64_t d = 0; d < dim; d++) shift[d] = book[d];
        }
        /* half norms summed over d in order 0..dim-1 for every code alike (identical rows, identical scores) */
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
    }
}

/* Nearest code of up to ROWS centred residual rows r[i][d] (i < rows) over one centred transposed level
 * [dim][kpad] with half norms [kpad]. */
static inline __attribute__((always_inline)) void nearest_rows(float r[ROWS][MAX_DIM], int rows, int64_t dim,
                                                               const float *bookt, const float *half, int64_t kpad,
                                                               int32_t *best_code) {
    vi lane;
    for (int j = 0; j < LANES; j++) lane[j] = j;
    vf best[ROWS];
    vi index[ROWS];
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < LANES; j++) best[i][j] = INFINITY;
        index[i] = lane * 0;
    }
    for (int64_t k0 = 0; k0 < kpad; k0 += LANES) {
        vf s[ROWS];
        vf h;
        memcpy(&h, half + k0, sizeof(h));
        for (int i = 0; i < ROWS; i++) s[i] = h;
        for (int64_t d = 0; d < dim; d++) {
            vf c;
            memcpy(&c, bookt + d * kpad + k0, sizeof(c));
            for (int i = 0; i < ROWS; i++) s[i] -= r[i][d] * c;
        }
        vi code = lane + (int32_t)k0;
        for (int i = 0; i < ROWS; i++) {
            vi better = s[i] < best[i]; /* strict: a later code with an equal score never wins its lane */
            best[i] = select_f(better, s[i], best[i]);
            index[i] = select_i(better, code, index[i]);
        }
    }
    for (int i = 0; i < rows; i++) {
        float value = INFINITY;
        int32_t code = 0;
        for (int j = 0; j < LANES; j++) {
            if (best[i][j] < value || (best[i][j] == value && index[i][j] < code)) {
                value = best[i][j];
                code = index[i][j];
            }
        }
        best_code[i] = code;
    }
}

/* Greedy residual quantization of rows [row0, row0 + count): for every level l < num_active (and, per row,
 * l < row_levels[n] when row_levels is not NULL) the nearest code c_l of the residual, r <- r - C_l[c_l].
 * Writes codes [n, num_levels] (-1 where skipped; levels >= num_active are left to the caller), quantized [n, dim]
 * = sum_l C_l[c_l], when commit is not NULL commit [n, dim] = sum_l r_{l+1} over the row's levels, and when sqdist
 * is not NULL sqdist [n] = |r|^2 of the row's final residual r = x - quantized, by the direct difference (for one
 * level: sum_d (x_d - e_d)^2, summed in order d = 0 .. dim-1). */
static inline __attribute__((always_inline)) void search_walk(
    const float *x, int64_t row0, int64_t count, int64_t dim, const float *books, const float *bookt, const float *half,
    const float *mu, int64_t num_levels, int64_t num_codes, int64_t kpad, int64_t num_active, const int64_t *row_levels,
    int64_t *codes, float *quantized, float *commit, float *sqdist) {
    float r[ROWS][MAX_DIM];
    float centred[ROWS][MAX_DIM];
    float q[ROWS][MAX_DIM];
    float cd[ROWS][MAX_DIM];
    int32_t found[ROWS];
    for (int64_t b0 = row0; b0 < row0 + count; b0 += ROWS) {
        int rows = (int)((row0 + count - b0) < ROWS ? (row0 + count - b0) : ROWS);
        int64_t levels_of[ROWS];
        /* plain copies: a per-element select (row < rows ? x : 0) compiles to masked loads, which cost about a third
         * of the whole call at D = 4, K = 128 (perf annotate, 2026-12-01) */
        memset(r, 0, sizeof(r));
        memset(q, 0, sizeof(q));
        memset(cd, 0, sizeof(cd));
        for (int i = 0; i < rows; i++) {
            memcpy(r[i], x + (b0 + i) * dim, dim * sizeof(float));
            int64_t lv = row_levels ? row_levels[b0 + i] : num_active;
            levels_of[i] = lv < num_active ? (lv > 0 ? lv : 0) : num_active;
        }
        for (int i = rows; i < ROWS; i++) levels_of[i] = 0;
        for (int64_t l = 0; l < num_active; l++) {
            const float *shift = mu + l * dim;
            for (int i = 0; i < ROWS; i++)
                for (int64_t d = 0; d < dim; d++) centred[i][d] = r[i][d] - shift[d];
            nearest_rows(centred, rows, dim, bookt + l * dim * kpad, half + l * kpad, kpad, found);
            const float *book = books + l * num_codes * dim;
            for (int i = 0; i < rows; i++) {
                int64_t n = b0 + i;
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
        for (int i = 0; i < rows; i++) {
            int64_t n = b0 + i;
            memcpy(quantized + n * dim, q[i], dim * sizeof(float));
            if (commit) memcpy(commit + n * dim, cd[i], dim * sizeof(float));
            if (sqdist) {
                float total = 0.0f;
                for (int64_t d = 0; d < dim; d++) total += r[i][d] * r[i][d];
                sqdist[n] = total;
            }
        }
    }
}

void fastrq_search_walk(const float *x, int64_t row0, int64_t count, int64_t dim, const float *books,
                        const float *bookt, const float *half, const float *mu, int64_t num_levels, int64_t num_codes,
                        int64_t kpad, int64_t num_active, const int64_t *row_levels, int64_t *codes, float *quantized,
                        float *commit, float *sqdist) {
    /* the usual widths with D a compile-time constant (unrolled d loops: 20-30 % faster at D = 4), any other D
     * through the generic body; the same instructions per row either way, so results do not depend on the branch */
#define WALK(D) search_walk(x, row0, count, D, books, bookt, half, mu, num_levels, num_codes, kpad, num_active, \
                            row_levels, codes, quantized, commit, sqdist)
    switch (dim) {
    case 4: WALK(4); break;
    case 8: WALK(8); break;
    case 16: WALK(16); break;
    case 32: WALK(32); break;
    default: WALK(dim); break;
    }
#undef WALK
}

/* fastrq_search_walk over all n rows on `threads` OpenMP threads (sequentially without OpenMP): thread t takes
 * the blocks [B t / T, B (t + 1) / T) of the B = ceil(n / ROWS) row blocks. Every row's result is computed by the
 * same instructions whichever thread runs it, so the outputs do not depend on the thread count. */
void fastrq_search_walk_parallel(const float *x, int64_t n, int64_t threads, int64_t dim, const float *books,
                                 const float *bookt, const float *half, const float *mu, int64_t num_levels,
                                 int64_t num_codes, int64_t kpad, int64_t num_active, const int64_t *row_levels,
                                 int64_t *codes, float *quantized, float *commit, float *sqdist) {
    int64_t blocks = (n + ROWS - 1) / ROWS;
    if (threads < 1) threads = 1;
    if (threads > blocks) threads = blocks > 0 ? blocks : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(static, 1)
#endif
    for (int64_t t = 0; t < threads; t++) {
        int64_t r0 = blocks * t / threads * ROWS;
        int64_t r1 = blocks * (t + 1) / threads * ROWS;
        if (r1 > n) r1 = n;
        if (r1 > r0)
            fastrq_search_walk(x, r0, r1 - r0, dim, books, bookt, half, mu, num_levels, num_codes, kpad, num_active,
                               row_levels, codes, quantized, commit, sqdist);
    }
}

/* The reductions of the walk, in one sequential pass in row order (deterministic): per level l the squared error
 * left sqerr[l] = sum_n |r_{l+1,n}|^2 (accumulated in double), the counts [L, K] and the sums [L, K, dim] of r_l per
 * code, over the (row, level) pairs with codes >= 0 (counts and sums are zeroed here first). */
static inline __attribute__((always_inline)) void statistics(const float *x, int64_t n, int64_t dim,
                                                             const float *books, int64_t num_levels,
                                                             int64_t num_codes, int64_t num_active,
                                                             const int64_t *codes, float *sqerr_out, float *counts,
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
            double err = 0.0;
            for (int64_t d = 0; d < dim; d++) {
                sum[d] += r[d];
                r[d] -= e[d];
                err += (double)r[d] * r[d];
            }
            counts[l * num_codes + c] += 1.0f;
            sqerr[l] += err;
        }
    }
    for (int64_t l = 0; l < num_levels; l++) sqerr_out[l] = (float)sqerr[l];
}

void fastrq_statistics(const float *x, int64_t n, int64_t dim, const float *books, int64_t num_levels,
                       int64_t num_codes, int64_t num_active, const int64_t *codes, float *sqerr_out, float *counts,
                       float *sums) {
#define STATS(D) statistics(x, n, D, books, num_levels, num_codes, num_active, codes, sqerr_out, counts, sums)
    switch (dim) { /* as fastrq_search_walk: constant D for the usual widths, same arithmetic */
    case 4: STATS(4); break;
    case 8: STATS(8); break;
    case 16: STATS(16); break;
    case 32: STATS(32); break;
    default: STATS(dim); break;
    }
#undef STATS
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
        for (int64_t i = 0; i < size * dim; i++) {
            float a = es[i] * keep, b = sm[i] * take;
            es[i] = a + b;
        }
        if (!(total > 0.0f)) continue;
        const float denominator = total + (float)size * epsf;
        float *cb = codebooks + s * num_codes * dim;
        for (int64_t k = 0; k < size; k++) {
            float smoothed = (cs[k] + epsf) / denominator * total;
            if (smoothed < 1.17549435e-38f) smoothed = 1.17549435e-38f;
            for (int64_t d = 0; d < dim; d++) cb[k * dim + d] = es[k * dim + d] / smoothed;
        }
    }
}
