"""Launchers of the native CPU kernels (``rq_cpu.c``), float32 on the CPU: the fused search and walk (D ≤
``SMALL_DIM`` at any K, D ≤ ``MAX_DIM`` with K ≤ ``WIDE_MAX_CODES``: :func:`available`) with its statistics and
EMA step, and (sections below) the certified search's row passes, the GEMM path's codebook preparation and
per-level walk, row hashes, the counter-based draws and the dead-code restart.

:func:`residual_pass` is the search-and-walk of every level in one native call per row chunk, plus (for training)
one sequential native pass for the reductions; it implements the training contract of
:mod:`fastrq.ops.training` and, without the statistics, greedy ``residual_quantize`` / ``nearest_code``.

Threads: up to ``torch.get_num_threads()``, one per ``PAIRS_PER_THREAD`` (row, code, level) triples of the search;
smaller calls run on the calling thread. With OpenMP (the usual build, :mod:`.build`) the rows are split inside the
library on torch's own OpenMP team, whose threads are awake right after any torch op; without it, on Python threads
(ctypes releases the GIL), which then compete with torch's spinning OpenMP workers, so they need larger calls
(``PYTHON_PAIRS_PER_THREAD``). The GEMM path's walk takes one thread per ``WALK_ELEMENTS_PER_THREAD`` row elements
(OpenMP only); its results do not depend on the count.

Buffers: outputs are fresh tensors; the statistics come from :mod:`fastrq.ops.recycled`, which reuses them only
inside a quantizer module's own training step; scratch that lives only inside one native call (prepared codebooks,
the statistics' run tables, restart candidates) from one buffer per thread (:func:`_call_scratch`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading

import torch

from fastrq.ops import recycled

from . import build
from .build import library, loaded_library

__all__ = [
    "available", "residual_pass", "bf16_search_available", "training_step_available", "training_step_",
    "level_statistics", "nearest_code", "can_update", "ema_update_",
    "certified_available", "certified_codes", "certified_rows", "certified_select",
    "walk_available", "walk_level", "prepare_centred", "hashes_available", "row_hashes", "repeated_hashes",
    "hash_uniform_int", "restart_available", "dead_code_candidates", "restart_dead_", "MAX_DIM", "SMALL_DIM",
    "WIDE_MAX_CODES", "PAIRS_PER_THREAD",
]

MAX_DIM = 64
# Above SMALL_DIM the fused kernel runs only for codebooks of at most WIDE_MAX_CODES codes: there it takes 0.25-0.97x
# the GEMM path's time (D = 40 / 64, K = 128-1,024, N = 1,024 / 8,192, 2 threads, 2026-12-02), at K = 2,048
# 1.09-1.30x (the transposed codebook, 512 KiB at D = 64, no longer stays in the first cache levels). At D ≤ 32 it
# runs at any K (D = 32, K = 8,192: 0.82x the GEMM path's time at N = 6,272; D = 16: 0.95x).
SMALL_DIM = 32
WIDE_MAX_CODES = 1024
# Codebooks are padded to multiples of LANES codes and row runs cut at multiples of ROWS rows: multiples of the
# library's own lanes and rows a block, checked where it loads (build.load_built).
LANES, ROWS = build.PAD_CODES, build.PAD_ROWS
# The fused search reads a level's transposed codebook in tiles of about this many bytes (rq_cpu.c's code tiles,
# for GROUP_BLOCKS row blocks at a time) once it is larger: untiled, each row block of 8 rows read the whole of it,
# and of every level, from beyond the first cache levels. Tiles of 32 KiB-1 MiB measured (2026-12-02, 2 threads,
# interleaved): 128 KiB gave 0.67x the untiled time at D = 64, K = 1,024, L = 8, N = 65,536 (eight 256 KiB levels),
# 0.78x at D = 32, K = 8,192, 0.96x at D = 16, K = 4,096, and 0.99-1.04x where the levels fit anyway.
CODE_TILE_BYTES = 1 << 17
WALK_ELEMENTS_PER_THREAD = 1 << 14  # GEMM-path walk, row elements per thread (2 threads: 0.9x one at 2^13, 0.7x at 2^18)
PAIRS_PER_THREAD = 1 << 16  # OpenMP build: waking torch's team costs microseconds (2 threads pay from ~2^16, measured 2026-12-01)
PYTHON_PAIRS_PER_THREAD = 1 << 22  # without OpenMP: a Python thread pool

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
# Scratch that lives only inside one native call (prepared codebooks, the statistics' tables of their runs after
# the first, restart candidates) comes from one buffer per thread, grown as needed and kept up to this size: a
# fresh tensor cost 2-4 us a call here (2026-12-02), a fixed cost that small calls pay in full.
CALL_SCRATCH_MAX_BYTES = 16 << 20
CALL_SCRATCH_LAYOUTS = 256  # remembered layouts of the kept buffer (one per distinct call shape)
_CALL_SCRATCH = threading.local()


def available(x: torch.Tensor, dim: int, num_codes: int) -> bool:
    """Whether the fused search runs rows like ``x`` of dimension ``dim`` against codebooks of ``num_codes`` codes:
    float32 on the CPU, D ≤ ``SMALL_DIM`` at any K or D ≤ ``MAX_DIM`` with K ≤ ``WIDE_MAX_CODES``, and the
    library builds here."""
    return (
        x.is_cpu and x.dtype == torch.float32 and 1 <= dim <= MAX_DIM
        and (dim <= SMALL_DIM or num_codes <= WIDE_MAX_CODES) and library() is not None
    )


@functools.lru_cache(maxsize=64)
def _int_tensor(values: tuple[int, ...], dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A small constant CPU tensor (level sizes, masks), built once per value."""
    return torch.tensor(values, dtype=dtype)


@functools.lru_cache(maxsize=4)
def _openmp(lib) -> bool:
    return bool(lib.fastrq_openmp())


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastrq-cpu")
        return _POOL


def _call_scratch(*sizes: int) -> tuple[torch.Tensor, list[int]]:
    """(buffer, addresses): scratch regions of ``sizes`` 4-byte elements each, 64-byte aligned, for the duration
    of one native call on this thread (the buffer must stay referenced until the call returns). The addresses of
    the kept buffer are remembered per ``sizes`` (computing them cost ~1 µs a call, 2026-12-03)."""
    layouts = getattr(_CALL_SCRATCH, "layouts", None)
    if layouts is not None:
        addresses = layouts.get(sizes)
        if addresses is not None:
            return _CALL_SCRATCH.buffer, addresses
    padded = [-(-size // LANES) * LANES for size in sizes]
    total = sum(padded) + LANES  # + one vector of slack for the alignment
    buffer = getattr(_CALL_SCRATCH, "buffer", None)
    kept = buffer is not None and buffer.numel() >= total
    if not kept:
        buffer = torch.empty(total, dtype=torch.float32)
        kept = total * 4 <= CALL_SCRATCH_MAX_BYTES
        if kept:
            _CALL_SCRATCH.buffer, _CALL_SCRATCH.layouts = buffer, {}
    address = -(-buffer.data_ptr() // 64) * 64
    addresses = []
    for size in padded:
        addresses.append(address)
        address += size * 4
    if kept and len(_CALL_SCRATCH.layouts) < CALL_SCRATCH_LAYOUTS:
        _CALL_SCRATCH.layouts[sizes] = addresses
    return buffer, addresses


def _code_tile(dim: int) -> int:
    """Codes per tile of the fused search at width ``dim``: about ``CODE_TILE_BYTES`` of the transposed codebook, a
    multiple of two SIMD blocks."""
    return _code_tile_of(dim, CODE_TILE_BYTES)


@functools.lru_cache(maxsize=256)
def _code_tile_of(dim: int, tile_bytes: int) -> int:  # remembered: the arithmetic cost ~0.3 µs a call
    return max(2 * LANES, tile_bytes // (4 * dim) // (2 * LANES) * (2 * LANES))


def _prepared_books(lib, books: torch.Tensor, num_active: int, sizes: tuple[int, ...]):
    """The small-D kernel's operands of the first ``num_active`` levels of contiguous codebooks ``[L, K, D]``: one
    scratch tensor (kept alive by the caller) holding the centred transposed codes ``[A, D, kpad]``, half norms
    ``[A, kpad]`` and shifts ``[A, D]``, and (scratch, kpad, their three addresses)."""
    num_codes, dim = books.shape[1], books.shape[2]
    kpad = -(-num_codes // LANES) * LANES
    scratch, (bookt, half, mu) = _call_scratch(num_active * dim * kpad, num_active * kpad, num_active * dim)
    lib.fastrq_prepare_books(books.data_ptr(), num_active, num_codes, dim, _int_tensor(sizes).data_ptr(), kpad, bookt,
                             half, mu)
    return scratch, kpad, bookt, half, mu


def residual_pass(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int] | None,
    num_active: int,
    row_levels: torch.Tensor | None,
    training: bool,
    bf16_counters=None,
):
    """x ``[N, D]`` float32 (CPU), codebooks ``[L, K, D]`` float32, level l using its first ``level_sizes[l]`` rows
    (None: all K), levels ≥ ``num_active`` skipped, per row also levels ≥ ``row_levels[n]``.

    Returns ``(quantized, codes)`` or, with ``training``, ``(quantized, codes, level_sqerr, commit_dir, counts,
    sums)`` as in :mod:`fastrq.ops.training`. The caller has checked :func:`available`. ``bf16_counters``: None,
    or a ctypes int64 pair (:func:`bf16_search_available`): the search then takes the certified bf16 first pass
    (same outputs bit for bit) and adds to it the row-levels that pass searched and those it searched again in
    float32 (with the OpenMP build; without it the float32 search runs)."""
    lib = loaded_library()
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    x = x.contiguous()
    books = codebooks.contiguous()
    sizes = tuple(level_sizes) if level_sizes is not None else (num_codes,) * num_levels
    scratch, kpad, bookt, half, mu = _prepared_books(lib, books, num_active, sizes)
    codes = torch.empty(n, num_levels, dtype=torch.long)
    if num_active < num_levels:
        codes[:, num_active:] = -1
    quantized = torch.empty_like(x)
    commit = torch.empty_like(x) if training else None
    levels = None if row_levels is None else row_levels.to(torch.int64).contiguous()
    args = (
        x.data_ptr(), dim, books.data_ptr(), bookt, half, mu, num_levels, num_codes, kpad, _code_tile(dim), num_active,
        None if levels is None else levels.data_ptr(), codes.data_ptr(), quantized.data_ptr(),
        None if commit is None else commit.data_ptr(), None,
    )
    pairs = n * num_codes * num_active
    if _openmp(lib):
        threads = max(1, min(torch.get_num_threads(), pairs // PAIRS_PER_THREAD))
        lib.fastrq_search_walk_parallel(args[0], n, threads, *args[1:], _int_tensor(sizes).data_ptr(),
                                        int(bf16_counters is not None), bf16_counters)
        return _finish(lib, x, books, codes, quantized, commit, num_levels, num_codes, num_active, training)
    threads = min(torch.get_num_threads(), pairs // PYTHON_PAIRS_PER_THREAD)
    if threads <= 1 or n < 2 * ROWS:
        lib.fastrq_search_walk(args[0], 0, n, *args[1:])
    else:
        per_thread = -(-n // threads)
        chunk = -(-per_thread // ROWS) * ROWS  # whole ROWS-row blocks per thread
        starts = range(0, n, chunk)
        list(_pool(threads).map(lambda r0: lib.fastrq_search_walk(args[0], r0, min(chunk, n - r0), *args[1:]), starts))
    return _finish(lib, x, books, codes, quantized, commit, num_levels, num_codes, num_active, training)


@functools.lru_cache(maxsize=4)
def _bf16_search(lib) -> bool:
    return bool(lib.fastrq_bf16_search())


def bf16_search_available() -> bool:
    """Whether the fused search has its certified bf16 first pass here: the library builds, with AVX512-BF16 (the
    compiler targets this CPU), and with OpenMP (the Python-threads split runs the float32 search)."""
    lib = library()
    return lib is not None and _bf16_search(lib) and _openmp(lib)


def training_step_available(x: torch.Tensor, codebooks: torch.Tensor, cluster_size: torch.Tensor,
                            embed_sum: torch.Tensor, rng_state: torch.Tensor) -> bool:
    """Whether :func:`training_step_` can run this step: :func:`available` and :func:`can_update`, a contiguous
    int64 CPU step counter, and the OpenMP build (without it the search's rows are split across Python threads by
    :func:`residual_pass`, not inside one call)."""
    return (
        available(x, codebooks.shape[2], codebooks.shape[1]) and _updatable(codebooks, cluster_size, embed_sum)
        and rng_state.is_cpu and rng_state.dtype == torch.int64 and rng_state.is_contiguous()
        and _openmp(loaded_library())
    )


def training_step_(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    rng_state: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None,
    decay: float,
    eps: float,
    dead_code_threshold: float,
    stream: int,
    bf16_counters=None,
):
    """:func:`residual_pass` with ``training`` and the state update of
    :func:`fastrq.ops.codebook_state.codebook_update_` that follows it, in one native call: rows x ``[N, D]``
    float32; the EMA state of L levels with their own codebooks, updated in place: codebooks / embed_sum
    ``[L, K, D]``, cluster_size ``[L, K]`` (contiguous float32, :func:`can_update`), rng_state int64 ``[2]``
    (contiguous). Returns ``(quantized, codes, level_sqerr, commit_dir, counts, sums, updated)``, ``updated``
    False when a non-finite squared error left the state as it was (its step counter included). The caller has
    checked :func:`training_step_available`. ``bf16_counters``: as for :func:`residual_pass`."""
    lib = loaded_library()
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    x = x.contiguous()
    kpad = -(-num_codes // LANES) * LANES
    restart = dead_code_threshold > 0
    # the prepared codebooks, the statistics' tables; with restarts the candidates [L, K, D] and the valid rows
    # int64 [max(N, 1)]
    sizes_of = [num_active * (dim * kpad + kpad + dim), _statistics_scratch(lib, n, num_levels, num_codes, dim)]
    if restart:
        sizes_of += [num_levels * num_codes * dim, 2 * max(n, 1)]
    scratch, (prepared, tables, *restart_scratch) = _call_scratch(*sizes_of)
    cands, valid_rows = restart_scratch if restart else (None, None)
    codes = torch.empty(n, num_levels, dtype=torch.long)
    if num_active < num_levels:
        codes[:, num_active:] = -1
    quantized = torch.empty_like(x)
    commit = torch.empty_like(x)
    sqerr = torch.empty(num_levels, dtype=torch.float32)
    counts = recycled.empty((num_levels, num_codes))  # zeroed by the kernel
    sums = recycled.empty((num_levels, num_codes, dim))
    levels = None if row_levels is None else row_levels.to(torch.int64).contiguous()
    sizes = _int_tensor(tuple(level_sizes))
    threads = max(1, min(torch.get_num_threads(), n * num_codes * num_active // PAIRS_PER_THREAD)) if _openmp(lib) else 1
    updated = lib.fastrq_training_step(
        x.data_ptr(), n, threads, dim, codebooks.data_ptr(), cluster_size.data_ptr(), embed_sum.data_ptr(),
        rng_state.data_ptr(), num_levels, num_codes, sizes.data_ptr(), kpad, _code_tile(dim), num_active,
        None if levels is None else levels.data_ptr(), prepared, codes.data_ptr(), quantized.data_ptr(),
        commit.data_ptr(), sqerr.data_ptr(), counts.data_ptr(), sums.data_ptr(), float(decay), float(eps),
        float(dead_code_threshold), stream, valid_rows, cands, tables, int(bf16_counters is not None), bf16_counters,
    )
    return quantized, codes, sqerr, commit, counts, sums, bool(updated)


def level_statistics(level_sqerr: torch.Tensor, counts: torch.Tensor, cluster_size: torch.Tensor,
                     level_sizes: list[int], numel: float, threshold: float) -> torch.Tensor:
    """``[4, L]`` float32: per level the mse (``level_sqerr / numel``), usage (fraction of its K_l codes counted),
    perplexity of the counts and dead codes (stored cluster sizes below ``threshold``; a shared codebook's
    ``cluster_size`` is ``[1, K]``), from level_sqerr ``[L]``, counts ``[L, K]`` and cluster_size ``[S, K]``
    (contiguous float32 CPU tensors; the library builds here)."""
    num_levels, num_codes = counts.shape
    out = torch.empty(4, num_levels, dtype=torch.float32)
    sizes = _int_tensor(tuple(level_sizes))
    library().fastrq_level_statistics(
        level_sqerr.data_ptr(), counts.data_ptr(), cluster_size.data_ptr(), num_levels, cluster_size.shape[0],
        num_codes, sizes.data_ptr(), float(numel), float(threshold), out.data_ptr(),
    )
    return out


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, bf16_counters=None) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[N, D]`` and codebook ``[K, D]`` float32 (CPU, contiguous) → (codes int64 ``[N]``, sqdist ``[N]`` by the
    direct difference): :func:`residual_pass` for one level with only what ``nearest_code`` returns, preparation
    and search in one native call (the fixed cost per call is what small N pays). The caller has checked
    :func:`available`. ``bf16_counters``: as for :func:`residual_pass`."""
    lib = loaded_library()
    n, dim = x.shape
    num_codes = codebook.shape[0]
    kpad = -(-num_codes // LANES) * LANES
    scratch, (prepared,) = _call_scratch(kpad * (dim + 1) + dim)
    codes = torch.empty(n, dtype=torch.long)
    sqdist = torch.empty(n, dtype=torch.float32)
    threads = max(1, min(torch.get_num_threads(), n * num_codes // PAIRS_PER_THREAD)) if _openmp(lib) else 1
    lib.fastrq_nearest_code(x.data_ptr(), n, threads, dim, codebook.data_ptr(), num_codes, kpad, _code_tile(dim),
                            prepared, codes.data_ptr(), sqdist.data_ptr(), int(bf16_counters is not None), bf16_counters)
    return codes, sqdist


def _statistics_scratch(lib, n: int, num_levels: int, num_codes: int, dim: int) -> int:
    """Floats of scratch that ``fastrq_statistics`` needs: one [L, K] + [L, K, D] table per run of rows after the
    first (rq_cpu.c's ``fastrq_statistics_chunks``, a function of the shape alone)."""
    return (_statistics_chunks(lib, n, num_codes) - 1) * num_levels * num_codes * (dim + 1)


@functools.lru_cache(maxsize=256)
def _statistics_chunks(lib, n: int, num_codes: int) -> int:
    return lib.fastrq_statistics_chunks(n, num_codes)  # a pure function of the shape: one native call per shape


def _finish(lib, x, books, codes, quantized, commit, num_levels, num_codes, num_active, training):
    """The walk's outputs, and with ``training`` its reductions (runs of rows fixed by the shape, in row order)."""
    n, dim = x.shape
    if not training:
        return quantized, codes
    sqerr = torch.empty(num_levels, dtype=torch.float32)
    counts = recycled.empty((num_levels, num_codes))  # zeroed by the kernel
    sums = recycled.empty((num_levels, num_codes, dim))
    scratch, (tables,) = _call_scratch(_statistics_scratch(lib, n, num_levels, num_codes, dim))
    threads = torch.get_num_threads() if _openmp(lib) else 1
    lib.fastrq_statistics(
        x.data_ptr(), n, threads, dim, books.data_ptr(), num_levels, num_codes, num_active, codes.data_ptr(),
        sqerr.data_ptr(), counts.data_ptr(), sums.data_ptr(), tables,
    )
    return quantized, codes, sqerr, commit, counts, sums


def _float32_contiguous(t: torch.Tensor) -> torch.Tensor:
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    return t if t.is_contiguous() else t.contiguous()


def _level_operands(level_sizes: list[int], active: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored codebooks' sizes (int64) and active flags (uint8) as small cached tensors, returned to be held by
    the caller across its native call (the cache alone might drop them before it)."""
    return _int_tensor(tuple(level_sizes)), _int_tensor(tuple(map(bool, active)), torch.uint8)


def can_update(codebooks: torch.Tensor, cluster_size: torch.Tensor, embed_sum: torch.Tensor) -> bool:
    """Whether :func:`ema_update_` can update this state in place (contiguous float32 CPU buffers)."""
    return _updatable(codebooks, cluster_size, embed_sum) and library() is not None


def _updatable(codebooks: torch.Tensor, cluster_size: torch.Tensor, embed_sum: torch.Tensor) -> bool:
    """can_update without the library check (the caller made it)."""
    return (_cpu_float32_contiguous(codebooks) and _cpu_float32_contiguous(cluster_size)
            and _cpu_float32_contiguous(embed_sum) and codebooks.shape == embed_sum.shape)


def _cpu_float32_contiguous(t: torch.Tensor) -> bool:
    # is_cpu, not device.type: building the device object cost ~1 us a tensor here (2026-12-02)
    return t.is_cpu and t.dtype == torch.float32 and t.is_contiguous()


def ema_update_(codebooks, cluster_size, embed_sum, counts, sums, level_sizes: list[int], active: list[bool], decay: float, eps: float) -> None:
    """The EMA step (:func:`fastrq.ops.ema_step`) of every stored codebook s with ``active[s]``, in place:
    codebooks / embed_sum ``[S, K, D]``, cluster_size ``[S, K]``, counts ``[S, K]``, sums ``[S, K, D]``."""
    num_stored, num_codes, dim = codebooks.shape
    counts, sums = _float32_contiguous(counts), _float32_contiguous(sums)
    sizes, mask = _level_operands(level_sizes, active)
    library().fastrq_ema_update(
        codebooks.data_ptr(), cluster_size.data_ptr(), embed_sum.data_ptr(), counts.data_ptr(), sums.data_ptr(),
        num_stored, num_codes, dim, sizes.data_ptr(), mask.data_ptr(), float(decay), float(eps),
    )


# ---------------------------------------------------------------------------------------------- certified search
CERTIFIED_ROWS_PER_THREAD = 256  # rows of the selection pass per OpenMP thread (each scans its K outputs)


def certified_available() -> bool:
    """Whether the certified search's native row passes can run (the library builds here)."""
    return library() is not None


def _row_threads(num_rows: int) -> int:
    if not _openmp(loaded_library()):
        return 1
    return max(1, min(torch.get_num_threads(), num_rows // CERTIFIED_ROWS_PER_THREAD))


def certified_codes(codes: torch.Tensor, half_norms: torch.Tensor, padded: int, aug: torch.Tensor, maxima: torch.Tensor) -> None:
    """Centred float32 codes ``[K, D]`` and half norms ``[K]`` (contiguous) → the certified search's bf16 code
    operands ``aug`` ``[padded, D + 4]`` and ``maxima`` float64 ``[5]`` (β*, b̂*, b*, H, λ before the slack) of
    :class:`fastrq.ops.certified.CertifiedLevel`."""
    num_codes, dim = codes.shape
    library().fastrq_certified_codes(codes.data_ptr(), half_norms.data_ptr(), num_codes, dim, padded, aug.data_ptr(), maxima.data_ptr())


def certified_rows(rows: torch.Tensor, aug: torch.Tensor, terms: torch.Tensor) -> None:
    """Centred float32 rows ``[R, D]`` (contiguous) → the augmented bf16 rows ``aug`` ``[R, D + 4]`` (contiguous)
    and ``terms`` float64 ``[R, 3]`` = (‖a‖, ‖α‖, ĉ) (:func:`fastrq.ops.certified._row_terms`' contract)."""
    num_rows, dim = rows.shape
    library().fastrq_certified_rows(rows.data_ptr(), num_rows, dim, aug.data_ptr(), terms.data_ptr(), _row_threads(num_rows))


def certified_select(store, num_rows, tile, tiles, num_codes, terms, weights, offset, scale, magnitude_limit, rows,
                     centred, half_norms, max_candidates, codes, status, counters) -> None:
    """The candidate selection and exact re-score of :mod:`fastrq.ops.certified` for ``num_rows`` rows whose bf16
    outputs are in ``store`` (tile after tile, ``[tiles, R, tile]``): writes codes int64 ``[R]`` and status uint8
    ``[R]`` (0 decided by the bf16 pass, 1 re-scored, 2 left to the exact path) and adds (re-scored rows, exact
    rows, candidates) to ``counters`` int64 ``[3]``. ``centred`` ``[K, D]`` and ``half_norms`` ``[K]`` float32,
    contiguous; ``terms`` float64 ``[R, 3]``, ``weights`` float64 ``[5]``."""
    library().fastrq_certified_select(
        store.data_ptr(), num_rows, tile, tiles, num_codes, terms.data_ptr(), weights.data_ptr(), offset, scale,
        magnitude_limit, rows.data_ptr(), rows.shape[1], centred.data_ptr(), half_norms.data_ptr(), max_candidates,
        codes.data_ptr(), status.data_ptr(), counters.data_ptr(), _row_threads(num_rows),
    )


# ---------------------------------------------------------------------------------------------- codebook preparation
def hashes_available(codebooks: torch.Tensor) -> bool:
    """Whether :func:`row_hashes` / :func:`repeated_hashes` can run on these codebooks (contiguous float32 CPU)."""
    return codebooks.is_contiguous() and walk_available(codebooks)


def row_hashes(codebooks: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """int64 ``[..., K]``: Σ_d bits(C[..., k, d]) · weights[d] in wrapping int64 arithmetic (exactly
    :func:`fastrq.ops.codebook_prep.row_hashes`) of contiguous float32 codebooks ``[..., K, D]``."""
    dim = codebooks.shape[-1]
    hashes = torch.empty(codebooks.shape[:-1], dtype=torch.int64)
    library().fastrq_row_hashes(codebooks.data_ptr(), hashes.numel(), dim, weights.data_ptr(), hashes.data_ptr())
    return hashes


def repeated_hashes(hashes: torch.Tensor, level_sizes: list[int]) -> list[bool]:
    """For hashes int64 ``[L, K]`` (contiguous): whether two of level l's first ``level_sizes[l]`` are equal."""
    num_levels, num_codes = hashes.shape
    slots = 1 << max(4, (2 * num_codes - 1).bit_length())
    scratch = torch.empty(slots + slots // 8 + 1, dtype=torch.int64)  # slots int64 + slots bytes of flags
    flags = torch.empty(num_levels, dtype=torch.uint8)
    sizes = _int_tensor(tuple(level_sizes))
    library().fastrq_repeated_hashes(
        hashes.data_ptr(), num_levels, num_codes, sizes.data_ptr(), scratch.data_ptr(), slots, flags.data_ptr()
    )
    return [bool(v) for v in flags.tolist()]


def hash_uniform_int(key: int, stream: int, count: int, high: int) -> torch.Tensor:
    """int64 ``[count]``: :func:`fastrq.ops.counter_random.hash_uniform_int` for a host-known key and bound
    (``high`` ≥ 1), bit for bit, in one native call."""
    out = torch.empty(count, dtype=torch.int64)
    library().fastrq_hash_uniform_int(key, stream, count, high, out.data_ptr())
    return out


# ---------------------------------------------------------------------------------------------- the dead-code restart
def restart_available(x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor) -> bool:
    """Whether :func:`dead_code_candidates` can run on these (float32 CPU rows with unit column stride, contiguous
    float32 codebooks, int64 codes with unit column stride; the library builds here)."""
    return (
        walk_available(x) and x.stride(-1) == 1 and codebooks.dtype == torch.float32 and codebooks.is_contiguous()
        and codebooks.is_cpu and codes.dtype == torch.int64 and codes.stride(-1) == 1
    )


def dead_code_candidates(x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor, num_active: int,
                         shared: bool, key: int, stream: int, out: torch.Tensor) -> int:
    """:func:`fastrq.ops.codebook_state._dead_code_candidates` bit for bit, for a host-known ``key``: rows x
    ``[N, D]`` (a column slice of a wider tensor is fine), pre-update codebooks ``[S, K, D]``, codes ``[N, L]`` of
    the group's L levels (a column slice too) → ``out`` ``[S, K, D]`` (contiguous float32). Returns the number of
    rows that took part."""
    n, dim = x.shape
    num_stored, num_codes, _ = codebooks.shape
    valid_rows = torch.empty(max(n, 1), dtype=torch.int64)
    return int(library().fastrq_dead_code_candidates(
        x.data_ptr(), n, dim, x.stride(0), codebooks.data_ptr(), num_stored, num_codes, codes.data_ptr(),
        codes.stride(0), num_active, int(shared), key, stream, valid_rows.data_ptr(), out.data_ptr(),
    ))


def restart_dead_(codebooks, cluster_size, embed_sum, cands, level_sizes: list[int], active: list[bool],
                  threshold: float) -> None:
    """In place, after the EMA step (:func:`can_update` state; ``embed_sum`` None without EMA statistics): every
    code of an active stored codebook whose cluster size is below ``threshold`` takes its candidate from ``cands``
    ``[S, K, D]`` (contiguous float32), with ``cluster_size = threshold`` and ``embed_sum = cand · threshold``."""
    num_stored, num_codes, dim = codebooks.shape
    sizes, mask = _level_operands(level_sizes, active)
    library().fastrq_restart_dead(
        codebooks.data_ptr(), cluster_size.data_ptr(), None if embed_sum is None else embed_sum.data_ptr(),
        cands.data_ptr(), num_stored, num_codes, dim, sizes.data_ptr(), mask.data_ptr(), float(threshold),
    )


# ---------------------------------------------------------------------------------------------- the GEMM path's walk
def walk_available(x: torch.Tensor) -> bool:
    """Whether :func:`walk_level` can run on rows like ``x`` (float32 on the CPU, the library builds here)."""
    return x.is_cpu and x.dtype == torch.float32 and library() is not None


def walk_level(codes: torch.Tensor, book: torch.Tensor, residual: torch.Tensor, quantized: torch.Tensor,
               commit: torch.Tensor | None, sums: torch.Tensor | None, counts: torch.Tensor | None,
               sqerr: torch.Tensor | None, level: int, first: bool, norms: torch.Tensor | None = None) -> None:
    """One level of the walk in place, for codes int64 ``[R]`` found by another search: rows ``residual`` ``[R, D]``
    ← r − C[c]; ``quantized`` (``first``: =, else +=) C[c]; with ``commit``: ``commit`` (=, +=) the new residual and
    ``sqerr[level]`` (float64) += its squared norm; with ``sums``: ``sums`` ``[K, D]`` / ``counts`` ``[K]`` +=
    the statistics of the residual before the step. All contiguous float32 CPU tensors but ``sqerr``; ``norms``:
    float32 scratch of at least R elements (allocated here when None). Threads from ``WALK_ELEMENTS_PER_THREAD``
    row elements; the result does not depend on their number (rq_cpu.c)."""
    num_rows, dim = residual.shape
    lib = loaded_library()
    threads = max(1, min(torch.get_num_threads(), num_rows * dim // WALK_ELEMENTS_PER_THREAD)) if _openmp(lib) else 1
    if commit is not None and norms is None:
        norms = torch.empty(num_rows, dtype=torch.float32)
    lib.fastrq_walk_level(
        codes.data_ptr(), num_rows, dim, book.data_ptr(), book.shape[0], residual.data_ptr(), quantized.data_ptr(),
        None if commit is None else commit.data_ptr(), None if sums is None else sums.data_ptr(),
        None if counts is None else counts.data_ptr(),
        None if sqerr is None else sqerr.data_ptr() + level * sqerr.element_size(), int(first),
        None if norms is None else norms.data_ptr(), threads,
    )


def prepare_centred(codebooks: torch.Tensor, level_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contiguous float32 CPU codebooks ``[L, K, D]`` → (centred ``[L, K, D]``, half norms ``[L, K]`` (+inf past each
    level's size), shifts ``[L, D]``): the torch backend's preparation in one native pass per level. When every
    shift is 0 (the usual case: the shift is the mean rounded to the codes' spread), centred *is* ``codebooks``."""
    num_levels, num_codes, dim = codebooks.shape
    centred = torch.empty_like(codebooks)  # not touched (no page faults) unless a level is shifted
    half = torch.empty(num_levels, num_codes, dtype=torch.float32)
    shifts = torch.empty(num_levels, dim, dtype=torch.float32)
    shifted = loaded_library().fastrq_prepare_centred(
        codebooks.data_ptr(), num_levels, num_codes, dim, _int_tensor(tuple(level_sizes)).data_ptr(),
        centred.data_ptr(), half.data_ptr(), shifts.data_ptr(),
    )
    if shifted < 0:
        raise MemoryError(f"the native codebook preparation could not allocate its scratch (D = {dim})")
    return (centred if shifted else codebooks), half, shifts
