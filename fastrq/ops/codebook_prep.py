"""Codebook preparation shared by every search implementation (the torch backend, beam search, the Triton
launchers): the centring shift that keeps the expanded distance exact, and the duplicate-row table that keeps
exact ties exact.

All functions take codebooks ``[..., K, D]`` (one codebook, or a stack of levels) and work on every level at once,
so that preparing L levels costs the same number of torch calls as preparing one.
"""

from __future__ import annotations

import torch

from ..kernels.cpu import launch as cpu_kernels

__all__ = [
    "centring_shift",
    "centring_shifts",
    "row_hashes",
    "first_equal_row",
    "first_equal_rows",
    "first_equal_rows_sync_free",
]

_HASH_GENERATOR = torch.Generator().manual_seed(0x5EED)
_HASH_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def _hash_weights(dim: int, device: torch.device) -> torch.Tensor:
    """Fixed random odd int64 weights [D] (one per column), cached per (D, device)."""
    key = (dim, str(device))
    weights = _HASH_WEIGHTS.get(key)
    if weights is None:
        cpu = _HASH_WEIGHTS.get((dim, "cpu"))
        if cpu is None:
            cpu = torch.randint(-(2**62), 2**62, (dim,), generator=_HASH_GENERATOR, dtype=torch.int64) | 1
            _HASH_WEIGHTS[(dim, "cpu")] = cpu
        weights = _HASH_WEIGHTS[key] = cpu.to(device)
    return weights


def row_hashes(codebooks: torch.Tensor) -> torch.Tensor:
    """int64 ``[..., K]``: a random-weighted sum of each row's bit patterns (int64 arithmetic wraps, exactly).
    Equal rows hash equal; distinct rows collide with probability about 2⁻⁶⁴."""
    weights = _hash_weights(codebooks.shape[-1], codebooks.device)
    if cpu_kernels.hashes_available(codebooks):  # one native pass (no [..., K, D] int64 temporary)
        return cpu_kernels.row_hashes(codebooks, weights)
    bits = codebooks.view(torch.int64 if codebooks.element_size() == 8 else torch.int32)
    return (bits.to(torch.int64) * weights).sum(dim=-1)


def centring_shifts(codebooks: torch.Tensor) -> torch.Tensor:
    """The vectors μ ``[..., D]`` subtracted from x and each codebook ``[..., K, D]`` before the expanded-distance
    search.

    Per codebook: its mean, rounded to a multiple of the largest power of two not above the codebook's spread
    (max |e − mean|). It removes any common offset down to the spread's scale (which is all precision needs), and
    for data on a coarse grid (small integers, say) it lies on that grid, so x − μ and e − μ stay exact and exact
    ties stay exact ties. A constant codebook (spread 0) is shifted by its value. No host sync.
    """
    mean = codebooks.mean(dim=-2, keepdim=True)
    spread = (codebooks - mean).abs().amax(dim=(-2, -1), keepdim=True)
    step = torch.exp2(torch.floor(torch.log2(spread.clamp_min(torch.finfo(codebooks.dtype).tiny))))
    shift = torch.where(spread > 0, torch.round(mean / step) * step, codebooks[..., :1, :])
    return shift.squeeze(-2)


def centring_shift(codebook: torch.Tensor) -> torch.Tensor:
    """:func:`centring_shifts` of one codebook ``[K, D]`` → ``[D]``."""
    return centring_shifts(codebook)


def _exact_first_equal_row(codebook: torch.Tensor) -> torch.Tensor | None:
    """The exact table of one codebook [K, D] (``torch.unique`` over rows; None if all rows are distinct)."""
    unique_rows, inverse = torch.unique(codebook, dim=0, return_inverse=True)
    if unique_rows.shape[0] == codebook.shape[0]:
        return None  # a hash collision between distinct rows
    index = torch.arange(codebook.shape[0], device=codebook.device)
    first = torch.full((unique_rows.shape[0],), codebook.shape[0], dtype=torch.long, device=codebook.device)
    first.scatter_reduce_(0, inverse, index, reduce="amin")
    return first[inverse]


def first_equal_rows(codebooks: torch.Tensor, hashes: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """For each level l of codebooks ``[L, K, D]``: int64 ``[K]``, the smallest j with ``C_l[j] == C_l[k]``, or None
    when all rows of the level are distinct (the common case, decided on the row hashes: one sort for all levels
    and one host sync). ``hashes``: :func:`row_hashes` of the codebooks if already computed."""
    if hashes is None:
        hashes = row_hashes(codebooks)
    if cpu_kernels.hashes_available(codebooks) and hashes.is_contiguous():  # a hash table per level, no sort
        repeated = cpu_kernels.repeated_hashes(hashes, [codebooks.shape[-2]] * codebooks.shape[0])
    else:
        ordered = hashes.sort(dim=-1).values
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(dim=-1).tolist()
    return [_exact_first_equal_row(codebooks[level]) if dup else None for level, dup in enumerate(repeated)]


def first_equal_row(codebook: torch.Tensor) -> torch.Tensor | None:
    """:func:`first_equal_rows` of one codebook ``[K, D]``."""
    return first_equal_rows(codebook.unsqueeze(0))[0]


def first_equal_rows_sync_free(codebooks: torch.Tensor, hashes: torch.Tensor | None = None) -> torch.Tensor:
    """int64 ``[L, K]``: the first-equal-row table of every level, always materialised, with no host sync (for
    devices where a sync stalls the stream).

    Rows are grouped by hash with a stable sort; each row maps to the smallest index of its group, and the mapping
    is kept only where the two rows are bitwise equal (a hash collision between distinct rows therefore maps a row
    to itself, never to a different vector)."""
    if hashes is None:
        hashes = row_hashes(codebooks)
    num_codes = codebooks.shape[-2]
    ordered, perm = hashes.sort(dim=-1, stable=True)
    position = torch.arange(num_codes, device=codebooks.device).expand_as(perm)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_start = torch.where(starts, position, torch.zeros_like(position)).cummax(dim=-1).values
    first_sorted = perm.gather(-1, run_start)  # stable sort: the smallest original index of each run
    first = torch.empty_like(perm).scatter_(-1, perm, first_sorted)
    equal = (codebooks.gather(-2, first[..., None].expand_as(codebooks)) == codebooks).all(-1)
    return torch.where(equal, first, position)
