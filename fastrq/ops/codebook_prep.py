"""Codebook preparation shared by every search implementation (the torch backend, beam search, the Triton
launchers): the centring shift that keeps the expanded distance exact, and the duplicate-row table that keeps
exact ties exact.

Both are pure functions of one codebook ``[K, D]``; the shift needs no host sync, the duplicate check one.
"""

from __future__ import annotations

import torch

__all__ = ["centring_shift", "first_equal_row"]


def first_equal_row(codebook: torch.Tensor) -> torch.Tensor | None:
    """For each row k of codebook [K, D], the smallest j with codebook[j] == codebook[k] (int64 [K]); None if all
    rows are distinct (the common case, decided by an exact hash of the rows' bits in O(K·D + K log K))."""
    bits = codebook.view(torch.int64 if codebook.element_size() == 8 else torch.int32).to(torch.int64)
    weights = torch.randint(
        -(2**62), 2**62, (codebook.shape[1],), generator=_HASH_GENERATOR, dtype=torch.int64
    ).to(codebook.device)
    row_hash = (bits * weights).sum(dim=1)  # equal rows hash equal; int64 arithmetic wraps, exactly
    if torch.unique(row_hash).shape[0] == codebook.shape[0]:
        return None
    unique_rows, inverse = torch.unique(codebook, dim=0, return_inverse=True)
    if unique_rows.shape[0] == codebook.shape[0]:
        return None  # a hash collision between distinct rows
    index = torch.arange(codebook.shape[0], device=codebook.device)
    first = torch.full((unique_rows.shape[0],), codebook.shape[0], dtype=torch.long, device=codebook.device)
    first.scatter_reduce_(0, inverse, index, reduce="amin")
    return first[inverse]


_HASH_GENERATOR = torch.Generator().manual_seed(0x5EED)


def centring_shift(codebook: torch.Tensor) -> torch.Tensor:
    """The vector μ [D] subtracted from x and the codebook before the expanded-distance search.

    The codebook mean, rounded to a multiple of the largest power of two not above the codebook's spread
    (max |e − mean|): it removes any common offset down to the spread's scale (which is all precision needs), and
    for data on a coarse grid (small integers, say) it lies on that grid, so x − μ and e − μ stay exact and exact
    ties stay exact ties. No host sync.
    """
    mean = codebook.mean(dim=0)
    spread = (codebook - mean).abs().amax()
    step = torch.exp2(torch.floor(torch.log2(spread.clamp_min(torch.finfo(codebook.dtype).tiny))))
    return torch.where(spread > 0, torch.round(mean / step) * step, codebook[0])
