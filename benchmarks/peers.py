"""Providers: adapters that run one benchmark case (an op on given inputs) with one implementation.

Every provider quantizes with the SAME codebooks (ours, loaded into the peer), so results can be compared code by
code. ``prepare`` does everything that is not the op itself (index building, module construction, loading the
codebooks, moving data) outside the timed region and returns a :class:`Prepared`: ``call()`` is the timed work,
``to_codes(result)`` (untimed) turns its result into int64 codes ``[rows]`` (nearest_code) or ``[rows, L]``
(residual_quantize) for the correctness check.

Peers (optional ``bench`` extra; a missing one is skipped with a printed reason):

- ``faiss-flat``: faiss-cpu ``IndexFlatL2.search(x, k=1)``; for RQ one index per level and the residual update in
  numpy (the obvious way to do greedy RQ with faiss' exact search).
- ``faiss-fused``: the same with ``faiss.cvar.distance_compute_blas_threshold = 0`` for the duration of each call,
  so faiss uses its fused register-blocked k = 1 kernel at every N (below its default threshold, ``nx · d <
  128,000``, it falls back to a sequential kernel): issue 10's yardstick for D ≤ 32.
- ``faiss-rq``: ``faiss.ResidualQuantizer`` with ``max_beam_size = 1`` (greedy), codebooks set from ours,
  ``compute_codes`` (returns packed codes only; no reconstruction: slightly less work than ours). K must be 2^b.
- ``vqp``: vector-quantize-pytorch ``VectorQuantize`` (nearest_code) / ``ResidualVQ`` (residual_quantize), eval
  mode, ``torch.no_grad()``, our codebooks copied into each layer's ``embed`` buffer, input ``[1, N, D]``.
- ``cdist``: ``torch.cdist(x, codebook).argmin(1)`` (per level for RQ, with the gather and residual update).

``vqp`` and ``cdist`` build the full rows×K distance matrix (vqp about ten such buffers): when that would exceed
``mem_cap_bytes`` the rows are processed in equal chunks (``Prepared.chunks`` > 1, shown in the table). Chunking
only makes those peers faster (cache-friendlier) or equal, so ratios against them stay conservative.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["Prepared", "Provider", "PEERS", "NotApplicable"]


@dataclass
class Prepared:
    """A case ready to run: ``call()`` is timed, ``to_codes(call())`` is not."""

    call: Callable[[], Any]
    to_codes: Callable[[Any], torch.Tensor]
    rows: int  # rows processed by call(); < N means the time is extrapolated linearly to N
    chunks: int = 1  # > 1: the provider ran its rows in this many chunks (memory cap)
    cuda: bool = False  # measure device memory instead of host memory
    note: str = ""
    floor: bool = False  # a lower bound to compare with (gives no answer): never checked
    env: dict = field(default_factory=dict)  # environment variables set around every call (FASTRQ_FAISS)


@dataclass(frozen=True)
class Provider:
    """name, a human label, the ops it runs, why it cannot run here (None: it can), and prepare(op, x, codebooks,
    settings) -> Prepared, where x is ``[N, D]`` float32 on the CPU and codebooks ``[L, K, D]`` (L = 1 for
    nearest_code, whose codebook is ``codebooks[0]``). prepare may raise :class:`NotApplicable`."""

    name: str
    label: str
    ops: tuple[str, ...]
    unavailable_reason: Callable[[], str | None]
    prepare: Callable[..., Prepared]
    extras: dict = field(default_factory=dict)


class NotApplicable(Exception):
    """This provider cannot run this particular case (e.g. faiss RQ needs K = 2^b); the message says why."""


def _missing(module: str) -> Callable[[], str | None]:
    def reason() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'fastrq[bench]')"
        return None

    return reason


def _row_chunks(rows: int, bytes_per_row: int, mem_cap_bytes: int) -> int:
    """Fewest equal chunks of rows whose working set stays under the cap."""
    return max(1, math.ceil(rows * bytes_per_row / max(1, mem_cap_bytes)))


def _chunked(rows: int, chunks: int) -> list[slice]:
    size = math.ceil(rows / chunks)
    return [slice(start, min(rows, start + size)) for start in range(0, rows, size)]


# ---------------------------------------------------------------------------------------------------------- faiss
def _prepare_faiss_flat(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    import faiss
    import numpy as np

    x_np = x.numpy()
    books = [np.ascontiguousarray(cb.numpy()) for cb in codebooks]
    indexes = []
    for book in books:
        index = faiss.IndexFlatL2(book.shape[1])
        index.add(book)
        indexes.append(index)

    if op == "nearest_code":
        def call():
            _, found = indexes[0].search(x_np, 1)
            return found

        return Prepared(call, lambda found: torch.from_numpy(found[:, 0]).long(), rows=x.shape[0])

    def call():
        residual = x_np.copy()
        quantized = np.zeros_like(x_np)
        codes = np.empty((x_np.shape[0], len(books)), dtype=np.int64)
        for level, (index, book) in enumerate(zip(indexes, books)):
            _, found = index.search(residual, 1)
            chosen = book[found[:, 0]]
            residual -= chosen
            quantized += chosen
            codes[:, level] = found[:, 0]
        return quantized, codes

    return Prepared(call, lambda out: torch.from_numpy(out[1]), rows=x.shape[0])


def _prepare_faiss_fused(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    import faiss

    flat = _prepare_faiss_flat(op, x, codebooks, settings)

    def call():
        threshold = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 0
        try:
            return flat.call()
        finally:
            faiss.cvar.distance_compute_blas_threshold = threshold

    return Prepared(call, flat.to_codes, rows=flat.rows)


def _prepare_faiss_rq(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    import faiss
    import numpy as np

    levels, num_codes, dim = codebooks.shape
    nbits = num_codes.bit_length() - 1
    if num_codes != 1 << nbits:
        raise NotApplicable(f"faiss ResidualQuantizer needs K = 2^b, got K = {num_codes}")
    rq = faiss.ResidualQuantizer(dim, levels, nbits)
    rq.max_beam_size = 1  # greedy, as fastrq
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks.numpy()).ravel(), rq.codebooks)
    rq.is_trained = True
    x_np = x.numpy()

    def to_codes(packed):
        return torch.from_numpy(faiss.unpack_bitstrings(packed, levels, nbits).astype(np.int64))

    return Prepared(lambda: rq.compute_codes(x_np), to_codes, rows=x.shape[0], note="codes only")


# ------------------------------------------------------------------------------------------ vector-quantize-pytorch
# Bytes per row per code of a VQP eval forward (dist pipeline: x²+y², −2xy, clamp, sqrt, negation, int64 one-hot
# and its float copy). An upper estimate, used only to decide whether to chunk rows.
_VQP_BYTES_PER_ROW_CODE = 40


def _prepare_vqp(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    from vector_quantize_pytorch import ResidualVQ, VectorQuantize

    levels, num_codes, dim = codebooks.shape
    if op == "nearest_code":
        module = VectorQuantize(dim=dim, codebook_size=num_codes, kmeans_init=False)
        layers = [module]
    else:
        module = ResidualVQ(dim=dim, num_quantizers=levels, codebook_size=num_codes, kmeans_init=False)
        layers = list(module.layers)
    with torch.no_grad():
        for layer, book in zip(layers, codebooks):
            layer._codebook.embed.copy_(book[None])  # [heads=1, K, D]
    module.eval()
    rows = x.shape[0]
    chunks = _row_chunks(rows, num_codes * _VQP_BYTES_PER_ROW_CODE, settings["mem_cap_bytes"])
    pieces = [x[part][None] for part in _chunked(rows, chunks)]  # [1, rows, D] each

    def call():
        with torch.no_grad():
            return [module(piece)[1] for piece in pieces]  # (quantized, indices, loss)

    def to_codes(indices):
        codes = torch.cat([part[0] for part in indices], dim=0).long()
        return codes

    return Prepared(call, to_codes, rows=rows, chunks=chunks)


# ------------------------------------------------------------------------------------------------------ torch.cdist
_CDIST_BYTES_PER_ROW_CODE = 8  # the distance matrix and the argmin's working copy


def _prepare_cdist(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    rows = x.shape[0]
    chunks = _row_chunks(rows, codebooks.shape[1] * _CDIST_BYTES_PER_ROW_CODE, settings["mem_cap_bytes"])
    parts = _chunked(rows, chunks)

    if op == "nearest_code":
        book = codebooks[0]

        def call():
            return torch.cat([torch.cdist(x[part], book).argmin(dim=1) for part in parts])

        return Prepared(call, lambda codes: codes, rows=rows, chunks=chunks)

    def call():
        residual = x.clone()
        quantized = torch.zeros_like(x)
        codes = torch.empty(rows, codebooks.shape[0], dtype=torch.long)
        for level, book in enumerate(codebooks):
            found = torch.cat([torch.cdist(residual[part], book).argmin(dim=1) for part in parts])
            chosen = book[found]
            residual -= chosen
            quantized += chosen
            codes[:, level] = found
        return quantized, codes

    return Prepared(call, lambda out: out[1], rows=rows, chunks=chunks)


PEERS: tuple[Provider, ...] = (
    Provider("faiss-flat", "faiss IndexFlatL2", ("nearest_code", "residual_quantize"), _missing("faiss"),
             _prepare_faiss_flat),
    Provider("faiss-fused", "faiss IndexFlatL2, fused kernel at every N (blas threshold 0)",
             ("nearest_code", "residual_quantize"), _missing("faiss"), _prepare_faiss_fused),
    Provider("faiss-rq", "faiss ResidualQuantizer (beam 1)", ("residual_quantize",), _missing("faiss"),
             _prepare_faiss_rq),
    Provider("vqp", "vector-quantize-pytorch (eval)", ("nearest_code", "residual_quantize"),
             _missing("vector_quantize_pytorch"), _prepare_vqp),
    Provider("cdist", "torch.cdist + argmin", ("nearest_code", "residual_quantize"), lambda: None, _prepare_cdist),
)
