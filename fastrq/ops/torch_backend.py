"""The fast pure-PyTorch backend: tiled, memory-bounded, runs on any device torch runs on.

Nearest-code search (the hot loop of every op) works on row blocks × code blocks:

    scores[n, k] = ½‖e_k − μ‖² − (x_n − μ)·(e_k − μ)        (= ½‖x_n − e_k‖² − ½‖x_n − μ‖²)

one ``addmm`` per tile into a reused buffer, then a row-wise ``min`` (:func:`block_argmin`) merged into a running
(min, argmin) with a strict ``<`` over code blocks in increasing order, so among equal scores the smallest index wins.
μ, about the codebook mean (see :func:`centring_shift`), is subtracted from both sides (distances are
translation-invariant): without it the expansion loses every significant digit for data with a large common offset
(x, e ≈ 1000 + N(0, 1)). When μ rounds to 0 (zero-mean codebooks, most residual levels) nothing is subtracted or
copied. ‖x‖² is argmin-irrelevant and never added; nothing is clamped.

Exact ties between duplicate codebook rows are settled independently of GEMM rounding: each row is mapped to the
first row equal to it (``torch.unique``), so a duplicate never beats its earlier twin.

``residual_quantize`` runs row blocks outside and levels inside: a block's residual goes through all L levels
while it is in cache (the layout of the fused Triton kernel), instead of L passes over all N rows.

Extra memory beyond inputs and outputs: one scores tile of at most ``TILE_ELEMENTS`` (2²⁰) elements (4 MiB in
float32; on a GPU ``GPU_TILE_ELEMENTS``, 2²⁴: 64 MiB), one row block (≤ 2²⁰ / min(K, ``CODE_BLOCK``) rows × D; three
of them in ``residual_quantize``: centred rows, residual, chosen rows), the centred codebook (K × D per level, only
where μ ≠ 0) and O(N + K) vectors (codes, running minimum); never N×K. At N = 65,536, K = 16,384, D = 64 that is
about 14 MiB (``tests/test_memory_bound.py`` measures it).

On the CPU with float32 data and faiss importable, the search may instead call faiss' exact ``knn`` (its fused
top-1 kernels are far faster for small D); ``FASTRQ_FAISS`` chooses: ``auto`` (default, use it where it is faster),
``1`` (always), ``0`` (never: pure PyTorch). The centring and the tie rule above apply to both paths.
"""

from __future__ import annotations

import functools
import os

import torch

from .codebook_prep import centring_shift, first_equal_row

__all__ = ["nearest_code", "residual_quantize", "residual_decode", "code_statistics", "unavailable_reason"]

# CPU tiles stay cache-sized; on a GPU (torch backend without Triton) fewer, larger launches pay more.
CODE_BLOCK = 1024
TILE_ELEMENTS = 1 << 20
GPU_CODE_BLOCK = 8192
GPU_TILE_ELEMENTS = 1 << 24
SQDIST_ROWS = 8192
# Measured crossover (benchmarks/README.md): faiss' fused small-D kernels are 4.7–12.8× faster than the tiled GEMM
# at D = 4; at D ∈ {64, 256} the tiled GEMM takes 0.7–1.35× faiss' time.
FAISS_MAX_DIM = 32


def unavailable_reason(device: torch.device | None = None) -> str | None:
    return None


@functools.lru_cache(maxsize=1)
def _faiss():
    try:
        import faiss  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return faiss


def _use_faiss(x: torch.Tensor, dim: int) -> bool:
    mode = os.environ.get("FASTRQ_FAISS", "auto")
    if mode == "0" or x.device.type != "cpu" or x.dtype != torch.float32 or _faiss() is None:
        return False
    if mode == "1":
        return True
    return dim <= FAISS_MAX_DIM



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


GROUP = 64


class PreparedCodebook:
    """What the tiled search needs of one codebook [K, D], computed once per call (and per level in RQ).

    ``shift`` μ [D] (:func:`centring_shift`), ``centred_t`` = (codebook − μ)ᵀ [D, K] (a view of the codebook itself
    when μ = 0, the usual case for residual levels and zero-mean data: no copy), ``half_norm`` = ½‖e_k − μ‖² [K],
    ``first`` = :func:`first_equal_row` (None when all rows are distinct) and ``shifted`` (whether x needs − μ)."""

    def __init__(self, codebook: torch.Tensor):
        self.shift = centring_shift(codebook)
        self.shifted = bool(self.shift.any())  # one host sync per codebook
        centred = codebook - self.shift if self.shifted else codebook
        self.centred_t = centred.T
        self.half_norm = 0.5 * centred.square().sum(dim=1)
        self.first = first_equal_row(codebook)
        self.num_codes = codebook.shape[0]


class TileWorkspace:
    """Reused buffers of the tiled search (no allocation per block): a scores tile [rows, code_block] and a
    centred row block [rows, D]. ``rows`` = the row-block size for this K (``TILE_ELEMENTS`` // code block)."""

    def __init__(self, num_rows: int, num_codes: int, dim: int, dtype: torch.dtype, device: torch.device):
        on_cpu = device.type == "cpu"
        tile_elements = TILE_ELEMENTS if on_cpu else GPU_TILE_ELEMENTS
        self.code_block = min(num_codes, CODE_BLOCK if on_cpu else GPU_CODE_BLOCK)
        self.rows = min(num_rows, max(64, tile_elements // self.code_block))
        self.scores = torch.empty(self.rows * self.code_block, dtype=dtype, device=device)
        self.centred_rows = torch.empty(self.rows, dim, dtype=dtype, device=device)


def block_codes(rows: torch.Tensor, book: PreparedCodebook, work: TileWorkspace) -> torch.Tensor:
    """Codes [R] of the rows [R, D] (R ≤ ``work.rows``, uncentred): argmin_k ½‖e_k − μ‖² − (x − μ)·(e_k − μ), one
    ``addmm`` per code block into the reused tile, merged into a running (min, argmin) with a strict ``<`` over code
    blocks in increasing order (smallest index wins ties); duplicate rows then mapped to their first occurrence."""
    if book.shifted:
        rows = torch.sub(rows, book.shift, out=work.centred_rows[: rows.shape[0]])
    best_score = best_code = None
    for k0 in range(0, book.num_codes, work.code_block):
        k1 = min(book.num_codes, k0 + work.code_block)
        scores = work.scores[: rows.shape[0] * (k1 - k0)].view(rows.shape[0], k1 - k0)
        torch.addmm(book.half_norm[k0:k1], rows, book.centred_t[:, k0:k1], beta=1, alpha=-1, out=scores)
        score, code = block_argmin(scores)
        if best_score is None:
            best_score, best_code = score, code
        else:
            better = score < best_score  # strict: an equal score in a later block never wins
            best_score = torch.where(better, score, best_score)
            best_code = torch.where(better, code + k0, best_code)
    return best_code if book.first is None else book.first[best_code]


def _search_faiss(x: torch.Tensor, book: PreparedCodebook) -> torch.Tensor:
    faiss = _faiss()
    faiss.omp_set_num_threads(torch.get_num_threads())
    centred = book.centred_t.T.contiguous()
    _, index = faiss.knn((x - book.shift).numpy(), centred.numpy(), 1)
    # faiss answers -1 for rows it cannot place (NaN): keep the contract "some code in [0, K)"
    codes = torch.from_numpy(index[:, 0]).clamp_(min=0)
    return codes if book.first is None else book.first[codes]


def search_codes(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """x [N, D], codebook [K, D] (same dtype, contiguous) -> codes int64 [N]: the nearest row, smallest index
    among exact ties."""
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    book = PreparedCodebook(codebook)
    if _use_faiss(x, x.shape[1]):
        return _search_faiss(x, book)
    work = TileWorkspace(x.shape[0], codebook.shape[0], x.shape[1], x.dtype, x.device)
    codes = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for r0 in range(0, x.shape[0], work.rows):
        codes[r0 : r0 + work.rows] = block_codes(x[r0 : r0 + work.rows], book, work)
    return codes


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N] = Σ_d (x − codebook[codes])², direct difference)."""
    codes = search_codes(x, codebook)
    sqdist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for r0 in range(0, x.shape[0], SQDIST_ROWS):  # row chunks: the gathered rows stay ≤ SQDIST_ROWS × D
        r1 = r0 + SQDIST_ROWS
        torch.sum((x[r0:r1] - codebook.index_select(0, codes[r0:r1])).square_(), dim=1, out=sqdist[r0:r1])
    return codes, sqdist


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebooks [L, K, D] -> (quantized [N, D] = Σ_l C_l[c_l], codes int64 [N, L]); greedy.

    Row blocks outside, levels inside: a block's residual [R, D] goes through all L levels while it is in cache
    (search, then residual −= chosen rows, quantized += chosen rows), instead of L passes over all N rows. The
    faiss path (small D) stays level by level, one ``knn`` call over all rows per level."""
    n, num_levels = x.shape[0], codebooks.shape[0]
    codes = torch.empty(n, num_levels, dtype=torch.long, device=x.device)
    quantized = torch.zeros_like(x)
    if n == 0:
        return quantized, codes
    books = [PreparedCodebook(codebooks[level]) for level in range(num_levels)]
    if _use_faiss(x, x.shape[1]):
        residual = x.clone()
        for level, book in enumerate(books):
            codes[:, level] = _search_faiss(residual, book)
            for r0 in range(0, n, SQDIST_ROWS):  # row chunks: no [N, D] temporary for the chosen rows
                chosen = codebooks[level].index_select(0, codes[r0 : r0 + SQDIST_ROWS, level])
                residual[r0 : r0 + SQDIST_ROWS].sub_(chosen)
                quantized[r0 : r0 + SQDIST_ROWS].add_(chosen)
        return quantized, codes
    work = TileWorkspace(n, codebooks.shape[1], x.shape[1], x.dtype, x.device)
    residual_buf = torch.empty(work.rows, x.shape[1], dtype=x.dtype, device=x.device)
    chosen_buf = torch.empty_like(residual_buf)
    for r0 in range(0, n, work.rows):
        block = x[r0 : r0 + work.rows]
        rows = block.shape[0]
        residual = residual_buf[:rows].copy_(block)
        chosen, block_quantized = chosen_buf[:rows], quantized[r0 : r0 + rows]
        for level, book in enumerate(books):
            level_codes = block_codes(residual, book, work)
            torch.index_select(codebooks[level], 0, level_codes, out=chosen)
            residual.sub_(chosen)
            block_quantized.add_(chosen)
            codes[r0 : r0 + rows, level] = level_codes
    return quantized, codes


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
