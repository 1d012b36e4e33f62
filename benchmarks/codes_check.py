"""The correctness gate for codes: is a provider's answer the nearest code (VQ) or a valid greedy path (RQ)?

Codes are compared by distance, never by index (implementations legitimately split near-ties): a provider's code
must be as near as the baseline's (fastrq's torch backend) within :data:`TOLERANCE` · (‖x‖² + ‖e‖²) on every row,
and as near as the float64 true minimum on a sample of rows. Used by the ops benchmark and the module-step
benchmark as the ``check`` of :class:`benchmarks.harness.Contender`.
"""

from __future__ import annotations

from typing import Callable

import torch

import fastrq

__all__ = ["TOLERANCE", "MEAN_ERROR_TOLERANCE", "CHECK_SAMPLE", "TrueMinimum", "check_nearest", "check_residual",
           "codes_checker"]

CHECK_SAMPLE = 256  # rows checked against the float64 reference's true minimum
TOLERANCE = 1e-5  # relative to ‖x‖² + ‖e‖²: float32 expanded-distance rounding is ~1e-7 of that
MEAN_ERROR_TOLERANCE = 1e-3  # relative agreement of the mean final RQ error (greedy paths may split on near-ties)


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().sum(dim=1)


def _tolerance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return TOLERANCE * (a.square().sum(dim=1) + b.square().sum(dim=1)) + 1e-12


class TrueMinimum:
    """Float64 true minimum distances of the baseline's greedy path on a row sample, per level, cached so that
    another provider's check only recomputes rows whose earlier codes differ from the baseline's."""

    def __init__(self, x64: torch.Tensor, books64: torch.Tensor, base_codes: torch.Tensor, sample: torch.Tensor):
        self.books64, self.sample = books64, sample
        self.base = base_codes[sample]
        residual = x64[sample]
        self.minimum = []
        for level, book in enumerate(books64):
            _, dist = fastrq.nearest_code(residual, book, backend="reference")
            self.minimum.append(dist)
            residual = residual - book[self.base[:, level]]

    def minimum_for(self, level: int, codes: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """True minimum at ``level`` for sample rows whose codes [S, L] led to ``residual`` [S, D]."""
        same = (codes[:, :level] == self.base[:, :level]).all(dim=1)
        minimum = self.minimum[level].clone()
        if not bool(same.all()):
            _, dist = fastrq.nearest_code(residual[~same], self.books64[level], backend="reference")
            minimum[~same] = dist
        return minimum


def check_nearest(x: torch.Tensor, book: torch.Tensor, codes: torch.Tensor, base_codes: torch.Tensor,
                  truth: TrueMinimum) -> tuple[bool, str]:
    """Codes of the first ``len(codes)`` rows agree with the baseline's by distance (float64, relative tolerance
    :data:`TOLERANCE` of ‖x‖² + ‖e‖²) on every row, and with the true minimum on the sampled rows."""
    rows = codes.shape[0]
    if codes.shape != (rows,) or codes.dtype != torch.int64:
        return False, f"codes have shape {tuple(codes.shape)} / {codes.dtype}, expected [{rows}] int64"
    if rows and (int(codes.min()) < 0 or int(codes.max()) >= book.shape[0]):
        return False, "codes out of range"
    x64, book64 = x[:rows].double(), book.double()
    chosen, base = book64[codes], book64[base_codes[:rows]]
    d_p, d_b = _sqdist(x64, chosen), _sqdist(x64, base)
    bad = ((d_p - d_b).abs() > _tolerance(x64, chosen)).sum().item()
    sample = truth.sample[truth.sample < rows]
    in_sample = torch.isin(truth.sample, sample)
    minimum = truth.minimum[0][in_sample]
    bad_true = (d_p[sample] > minimum + _tolerance(x64[sample], chosen[sample])).sum().item()
    differ = (codes != base_codes[:rows]).sum().item()
    detail = f"{differ} of {rows} codes differ from torch's; all within tolerance" if not (bad or bad_true) else (
        f"{bad} of {rows} rows farther than torch's choice, {bad_true} of {sample.numel()} sampled rows farther "
        "than the true minimum")
    return not (bad or bad_true), detail


def check_residual(x: torch.Tensor, books: torch.Tensor, codes: torch.Tensor, base_codes: torch.Tensor,
                   truth: TrueMinimum) -> tuple[bool, str]:
    """Greedy-RQ codes [rows, L]: level 0 agrees with the baseline by distance on every row; on the sampled rows
    every level's choice is within tolerance of the true minimum for that provider's own residual (a valid greedy
    path, even where it split from the baseline's on a near-tie); the mean final squared error matches the
    baseline's within :data:`MEAN_ERROR_TOLERANCE` (relative)."""
    rows, levels = codes.shape[0], books.shape[0]
    if codes.shape != (rows, levels) or codes.dtype != torch.int64:
        return False, f"codes have shape {tuple(codes.shape)} / {codes.dtype}, expected [{rows}, {levels}] int64"
    if rows and (int(codes.min()) < 0 or int(codes.max()) >= books.shape[1]):
        return False, "codes out of range"
    ok0, detail0 = check_nearest(x, books[0], codes[:, 0].contiguous(), base_codes[:, 0], truth)
    if not ok0:
        return False, "level 0: " + detail0
    books64 = books.double()
    sample = truth.sample[truth.sample < rows]
    if sample.numel() != truth.sample.numel():
        return False, "internal: the check sample must lie in the provider's rows"
    residual = x[:rows].double()
    residual_base = residual.clone()
    sample_codes = codes[sample]
    bad_levels = []
    for level, book in enumerate(books64):
        chosen = book[codes[:, level]]
        minimum = truth.minimum_for(level, sample_codes, residual[sample])
        d = _sqdist(residual[sample], chosen[sample])
        if bool((d > minimum + _tolerance(residual[sample], chosen[sample])).any()):
            bad_levels.append(level)
        residual = residual - chosen
        residual_base = residual_base - book[base_codes[:rows, level]]
    err_p = residual.square().sum(dim=1).mean().item()
    err_b = residual_base.square().sum(dim=1).mean().item()
    rel = abs(err_p - err_b) / max(err_b, 1e-300)
    split = (codes != base_codes[:rows]).any(dim=1).sum().item()
    ok = not bad_levels and rel <= MEAN_ERROR_TOLERANCE
    detail = (f"mean final error {err_p:.6g} vs torch {err_b:.6g} (rel {rel:.1e}); {split} of {rows} rows took "
              f"another greedy path")
    if bad_levels:
        detail += f"; not the nearest code at levels {bad_levels} on sampled rows"
    return ok, detail


def codes_checker(op: str, x: torch.Tensor, books: torch.Tensor, base_codes: torch.Tensor, checked_rows: int,
                  sample_size: int = CHECK_SAMPLE, seed: int = 1) -> Callable[[torch.Tensor], tuple[bool, str]]:
    """``check(codes) → (ok, detail)`` for ``op`` ("nearest_code": codes [rows]; "residual_quantize": [rows, L])
    against ``base_codes`` (the baseline's answer on all N rows of x, codebooks ``books`` [L, K, D]); the float64
    sample is drawn from the first ``checked_rows`` rows (the fewest rows any provider answers)."""
    sample = torch.randperm(checked_rows, generator=torch.Generator().manual_seed(seed))[:sample_size].sort().values
    base2d = base_codes if base_codes.dim() == 2 else base_codes[:, None]
    truth = TrueMinimum(x.double(), books.double(), base2d, sample)
    if op == "nearest_code":
        return lambda codes: check_nearest(x, books[0], codes, base_codes, truth)
    return lambda codes: check_residual(x, books, codes, base2d, truth)
