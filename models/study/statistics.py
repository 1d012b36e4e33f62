"""Numbers over seeds and the rules that decide whether two of them differ (what the study's tables and findings
use).

- :func:`mean_std`: mean and sample standard deviation (ddof = 1; 0 for a single value) of scalars, or element-wise
  of equal-length lists (per-level metrics).
- :func:`compare`: two sets of per-seed values of one metric are **distinguishable** when their mean ± std intervals
  do not overlap, ``|mean_a − mean_b| > std_a + std_b``; otherwise the difference lies inside the seeds' spread and
  is reported as "not distinguishable". (Stricter than "|Δ| > the larger std"; with 3 seeds per side an
  interval-overlap rule is about as strict as a Welch t-test at α ≈ 0.05 when the two spreads are alike.)
- :func:`fisher_exact`: the two-sided Fisher exact test on a 2×2 table of counts (runs that spiked or diverged vs
  runs that did not), computed exactly from the hypergeometric distribution; a count difference is distinguishable
  when p < 0.05.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

__all__ = ["mean_std", "compare", "fisher_exact", "format_mean_std", "ALPHA"]

ALPHA = 0.05  # significance level of the count comparisons


def mean_std(values: Sequence[float] | Sequence[Sequence[float]]) -> tuple:
    """(mean, std) of ``values``: floats → two floats; lists (one per seed, equal length) → two lists."""
    if not values:
        raise ValueError("mean_std of no values")
    if isinstance(values[0], (list, tuple)):
        columns = list(zip(*values))
        pairs = [mean_std(list(column)) for column in columns]
        return [m for m, _ in pairs], [s for _, s in pairs]
    data = [float(v) for v in values]
    mean = statistics.fmean(data)
    std = statistics.stdev(data) if len(data) > 1 else 0.0
    return mean, std


def compare(a: Sequence[float], b: Sequence[float]) -> dict:
    """Compare per-seed values ``a`` and ``b`` of one (lower-is-better or any) metric.

    Returns ``mean_a``, ``std_a``, ``mean_b``, ``std_b``, ``difference`` (mean_a − mean_b), ``distinguishable``
    (``|difference| > std_a + std_b``; False when either side has fewer than 2 values, whose spread is unknown) and
    ``lower``: "a", "b" or None (not distinguishable)."""
    mean_a, std_a = mean_std(a)
    mean_b, std_b = mean_std(b)
    difference = mean_a - mean_b
    enough = len(a) >= 2 and len(b) >= 2
    distinguishable = enough and abs(difference) > std_a + std_b
    lower = ("a" if difference < 0 else "b") if distinguishable else None
    return {"mean_a": mean_a, "std_a": std_a, "mean_b": mean_b, "std_b": std_b, "difference": difference,
            "distinguishable": distinguishable, "lower": lower, "n_a": len(a), "n_b": len(b)}


def fisher_exact(events_a: int, total_a: int, events_b: int, total_b: int) -> float:
    """Two-sided p-value of Fisher's exact test for ``events_a`` of ``total_a`` against ``events_b`` of
    ``total_b``: the probability, under the hypergeometric distribution with the margins fixed, of every table at
    most as likely as the observed one (with a relative tolerance of 1e-7 for ties, as usual)."""
    if not (0 <= events_a <= total_a and 0 <= events_b <= total_b):
        raise ValueError(f"bad counts {events_a}/{total_a}, {events_b}/{total_b}")
    events = events_a + events_b
    total = total_a + total_b
    if total == 0:
        return 1.0

    def probability(k: int) -> float:
        return math.comb(total_a, k) * math.comb(total_b, events - k) / math.comb(total, events)

    observed = probability(events_a)
    low, high = max(0, events - total_b), min(events, total_a)
    p = sum(q for q in (probability(k) for k in range(low, high + 1)) if q <= observed * (1 + 1e-7))
    return min(1.0, p)


def format_mean_std(mean, std, fmt: str) -> str:
    """"m ± s" (element-wise, joined by " / ", for per-level lists)."""
    if isinstance(mean, (list, tuple)):
        return " / ".join(format_mean_std(m, s, fmt) for m, s in zip(mean, std)) if mean else "–"
    return f"{format(mean, fmt)} ± {format(std, fmt)}"
