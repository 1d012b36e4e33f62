"""Code search for the quantizer modules: greedy (the fastrq ops, any backend) or beam search.

Beam search keeps, for every row, the ``beam_size`` partial code paths with the smallest total squared error
‖x − Σ_l C_l[c_l]‖² (which is the squared norm of the remaining residual) and extends each by every code of the
next level. Rows are processed in blocks so that the scores tile (rows × beams × codes) stays below
``BEAM_TILE_ELEMENTS``: never the full N×K matrix. It runs the same way in train and eval mode and for any batch
size. Candidates are ranked through the centred expansion (see :mod:`fastrq.ops.torch_backend`); the error of each
kept path is then recomputed as a direct difference. The greedy path is computed too and kept for a row whenever
the beam did not find a strictly smaller final error, so beam search is never worse than greedy.
"""

from __future__ import annotations

import torch

from . import functional as ops
from .codebook_prep import centring_shift

__all__ = ["greedy_codes", "beam_codes", "search_codes", "BEAM_TILE_ELEMENTS"]

BEAM_TILE_ELEMENTS = 1 << 21


def greedy_codes(x: torch.Tensor, codebooks: torch.Tensor, level_sizes: list[int], backend: str) -> torch.Tensor:
    """Greedy RQ codes int64 ``[N, L]`` over codebooks ``[L, K, D]`` where level l uses its first K_l rows."""
    num_levels, num_codes, _ = codebooks.shape
    if all(k == num_codes for k in level_sizes[:num_levels]):
        return ops.residual_quantize(x, codebooks, backend=backend)[1]
    codes = torch.empty(x.shape[0], num_levels, dtype=torch.long, device=x.device)
    residual = x
    for level in range(num_levels):
        table = codebooks[level, : level_sizes[level]]
        codes[:, level], _ = ops.nearest_code(residual, table, backend=backend)
        residual = residual - table.index_select(0, codes[:, level])
    return codes


def _beam_block(x: torch.Tensor, codebooks: torch.Tensor, level_sizes: list[int], beam_size: int) -> torch.Tensor:
    rows, dim = x.shape
    residual = x[:, None, :]  # [R, B, D]
    paths = x.new_empty(rows, 1, 0, dtype=torch.long)  # [R, B, l]
    for level in range(codebooks.shape[0]):
        table = codebooks[level, : level_sizes[level]]
        k = table.shape[0]
        mu = centring_shift(table)
        centred = table - mu
        res_c = residual - mu
        # ‖r − e‖² = ‖r−μ‖² − 2(r−μ)·(e−μ) + ‖e−μ‖²: the total error of each extension
        scores = torch.baddbmm(
            (res_c.square().sum(-1, keepdim=True) + centred.square().sum(-1)[None, None, :]),
            res_c,
            centred.T.expand(rows, dim, k),
            alpha=-2.0,
        )  # [R, B, K]
        width = scores.shape[1] * k
        keep = min(beam_size, width)
        _, best = scores.reshape(rows, width).topk(keep, dim=1, largest=False, sorted=True)
        parent, code = best // k, best % k
        residual = residual.gather(1, parent[..., None].expand(rows, keep, dim)) - table[code]
        paths = torch.cat([paths.gather(1, parent[..., None].expand(rows, keep, paths.shape[2])), code[..., None]], dim=2)
    # the ranking used the expansion; pick the final best by the direct error
    err = residual.square().sum(-1)
    best = err.argmin(dim=1)
    return paths[torch.arange(rows, device=x.device), best]


def beam_codes(x: torch.Tensor, codebooks: torch.Tensor, level_sizes: list[int], beam_size: int) -> torch.Tensor:
    """Beam-search codes int64 ``[N, L]`` (x ``[N, D]``, codebooks ``[L, K, D]``), row-blocked."""
    n = x.shape[0]
    num_levels, num_codes, _ = codebooks.shape
    codes = torch.empty(n, num_levels, dtype=torch.long, device=x.device)
    block = max(1, BEAM_TILE_ELEMENTS // (beam_size * num_codes))
    for r0 in range(0, n, block):
        codes[r0 : r0 + block] = _beam_block(x[r0 : r0 + block], codebooks, level_sizes, beam_size)
    return codes


def _final_sqerr(x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    residual = x.clone()
    for level in range(codes.shape[1]):
        residual -= codebooks[level].index_select(0, codes[:, level])
    return residual.square().sum(-1)


def search_codes(
    x: torch.Tensor, codebooks: torch.Tensor, level_sizes: list[int], num_active: int, beam_size: int, backend: str
) -> torch.Tensor:
    """Codes int64 ``[N, L]`` of x ``[N, D]`` over codebooks ``[L, K, D]``: levels ``< num_active`` searched
    (greedy, or beam search with ``beam_size > 1``), the rest −1 ("skipped")."""
    n = x.shape[0]
    num_levels = codebooks.shape[0]
    codes = torch.full((n, num_levels), -1, dtype=torch.long, device=x.device)
    active = codebooks[:num_active]
    greedy = greedy_codes(x, active, level_sizes, backend)
    if beam_size > 1 and n > 0:
        beam = beam_codes(x, active, level_sizes, beam_size)
        better = _final_sqerr(x, active, beam) < _final_sqerr(x, active, greedy)
        greedy = torch.where(better[:, None], beam, greedy)
    codes[:, :num_active] = greedy
    return codes
