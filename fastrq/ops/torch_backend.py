"""The fast pure-PyTorch backend: tiled, memory-bounded, runs on any device torch runs on.

Nearest-code search (the hot loop of every op) works on row blocks × code blocks:

    scores[n, k] = ½‖e_k − μ‖² − (x_n − μ)·(e_k − μ)        (= ½‖x_n − e_k‖² − ½‖x_n − μ‖²)

one ``addmm`` per tile into a reused buffer, then a row-wise ``min`` (:func:`block_argmin`) merged into a running
(min, argmin) with a strict ``<`` over code blocks in increasing order, so among equal scores the smallest index wins.
μ, about the codebook mean (:func:`fastrq.ops.codebook_prep.centring_shifts`), is subtracted from both sides
(distances are translation-invariant): without it the expansion loses every significant digit for data with a large
common offset (x, e ≈ 1000 + N(0, 1)). When μ rounds to 0 (zero-mean codebooks, most residual levels) nothing is
subtracted or copied. ‖x‖² is argmin-irrelevant and never added; nothing is clamped.

Exact ties between duplicate codebook rows are settled independently of rounding: each row is mapped to the
first row equal to it, so a duplicate never beats its earlier twin.

On the CPU with float32 data and D ≤ 32 (D ≤ 64 with K ≤ 1,024: :func:`fastrq.kernels.cpu.launch.available`) the
whole pass (every level's search and walk, and the training statistics) runs in the native kernel of
:mod:`fastrq.kernels.cpu` when it builds here (``FASTRQ_CPU_KERNEL``: ``auto`` default, ``0`` off). Without it, with D ≤ ``FAISS_MAX_DIM`` and faiss importable, the search calls faiss'
exact ``knn`` with k = 1, whose fused register-blocked kernel is far faster than a GEMM at small D. faiss only uses that
kernel when ``nx · d ≥ faiss.cvar.distance_compute_blas_threshold`` (otherwise a sequential one, 7× slower per
pair), so the call sets the threshold to 0 for its own duration and restores it (with faiss' thread count) under a
lock: the global belongs to the caller's faiss too. ``FASTRQ_FAISS`` chooses: ``auto`` (default), ``1`` (always),
``0`` (never: pure PyTorch). The centring and the tie rule above apply to both paths.

Every op prepares its codebooks once per call for all levels together (:class:`PreparedLevels`: shifts, centred
rows, half norms, duplicate tables), and on the CPU reuses the preparation of an unchanged codebook: the cache is
content-addressed by a 64-bit hash of every row's bits, so a codebook changed in place (or through ``.data``) is
never served stale.

``residual_quantize`` and :func:`quantize_for_training` run row blocks outside and levels inside: a block's residual
goes through all L levels while it is in cache (the layout of the fused Triton kernel), instead of L passes over all
N rows; on the faiss path one block holds every row (faiss tiles internally).

Extra memory beyond inputs and outputs: one scores tile of at most ``TILE_ELEMENTS`` (2²⁰) elements (4 MiB in
float32; on a GPU ``GPU_TILE_ELEMENTS``, 2²⁴: 64 MiB), one row block (≤ 2²⁰ / min(K, ``CODE_BLOCK``) rows × D, a few
of them), the centred codebooks (only where μ ≠ 0) and O(N + K) vectors (codes, running minimum); never N×K.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading

import torch

from ..kernels.cpu import launch as cpu_kernels
from . import certified, environment, recycled
from .codebook_prep import centring_shifts, first_equal_rows, first_equal_rows_sync_free, row_hashes

__all__ = [
    "nearest_code",
    "residual_quantize",
    "residual_decode",
    "code_statistics",
    "quantize_for_training",
    "prepare_levels",
    "PreparedLevels",
    "unavailable_reason",
]

# CPU tiles stay cache-sized; on a GPU (torch backend without Triton) fewer, larger launches pay more.
CODE_BLOCK = 1024
TILE_ELEMENTS = 1 << 20
GPU_CODE_BLOCK = 8192
GPU_TILE_ELEMENTS = 1 << 24
SQDIST_ROWS = 8192
# Measured crossover (benchmarks/README.md): faiss' fused small-D kernels are 4.7–12.8× faster than the tiled GEMM
# at D = 4; at D ∈ {64, 256} the tiled GEMM takes 0.7–1.35× faiss' time.
FAISS_MAX_DIM = 32
# Row-wise argmin groups (see block_argmin).
GROUP = 64
# Prepared codebooks kept for reuse (CPU only): one per codebook tensor (its address), validated by content, at most
# PREPARED_PER_SHAPE per shape; entries never reused (a training codebook's: it changes every step) go first.
PREPARED_CACHE_SIZE = 8
PREPARED_PER_SHAPE = 4
# faiss gets one thread per this many (row, code) pairs, at most torch's thread count: a small call runs on the
# calling thread alone (waking faiss' OpenMP pool costs more than it saves there, and its spinning workers steal a
# busy machine's cores from the rest of the step).
FAISS_PAIRS_PER_THREAD = 1 << 21


def unavailable_reason(device: torch.device | None = None) -> str | None:
    return None


# ------------------------------------------------------------------------------------------------ faiss


@functools.lru_cache(maxsize=1)
def _faiss():
    try:
        import faiss  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return faiss


def uses_faiss(device: torch.device, dtype: torch.dtype, dim: int) -> bool:
    """Whether the search of float ``dtype`` vectors of dimension ``dim`` on ``device`` runs on faiss' kernel."""
    mode = environment.get("FASTRQ_FAISS", "auto")
    if mode == "0" or device.type != "cpu" or dtype != torch.float32 or _faiss() is None:
        return False
    return mode == "1" or dim <= FAISS_MAX_DIM


_FAISS_LOCK = threading.Lock()


@contextlib.contextmanager
def _faiss_fused_kernel(faiss, threads: int):
    """faiss' fused k = 1 kernel for every batch size, on ``threads`` threads, for the duration of one call; the
    caller's faiss settings are restored afterwards."""
    with _FAISS_LOCK:
        threshold, old_threads = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
        faiss.cvar.distance_compute_blas_threshold = 0
        faiss.omp_set_num_threads(threads)
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = threshold
            faiss.omp_set_num_threads(old_threads)


def faiss_nearest(rows: torch.Tensor, codebook) -> torch.Tensor:
    """rows [R, D] float32 contiguous (CPU), codebook: a float32 numpy array [K, D] -> codes int64 [R] of the
    nearest row by faiss' exact search; rows faiss cannot place (NaN) get code 0."""
    faiss = _faiss()
    threads = max(1, min(torch.get_num_threads(), rows.shape[0] * codebook.shape[0] // FAISS_PAIRS_PER_THREAD))
    with _faiss_fused_kernel(faiss, threads):
        _, index = faiss.knn(rows.numpy(), codebook, 1)
    return torch.from_numpy(index).view(-1).clamp_(min=0)


# ------------------------------------------------------------------------------------------------ preparation


class PreparedLevels:
    """What the search needs of codebooks ``[L, K, D]`` where level l uses its first ``K_l`` rows, for all levels at
    once (a handful of torch calls, whatever L is).

    Per level l: ``shifts[l]`` μ_l ``[D]`` (:func:`centring_shifts`), ``shifted[l]`` (whether x needs − μ_l; off
    the CPU always True: reading it would be a host sync), ``firsts[l]`` (the first-equal-row table ``[K]``, or
    None when all rows are distinct), and either ``faiss_books[l]`` (the centred rows ``[K_l, D]`` as a numpy
    array, faiss path) or ``centred_t[l]`` = (C_l − μ_l)ᵀ ``[D, K]`` with ``half_norms[l]`` = ½‖C_l[k] − μ_l‖²
    ``[K]`` (+inf at padding rows k ≥ K_l, which are therefore never chosen).
    """

    def __init__(self, codebooks: torch.Tensor, level_sizes: list[int], for_faiss: bool, hashes: torch.Tensor | None):
        num_levels, num_codes, _ = codebooks.shape
        on_cpu = codebooks.device.type == "cpu"
        self.level_sizes = list(level_sizes)
        self.uniform = all(k == num_codes for k in self.level_sizes)
        self.for_faiss = for_faiss
        half_norms = None
        if cpu_kernels.walk_available(codebooks) and codebooks.is_contiguous():  # one native pass per level
            centred, half_norms, shifts = cpu_kernels.prepare_centred(codebooks, self.level_sizes)
        elif self.uniform:
            shifts = centring_shifts(codebooks)
        else:
            shifts = torch.stack([centring_shifts(codebooks[l, :k]) for l, k in enumerate(self.level_sizes)])
        self.shifts = shifts
        self.shifted = shifts.ne(0).any(dim=-1).tolist() if on_cpu else [True] * num_levels
        if half_norms is None:
            centred = codebooks - shifts[:, None, :] if any(self.shifted) else codebooks
        if on_cpu and self.uniform:
            self.firsts = first_equal_rows(codebooks, hashes)
        elif on_cpu:
            self.firsts = [first_equal_rows(codebooks[l : l + 1, :k])[0] for l, k in enumerate(self.level_sizes)]
        else:
            table = first_equal_rows_sync_free(codebooks, hashes)
            self.firsts = list(table.unbind(0))
        if for_faiss:
            self.faiss_books = [centred[l, :k].contiguous().numpy() for l, k in enumerate(self.level_sizes)]
        else:
            if half_norms is None:
                half_norms = 0.5 * centred.square().sum(dim=-1)
                if not self.uniform:
                    padding = torch.arange(num_codes, device=codebooks.device) >= torch.tensor(
                        self.level_sizes, device=codebooks.device
                    )[:, None]
                    half_norms = half_norms.masked_fill(padding, float("inf"))
            self.half_norms = half_norms
            self.centred_t = centred.transpose(1, 2)
            # bf16 operands of the certified search (fastrq.ops.certified), built per level on first use, and how
            # that search fared on each level (prepare_levels hands it on to a re-preparation of the same buffer)
            self.certified = [None] * num_levels
            self.certified_history = [certified.LevelHistory() for _ in range(num_levels)]


_PREPARED: collections.OrderedDict[tuple, list] = collections.OrderedDict()  # key -> [hashes, prepared, reuses]
_PREPARED_LOCK = threading.Lock()


def prepare_levels(codebooks: torch.Tensor, level_sizes: list[int] | None = None, *, dim: int | None = None) -> PreparedLevels:
    """The :class:`PreparedLevels` of codebooks ``[L, K, D]`` (level l searches its first ``level_sizes[l]`` rows;
    default all K). On the CPU an unchanged codebook (the same tensor, or one at the same address, with the same
    shape, dtype and every row's bits) reuses its earlier preparation; codebooks of one shape (a model's
    quantizers, a module and a search on a copy of its codebooks) keep one each, up to ``PREPARED_PER_SHAPE``."""
    num_levels, num_codes, dim = codebooks.shape
    sizes = [num_codes] * num_levels if level_sizes is None else list(level_sizes)
    for_faiss = uses_faiss(codebooks.device, codebooks.dtype, dim)
    if codebooks.device.type != "cpu":
        return PreparedLevels(codebooks, sizes, for_faiss, None)
    hashes = row_hashes(codebooks)
    shape_key = (tuple(codebooks.shape), codebooks.dtype, tuple(sizes), for_faiss)
    key = (shape_key, codebooks.data_ptr())  # a tensor changed in place keeps its entry; the hashes tell if it is stale
    with _PREPARED_LOCK:
        hit = _PREPARED.get(key)
        if hit is not None:
            _PREPARED.move_to_end(key)
    if hit is not None and torch.equal(hit[0], hashes):
        hit[2] += 1
        return hit[1]
    prepared = PreparedLevels(codebooks, sizes, for_faiss, hashes)
    if hit is not None and not for_faiss:  # the same buffer changed (an EMA step): its levels' search history goes on
        prepared.certified_history = hit[1].certified_history
    with _PREPARED_LOCK:
        _PREPARED[key] = [hashes, prepared, 0]
        _PREPARED.move_to_end(key)
        _evict([k for k in _PREPARED if k[0] == shape_key], PREPARED_PER_SHAPE)
        _evict(list(_PREPARED), PREPARED_CACHE_SIZE)
    return prepared


def _evict(keys: list[tuple], keep: int) -> None:
    """Drop entries among ``keys`` (least recently used first) until ``keep`` remain: never reused ones first, but
    not the newest (the last key: it has had no chance to be reused yet)."""
    while len(keys) > keep:
        victim = next((k for k in keys[:-1] if _PREPARED[k][2] == 0), keys[0])
        del _PREPARED[victim]
        keys.remove(victim)


# ------------------------------------------------------------------------------------------------ tiled search


def block_argmin(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise (min, first argmin) of scores [R, C], exactly as ``scores.min(dim=1)`` but faster on the CPU.

    ``min`` with indices runs a scalar loop (10–20× slower than the value-only ``amin``), so when C is a multiple of
    ``GROUP`` the row is cut into groups of GROUP: ``amin`` over each group (vectorised), the first group holding the
    row minimum, that group copied out by ``index_select`` over GROUP-element rows (a memcpy per row; ``gather``
    costs as much as the whole search here), then the first position of the minimum inside it. The result is the
    first index attaining the minimum, so ties still go to the smallest index.
    """
    rows, cols = scores.shape
    if scores.device.type != "cpu" or cols % GROUP or cols < 2 * GROUP:
        return scores.min(dim=1)
    groups = cols // GROUP
    best, group = scores.view(rows, groups, GROUP).amin(dim=2).min(dim=1)
    first_row_of_group = torch.arange(0, rows * groups, groups, device=scores.device) + group
    members = scores.view(rows * groups, GROUP).index_select(0, first_row_of_group)  # [R, GROUP]
    return best, group * GROUP + members.argmin(dim=1)


class TileWorkspace:
    """Reused buffers of the tiled search (no allocation per block): a scores tile [rows, code_block] and a
    centred row block [rows, D]. ``rows`` = the row-block size for this K (``TILE_ELEMENTS`` // code block); on the
    faiss path one block holds every row."""

    def __init__(self, num_rows: int, num_codes: int, dim: int, dtype: torch.dtype, device: torch.device, faiss: bool):
        on_cpu = device.type == "cpu"
        if faiss:
            self.code_block, self.rows, self.scores = num_codes, max(num_rows, 1), None
        else:
            tile_elements = TILE_ELEMENTS if on_cpu else GPU_TILE_ELEMENTS
            self.code_block = min(num_codes, CODE_BLOCK if on_cpu else GPU_CODE_BLOCK)
            self.rows = min(num_rows, max(64, tile_elements // self.code_block))
            self.scores = torch.empty(self.rows * self.code_block, dtype=dtype, device=device)
        self.centred_rows = torch.empty(min(num_rows, self.rows), dim, dtype=dtype, device=device)


def level_codes(rows: torch.Tensor, codebooks: torch.Tensor, prep: PreparedLevels, level: int, work: TileWorkspace) -> torch.Tensor:
    """Codes int64 [R] of the rows [R, D] (R ≤ ``work.rows``, uncentred) at ``level``: the nearest of the level's
    first K_l rows, the smallest index among exact ties."""
    if prep.shifted[level]:
        rows = torch.sub(rows, prep.shifts[level], out=work.centred_rows[: rows.shape[0]])
    if prep.for_faiss:
        codes = faiss_nearest(rows, prep.faiss_books[level])
    else:
        codes = _gemm_codes(rows, prep, level, work)
    first = prep.firsts[level]
    return codes if first is None else first.index_select(0, codes)


def _gemm_codes(rows: torch.Tensor, prep: PreparedLevels, level: int, work: TileWorkspace, exact: bool = False) -> torch.Tensor:
    """argmin_k ½‖e_k − μ‖² − (x − μ)·(e_k − μ) over centred rows: one ``addmm`` per code block into the reused
    tile, merged into a running (min, argmin) with a strict ``<`` over code blocks in increasing order.

    Unless ``exact``, where :func:`fastrq.ops.certified.level_operands` chooses it (``FASTRQ_BF16_SEARCH``), the
    certified bf16 search runs instead and returns the same codes; it calls back here for the rows it cannot
    decide."""
    if not exact:
        operands = certified.level_operands(prep, level, rows.shape[0])
        if operands is not None:
            return certified.certified_codes(rows, operands, lambda subset: _gemm_codes(subset, prep, level, work, exact=True))
    half_norm, centred_t = prep.half_norms[level], prep.centred_t[level]
    num_codes = half_norm.shape[0]
    best_score = best_code = None
    for k0 in range(0, num_codes, work.code_block):
        k1 = min(num_codes, k0 + work.code_block)
        scores = work.scores[: rows.shape[0] * (k1 - k0)].view(rows.shape[0], k1 - k0)
        torch.addmm(half_norm[k0:k1], rows, centred_t[:, k0:k1], beta=1, alpha=-1, out=scores)
        score, code = block_argmin(scores)
        if best_score is None:
            best_score, best_code = score, code
        else:
            better = score < best_score  # strict: an equal score in a later block never wins
            best_score = torch.where(better, score, best_score)
            best_code = torch.where(better, code + k0, best_code)
    if not prep.uniform:  # a non-finite row may "choose" a padding row (all its scores NaN/inf): keep it in range
        best_code = best_code.clamp_(max=prep.level_sizes[level] - 1)
    return best_code


# ------------------------------------------------------------------------------------------------ the contract


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N] = Σ_d (x − codebook[codes])², direct difference)."""
    n = x.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=x.device), x.new_empty(0)
    if cpu_kernels.available(x, x.shape[1], codebook.shape[0]):  # the kernel also returns the direct-difference sqdist
        counters = certified.native_counters(n, x.shape[1], codebook)
        out = cpu_kernels.nearest_code(x, codebook, counters)
        certified.record_native(counters, codebook)
        return out
    codebooks = codebook.unsqueeze(0)
    prep = prepare_levels(codebooks)
    work = TileWorkspace(n, codebook.shape[0], x.shape[1], x.dtype, x.device, prep.for_faiss)
    if work.rows >= n:
        codes = level_codes(x, codebooks, prep, 0, work)
    else:
        codes = torch.empty(n, dtype=torch.long, device=x.device)
        for r0 in range(0, n, work.rows):
            codes[r0 : r0 + work.rows] = level_codes(x[r0 : r0 + work.rows], codebooks, prep, 0, work)
    return codes, _direct_sqdist(x, codebook, codes)


def _direct_sqdist(x: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Σ_d (x − codebook[codes])² by the direct difference, in row chunks."""
    n = x.shape[0]
    if n <= SQDIST_ROWS:
        return (x - codebook.index_select(0, codes)).square_().sum(dim=1)
    sqdist = torch.empty(n, dtype=x.dtype, device=x.device)
    for r0 in range(0, n, SQDIST_ROWS):  # row chunks: the gathered rows stay ≤ SQDIST_ROWS × D
        r1 = r0 + SQDIST_ROWS
        torch.sum((x[r0:r1] - codebook.index_select(0, codes[r0:r1])).square_(), dim=1, out=sqdist[r0:r1])
    return sqdist


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebooks [L, K, D] -> (quantized [N, D] = Σ_l C_l[c_l], codes int64 [N, L]); greedy."""
    quantized, codes, *_ = _residual_pass(x, codebooks, None, codebooks.shape[0], None, training=False)
    return quantized, codes


def quantize_for_training(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None = None,
):
    """The quantizer's forward pass in one walk: greedy codes, quantized rows, per-level errors, the commitment
    gradient direction and the EMA statistics (the contract of :func:`fastrq.ops.training.quantize_for_training`).

    x ``[N, D]``; codebooks ``[L, K, D]``, level l using its first ``level_sizes[l]`` rows; levels ≥ ``num_active``
    skipped, and for row n also levels ≥ ``row_levels[n]`` (0: the row takes no part). Returns ``(quantized [N, D],
    codes int64 [N, L] (−1 where skipped), level_sqerr [L], commit_dir [N, D], counts [L, K], sums [L, K, D])``.
    Deterministic and independent of the thread count: every sum is accumulated in row order (the native kernel: in
    runs of rows fixed by the shape, added in run order).
    """
    return _residual_pass(x, codebooks, level_sizes, num_active, row_levels, training=True)


def quantize_and_update_(x, codebooks, cluster_size, embed_sum, rng_state, level_sizes, num_active, row_levels,
                         decay, eps, dead_code_threshold, stream):
    """:func:`quantize_for_training` and the EMA state update after it in one native call
    (:func:`fastrq.kernels.cpu.launch.training_step_`, the contract of
    :func:`fastrq.ops.training.quantize_and_update_`), or None where that kernel cannot run these tensors."""
    if x.shape[0] == 0 or num_active == 0 or not cpu_kernels.training_step_available(
        x, codebooks, cluster_size, embed_sum, rng_state
    ):
        return None
    counters = certified.native_counters(x.shape[0], x.shape[1], codebooks)
    out = cpu_kernels.training_step_(x, codebooks, cluster_size, embed_sum, rng_state, level_sizes, num_active,
                                     row_levels, decay, eps, dead_code_threshold, stream, counters)
    certified.record_native(counters, codebooks)
    return out


def _residual_pass(x, codebooks, level_sizes, num_active, row_levels, *, training: bool):
    """Greedy codes for levels < num_active and, with ``training``, the walk's outputs (the training contract)."""
    n, dim = x.shape
    if n == 0 or num_active == 0:
        return _padded_outputs(x, codebooks, num_active, [], [], [], None, None, None, training)
    if cpu_kernels.available(x, dim, codebooks.shape[1]):
        counters = certified.native_counters(n, dim, codebooks)
        out = cpu_kernels.residual_pass(x, codebooks, level_sizes, num_active, row_levels, training, counters)
        certified.record_native(counters, codebooks)
        return out
    prep = prepare_levels(codebooks[:num_active], None if level_sizes is None else level_sizes[:num_active])
    work = TileWorkspace(n, codebooks.shape[1], dim, x.dtype, x.device, prep.for_faiss)
    if row_levels is None and cpu_kernels.walk_available(x):
        return _native_walk_pass(x, codebooks, prep, work, num_active, training)
    if work.rows >= n:
        return _single_block_pass(x, codebooks, prep, work, num_active, row_levels, training)
    return _blocked_pass(x, codebooks, prep, work, num_active, row_levels, training)


def _native_walk_pass(x, codebooks, prep, work, num_active, training):
    """Row blocks outside, levels inside (as :func:`_blocked_pass`), each level's search here and its walk and
    statistics in one native call (:func:`fastrq.kernels.cpu.launch.walk_level`: about seven tensor ops per level
    otherwise). Float32 on the CPU, every row taking every active level."""
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    codes = torch.empty(n, num_levels, dtype=torch.long)
    if num_active < num_levels:
        codes[:, num_active:] = -1
    quantized = torch.empty_like(x)
    commit = torch.empty_like(x) if training else None
    sums = _statistics_zeros(x, (num_levels, num_codes, dim)) if training else None
    counts = _statistics_zeros(x, (num_levels, num_codes)) if training else None
    sqerr = torch.zeros(num_levels, dtype=torch.float64) if training else None
    books = [codebooks[level].contiguous() for level in range(num_active)]
    residual_buf = torch.empty(min(n, work.rows), dim, dtype=x.dtype)
    norms = torch.empty(min(n, work.rows), dtype=x.dtype) if training else None  # the walk's per-row scratch
    for r0 in range(0, n, work.rows):
        rows = min(work.rows, n - r0)
        residual = residual_buf[:rows].copy_(x[r0 : r0 + rows])
        block_quantized = quantized[r0 : r0 + rows]
        block_commit = None if commit is None else commit[r0 : r0 + rows]
        for level in range(num_active):
            level_code = level_codes(residual, codebooks, prep, level, work).contiguous()
            cpu_kernels.walk_level(
                level_code, books[level], residual, block_quantized, block_commit,
                None if sums is None else sums[level], None if counts is None else counts[level], sqerr, level,
                first=level == 0, norms=norms,
            )
            codes[r0 : r0 + rows, level] = level_code
    if not training:
        return quantized, codes
    return quantized, codes, sqerr.to(x.dtype), commit, counts, sums


def _statistics_zeros(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero EMA statistics for rows like x: on the CPU from :mod:`fastrq.ops.recycled` (inside a module's step its
    workspace's; a step's large sums otherwise page-fault in and unmap again every call)."""
    return recycled.zeros(shape, x.dtype) if x.device.type == "cpu" else x.new_zeros(shape)


def _level_activity(row_levels: torch.Tensor | None, level: int) -> torch.Tensor | None:
    """[R, 1] bool: which rows take part in ``level`` (None: all of them)."""
    return None if row_levels is None else (row_levels > level)[:, None]


def _single_block_pass(x, codebooks, prep, work, num_active, row_levels, training):
    """All rows in one block (always on the faiss path): no buffers, one tensor op per output and level."""
    num_levels, num_codes, dim = codebooks.shape
    sums = _statistics_zeros(x, (num_levels, num_codes, dim)) if training else None
    residual, quantized, commit_dir = x, None, None
    code_columns, count_rows, sqerr = [], [], []
    for level in range(num_active):
        level_code = level_codes(residual, codebooks, prep, level, work)
        active = _level_activity(row_levels, level)
        if training:
            sums[level].index_add_(0, level_code, residual if active is None else residual * active)
        chosen = codebooks[level].index_select(0, level_code)
        if active is not None:
            chosen = chosen * active
            level_code = level_code.masked_fill(~active[:, 0], -1)
        code_columns.append(level_code)
        residual = residual - chosen
        quantized = chosen if quantized is None else quantized + chosen
        if training:
            left = residual if active is None else residual * active
            commit_dir = left if commit_dir is None else commit_dir + left
            flat = left.reshape(-1)
            sqerr.append(torch.dot(flat, flat))
            count_rows.append(_level_counts(level_code, num_codes, active is not None))
    return _padded_outputs(x, codebooks, num_active, code_columns, sqerr, count_rows, quantized, commit_dir, sums, training)


def _level_counts(level_code: torch.Tensor, num_codes: int, has_skips: bool) -> torch.Tensor:
    if not has_skips:
        return torch.bincount(level_code, minlength=num_codes)
    return torch.bincount(level_code + 1, minlength=num_codes + 1)[1:]  # bin 0 holds the skipped rows (−1)


def _padded_outputs(x, codebooks, num_active, code_columns, sqerr, count_rows, quantized, commit_dir, sums, training):
    """Stack the per-level results and pad the levels that did not run (codes −1, zero errors and statistics)."""
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    if code_columns and num_active == num_levels:
        codes = torch.stack(code_columns, dim=1)
    else:
        codes = torch.full((n, num_levels), -1, dtype=torch.long, device=x.device)
        if code_columns:
            codes[:, :num_active] = torch.stack(code_columns, dim=1)
    if quantized is None:
        quantized = torch.zeros_like(x)
    if not training:
        return quantized, codes
    if commit_dir is None:
        commit_dir = torch.zeros_like(x)
    if sums is None:
        sums = x.new_zeros(num_levels, num_codes, dim)
    if sqerr and num_active == num_levels:
        level_sqerr, counts = torch.stack(sqerr), torch.stack(count_rows).to(x.dtype)
    else:
        level_sqerr, counts = x.new_zeros(num_levels), x.new_zeros(num_levels, num_codes)
        if sqerr:
            level_sqerr[:num_active] = torch.stack(sqerr)
            counts[:num_active] = torch.stack(count_rows)
    return quantized, codes, level_sqerr, commit_dir, counts, sums


def _blocked_pass(x, codebooks, prep, work, num_active, row_levels, training):
    """Row blocks outside, levels inside, into preallocated outputs and reused block buffers."""
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    codes = torch.full((n, num_levels), -1, dtype=torch.long, device=x.device)
    quantized = torch.zeros_like(x)
    commit_dir = torch.zeros_like(x) if training else None
    sums = _statistics_zeros(x, (num_levels, num_codes, dim)) if training else None
    sqerr_parts: list[torch.Tensor] = []
    residual_buf = torch.empty(work.rows, dim, dtype=x.dtype, device=x.device)
    chosen_buf = torch.empty_like(residual_buf)
    for r0 in range(0, n, work.rows):
        block = x[r0 : r0 + work.rows]
        rows = block.shape[0]
        residual = residual_buf[:rows].copy_(block)
        chosen, block_quantized = chosen_buf[:rows], quantized[r0 : r0 + rows]
        block_levels = None if row_levels is None else row_levels[r0 : r0 + rows]
        for level in range(num_active):
            level_code = level_codes(residual, codebooks, prep, level, work)
            active = _level_activity(block_levels, level)
            if training:
                sums[level].index_add_(0, level_code, residual if active is None else residual * active)
            torch.index_select(codebooks[level], 0, level_code, out=chosen)
            if active is not None:
                chosen.mul_(active)
                level_code = level_code.masked_fill(~active[:, 0], -1)
            codes[r0 : r0 + rows, level] = level_code
            residual.sub_(chosen)
            block_quantized.add_(chosen)
            if training:
                left = residual if active is None else residual * active
                commit_dir[r0 : r0 + rows].add_(left)
                flat = left.reshape(-1)
                sqerr_parts.append(torch.dot(flat, flat))
    if not training:
        return quantized, codes
    level_sqerr = x.new_zeros(num_levels)
    level_sqerr[:num_active] = torch.stack(sqerr_parts).view(-1, num_active).sum(dim=0)
    # counts of every level in one bincount: code c of level l goes to bin l·(K + 1) + c + 1 (bin 0 of a level: −1)
    offsets = torch.arange(num_levels, device=x.device) * (num_codes + 1) + 1
    counts = torch.bincount((codes + offsets).view(-1), minlength=num_levels * (num_codes + 1))
    counts = counts.view(num_levels, num_codes + 1)[:, 1:].to(x.dtype)
    return quantized, codes, level_sqerr, commit_dir, counts, sums


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """codes int64 [N, L'] (−1 = skipped), codebooks [L, K, D] -> [N, D]: one gather over the flattened codebooks."""
    n, levels_used = codes.shape
    num_codes, dim = codebooks.shape[1], codebooks.shape[2]
    if n == 0 or levels_used == 0:
        return codebooks.new_zeros(n, dim)
    flat = codebooks[:levels_used].reshape(levels_used * num_codes, dim)
    offsets = torch.arange(levels_used, device=codes.device) * num_codes
    skipped = codes < 0
    rows = flat.index_select(0, (codes.clamp(min=0) + offsets).reshape(-1)).view(n, levels_used, dim)
    return rows.masked_fill(skipped[..., None], 0).sum(dim=1)


def code_statistics(x: torch.Tensor, codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codes int64 [N] -> (counts [K], sums [K, D]) via bincount and index_add_ (deterministic on CPU)."""
    counts = torch.bincount(codes, minlength=codebook_size).to(x.dtype)
    sums = torch.zeros(codebook_size, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, codes, x)
    return counts, sums
