"""Training stability of one run, from its per-step train loss (``metrics.jsonl`` with ``log_every = 1``): what the
study's learning-rate sweep counts (finding 4).

Definitions (fixed before the sweep was run):

- **spike**: a step t > :data:`SPIKE_WINDOW` whose train loss exceeds :data:`SPIKE_FACTOR` × the median train
  loss of the :data:`SPIKE_WINDOW` steps before it (the loss at least doubles against its recent level; the first
  window of steps, where the loss falls fastest, is never a spike);
- **diverged**: the loss became non-finite (the training loop's NaN guard stopped the run), or the final test
  reconstruction MSE is at least :data:`DIVERGED_FRACTION` × the MSE of the trivial reconstruction (the mean
  training image for every test image);
- **unstable**: spiked at least once, or diverged;
- **roughness**: std of successive differences of log(train loss) over the second half of training (0 for a
  smooth curve).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..training.metrics_log import read_jsonl

__all__ = ["SPIKE_FACTOR", "SPIKE_WINDOW", "DIVERGED_FRACTION", "train_losses", "spike_steps", "roughness",
           "run_stability"]

SPIKE_FACTOR = 2.0
SPIKE_WINDOW = 20
DIVERGED_FRACTION = 0.5


def train_losses(run: str | Path) -> list[tuple[int, float]]:
    """(step, train loss) of every "train" record of a run's metrics.jsonl (non-finite values as float)."""
    return [(int(r["step"]), float(r["loss"])) for r in read_jsonl(Path(run) / "metrics.jsonl")
            if r.get("kind") == "train" and "loss" in r]


def spike_steps(losses: Sequence[float], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> list[int]:
    """Indices t ≥ ``window`` with ``losses[t] > factor · median(losses[t − window : t])``."""
    spikes = []
    for t in range(window, len(losses)):
        recent = statistics.median(losses[t - window:t])
        if losses[t] > factor * recent:
            spikes.append(t)
    return spikes


def roughness(losses: Sequence[float]) -> float | None:
    """Std of successive log-differences of the loss over its second half (None: fewer than 3 values)."""
    tail = list(losses)[len(losses) // 2:]
    if len(tail) < 3:
        return None
    logs = [math.log(max(v, 1e-12)) for v in tail]
    return statistics.pstdev([b - a for a, b in zip(logs, logs[1:])])


def run_stability(run: str | Path, final: dict[str, Any] | None, baseline_mse: float) -> dict[str, Any]:
    """The stability record of one run: ``spikes`` (count), ``spike_steps`` (optimizer steps, 1-based),
    ``nonfinite`` (the NaN guard fired), ``diverged``, ``unstable``, ``roughness``, ``final_recon_mse`` (None when
    there is no final evaluation). ``final``: the run's final.json (None when it diverged before finishing);
    ``baseline_mse``: the trivial reconstruction's test MSE."""
    records = train_losses(run)
    steps = [s for s, _ in records]
    losses = [v for _, v in records]
    finite = [v for v in losses if math.isfinite(v)]
    nonfinite = final is None or bool(final.get("diverged"))
    recon = None if final is None or final.get("diverged") else final["test"]["recon_mse"]
    diverged = nonfinite or (recon is not None and not recon < DIVERGED_FRACTION * baseline_mse)
    spikes = spike_steps(finite)
    return {
        "spikes": len(spikes),
        "spike_steps": [steps[t] for t in spikes],
        "nonfinite": nonfinite,
        "diverged": diverged,
        "unstable": diverged or bool(spikes),
        "roughness": roughness(finite),
        "final_recon_mse": recon,
        "logged_steps": len(losses),
    }
