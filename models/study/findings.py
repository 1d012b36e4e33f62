"""The original study's four findings, each checked against this run's numbers (``fastrq reproduce``)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..training.metrics_log import read_jsonl

__all__ = ["findings", "format_list"]


def _roughness(folder: Path) -> float | None:
    """Instability of training: std of successive log-differences of the logged train loss over the second half
    of training (0 for a smooth curve; large for spikes and oscillation)."""
    losses = [r["loss"] for r in read_jsonl(folder / "metrics.jsonl") if r.get("kind") == "train"]
    losses = losses[len(losses) // 2:]
    if len(losses) < 3:
        return None
    logs = [math.log(max(v, 1e-12)) for v in losses]
    diffs = [b - a for a, b in zip(logs, logs[1:])]
    return statistics.pstdev(diffs)


def format_list(values, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values) if values else "–"


def findings(results: dict[str, dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The study's four findings, each checked against our numbers (``reproduced``: True/False/None = not run)."""
    found = []
    test = {name: r["test"] for name, r in results.items()}
    if "vq256_ema" in test and "rq2x128_ema" in test:
        vq, rq = test["vq256_ema"]["loss"], test["rq2x128_ema"]["loss"]
        vq_l, rq_l = test.get("vq256_learned", {}).get("loss"), test.get("rq2x128_learned", {}).get("loss")
        text = f"final test total loss: RQ 2×128 (EMA) {rq:.5f} vs VQ 256 (EMA) {vq:.5f}"
        ok = rq < vq
        if vq_l is not None and rq_l is not None:
            text += f"; learned codebooks: RQ {rq_l:.5f} vs VQ {vq_l:.5f}"
            ok = ok and rq_l < vq_l
        found.append({"finding": "1. RQ with 2 levels × 128 codes beats VQ with 256 codes", "reproduced": ok,
                      "evidence": text + " (curves: figures/loss_curves.png)"})
    if "rq3x128_ema" in test:
        norms = test["rq3x128_ema"]["residual_norm"]
        ok = all(b < a for a, b in zip(norms, norms[1:]))
        found.append({"finding": "2. with 3 levels the quantization error falls after every level", "reproduced": ok,
                      "evidence": "mean L2 norm of the latent residual before / after each level: "
                                  + format_list(norms, ".4f") + " (figures/residual_norms.png)"})
    found.append({"finding": "3. reconstructions side by side", "reproduced": None,
                  "evidence": "figures/reconstructions.png (first 12 test images; judge by eye; PSNR in the table)"})
    pairs = [("VQ", "vq256_ema", "vq256_learned"), ("RQ", "rq2x128_ema", "rq2x128_learned")]
    parts, verdicts = [], {}
    for label, ema, learned in pairs:
        if ema in results and learned in results:
            r_e, r_l = _roughness(out / "runs" / ema), _roughness(out / "runs" / learned)
            l_e, l_l = test[ema]["loss"], test[learned]["loss"]
            rough = lambda v: "n/a (too few logged steps)" if v is None else f"{v:.4f}"  # noqa: E731
            parts.append(f"{label}: train-loss roughness EMA {rough(r_e)} vs learned {rough(r_l)}, final test loss EMA "
                         f"{l_e:.5f} vs learned {l_l:.5f}")
            verdicts[label] = (r_e, r_l, l_e, l_l)
    if len(verdicts) == 2:
        r_e, r_l, l_e, l_l = verdicts["VQ"]
        vq_gap = l_l / l_e
        rq_gap = verdicts["RQ"][3] / verdicts["RQ"][2]
        # "clearly more stable for VQ": EMA smoother and better for VQ, and the EMA advantage larger for VQ than RQ
        ok = None if r_e is None or r_l is None else (r_e <= r_l and l_e <= l_l and vq_gap >= rq_gap)
        found.append({"finding": "4. EMA codebooks clearly more stable than learned ones for VQ, little difference for RQ",
                      "reproduced": ok,
                      "evidence": "; ".join(parts) + f"; learned/EMA test-loss ratio VQ {vq_gap:.3f}, RQ {rq_gap:.3f} "
                                  "(roughness = std of successive log-differences of the logged train loss over the "
                                  "second half of training; figures/ema_vs_learned.png)"})
    return found
