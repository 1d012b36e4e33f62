"""The original study's four findings, each decided on this run's numbers over seeds, and the summaries of the
ablation and of the learning-rate sweep (``fastrq reproduce``).

Verdicts: "reproduced", "not reproduced" (the difference is distinguishable and goes the other way), "not
distinguishable" (the difference lies inside the seeds' spread: :func:`~.statistics.compare` for per-seed metrics,
:func:`~.statistics.fisher_exact` with p ≥ 0.05 for counts of unstable runs), or None (not decided automatically:
judged by eye, or the section did not run). ``reproduced`` is True for "reproduced", False for the two negative
verdicts, None otherwise.
"""

from __future__ import annotations

from typing import Any

from .experiments import ABLATION_MODELS, ABLATION_ROWS, STABILITY_MODELS, experiment_label, lr_name
from .statistics import ALPHA, compare, fisher_exact, format_mean_std, mean_std

__all__ = ["findings", "format_list", "ablation_summary", "stability_summary", "health", "healthy", "USAGE_FLOOR",
           "PERPLEXITY_FLOOR"]

USAGE_FLOOR = 0.95       # every level uses ≥ 95 % of its codes on the test set ...
PERPLEXITY_FLOOR = 0.25  # ... with perplexity ≥ 0.25·K


def format_list(values, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values) if values else "–"


def _per_seed(result: dict[str, Any], key: str) -> list:
    return [test[key] for test in result["per_seed"].values()]


def health(result: dict[str, Any]) -> dict[str, bool] | None:
    """The codebook floor of issue 11, every seed and every level, on the test set: ``usage`` (≥ 0.95 of the codes
    used), ``perplexity`` (≥ 0.25·K) and ``healthy`` (both); None for a model without a quantizer."""
    size = result["model_config"].get("codebook_size")
    tests = list(result["per_seed"].values())
    if not tests or "usage" not in tests[0]:
        return None
    usage = all(min(t["usage"]) >= USAGE_FLOOR for t in tests)
    perplexity = all(min(t["perplexity"]) >= PERPLEXITY_FLOOR * size for t in tests)
    return {"usage": usage, "perplexity": perplexity, "healthy": usage and perplexity}


def healthy(result: dict[str, Any]) -> bool | None:
    """Both parts of :func:`health` hold (None: not quantized)."""
    parts = health(result)
    return None if parts is None else parts["healthy"]


def _verdict(verdict: str | None) -> bool | None:
    return {"reproduced": True, "not reproduced": False, "not distinguishable": False}.get(verdict)


def _pm(c: dict[str, Any], side: str, fmt: str = ".5f") -> str:
    return format_mean_std(c[f"mean_{side}"], c[f"std_{side}"], fmt)


def _finding_1(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    pairs = [(kind, f"rq2x128_{kind}", f"vq256_{kind}") for kind in ("ema", "learned")]
    pairs = [p for p in pairs if p[1] in results and p[2] in results]
    if not pairs:
        return None
    parts, verdicts = [], []
    for kind, rq, vq in pairs:
        c = compare(_per_seed(results[rq], "recon_mse"), _per_seed(results[vq], "recon_mse"))
        total = compare(_per_seed(results[rq], "loss"), _per_seed(results[vq], "loss"))
        verdict = {"a": "reproduced", "b": "not reproduced", None: "not distinguishable"}[c["lower"]]
        verdicts.append(verdict)
        paired = [seed for seed in results[rq]["per_seed"] if seed in results[vq]["per_seed"]]
        lower = sum(results[rq]["per_seed"][s]["recon_mse"] < results[vq]["per_seed"][s]["recon_mse"] for s in paired)
        parts.append(f"{'EMA' if kind == 'ema' else 'learned'} codebooks: test recon MSE RQ {_pm(c, 'a')} vs VQ "
                     f"{_pm(c, 'b')} ({verdict}; RQ lower in {lower} of {len(paired)} seeds, same seed = same "
                     f"initial encoder/decoder and batch order; total loss RQ {_pm(total, 'a')} vs VQ "
                     f"{_pm(total, 'b')})")
    if all(v == "reproduced" for v in verdicts):
        verdict = "reproduced"
    elif "not reproduced" in verdicts:
        verdict = "not reproduced"
    else:
        verdict = "not distinguishable"
    seeds = len(next(iter(results.values()))["seeds"])
    return {"finding": "1. RQ with 2 levels × 128 codes beats VQ with 256 codes", "verdict": verdict,
            "reproduced": _verdict(verdict),
            "evidence": "; ".join(parts) + f" (mean ± std over {seeds} seeds; decided on the reconstruction MSE; "
                        "curves: figures/loss_curves.png)"}


def _finding_2(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if "rq3x128_ema" not in results:
        return None
    result = results["rq3x128_ema"]
    per_seed = _per_seed(result, "residual_norm")
    falls = [all(b < a for a, b in zip(norms, norms[1:])) for norms in per_seed]
    verdict = "reproduced" if all(falls) else "not reproduced"
    mean, std = mean_std(per_seed)
    return {"finding": "2. with 3 levels the quantization error falls after every level", "verdict": verdict,
            "reproduced": _verdict(verdict),
            "evidence": "mean L2 norm of the latent residual before / after each level: "
                        + format_mean_std(mean, std, ".4f")
                        + f" (falls after every level in {sum(falls)} of {len(falls)} seeds; "
                          "figures/residual_norms.png)"}


def _finding_4(stability: dict[str, Any] | None) -> dict[str, Any]:
    name = "4. EMA codebooks clearly more stable than learned ones for VQ, little difference for RQ"
    if not stability:
        return {"finding": name, "verdict": None, "reproduced": None,
                "evidence": "not decided: the learning-rate sweep did not run (--no-stability)"}
    comparisons = stability["comparisons"]
    vq, rq = comparisons.get("VQ 256"), comparisons.get("RQ 2×128")
    if vq is None or rq is None:
        return {"finding": name, "verdict": None, "reproduced": None,
                "evidence": "not decided: the sweep lacks runs of VQ 256 or RQ 2×128 (see Failures)"}
    vq_diff = vq["p"] < ALPHA
    if vq_diff and vq["unstable_ema"] < vq["unstable_learned"]:
        verdict = "reproduced" if rq["p"] >= ALPHA else "not reproduced"
    elif vq_diff:
        verdict = "not reproduced"  # learned codebooks distinguishably more stable for VQ
    else:
        verdict = "not distinguishable"
    parts = [f"{label}: unstable runs EMA {c['unstable_ema']}/{c['runs_ema']} vs learned "
             f"{c['unstable_learned']}/{c['runs_learned']} (Fisher exact p = {c['p']:.3f})"
             for label, c in (("VQ", vq), ("RQ", rq))]
    return {"finding": name, "verdict": verdict, "reproduced": _verdict(verdict),
            "evidence": "; ".join(parts) + f" over learning rates {', '.join(map(lr_name, stability['lrs']))} × "
                        f"{stability['seeds']} seeds (unstable = a loss spike or divergence; see the stability "
                        "table; figures/ema_vs_learned.png)"}


def findings(results: dict[str, dict[str, Any]], stability: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The study's four findings decided on ``results`` (experiment → :func:`~.aggregate.aggregate`) and the
    learning-rate sweep's ``stability`` summary."""
    found = [f for f in (_finding_1(results), _finding_2(results)) if f is not None]
    found.append({"finding": "3. reconstructions side by side", "verdict": None, "reproduced": None,
                  "evidence": "figures/reconstructions.png (first 12 test images; judge by eye; PSNR in the table)"})
    if any(n in results for n in STABILITY_MODELS) or stability:
        found.append(_finding_4(stability))
    return found


# ------------------------------------------------------------------------------------------------ ablation


def ablation_summary(runs: dict[tuple[str, str], str], aggregated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per base model (VQ 256, RQ 2×128) and row (none, each lever, the defaults): the mean ± std test metrics,
    whether every seed is healthy, and the recon MSE compared with the "none" row."""
    tables: dict[str, Any] = {}
    for base, (label, _) in ABLATION_MODELS.items():
        rows = {}
        none_run = aggregated.get(runs.get((base, "none"), ""))
        for row, (row_label, _) in ABLATION_ROWS.items():
            name = runs.get((base, row))
            result = aggregated.get(name) if name else None
            if result is None:
                rows[row] = {"label": row_label, "run": name, "available": False}
                continue
            entry = {"label": row_label, "run": name, "available": True, "seeds": result["seeds"],
                     "healthy": healthy(result), "floor": health(result),
                     **{key: result["test"][key] for key in ("recon_mse", "usage", "perplexity")},
                     **{f"{key}_std": result["test_std"][key] for key in ("recon_mse", "usage", "perplexity")}}
            if none_run is not None and row != "none":
                c = compare(_per_seed(result, "recon_mse"), _per_seed(none_run, "recon_mse"))
                entry["recon_mse_vs_none"] = {"a": "lower", "b": "higher", None: "not distinguishable"}[c["lower"]]
            rows[row] = entry
        tables[base] = {"label": label, "rows": rows}
    return tables


# ------------------------------------------------------------------------------------------------ stability


def stability_summary(runs: dict[tuple[str, float], str], per_run: dict[tuple[str, int], dict[str, Any]],
                      aggregated: dict[str, dict[str, Any]], baseline_mse: float, default_lr: float) -> dict[str, Any]:
    """The sweep's table (experiment × learning rate: runs, spiked, diverged, unstable, final recon MSE and
    roughness, mean ± std) and, per model, EMA against learned (unstable counts over all learning rates, Fisher's
    exact test)."""
    lrs = sorted({lr for _, lr in runs})
    rows, totals = [], {}
    seeds = 0
    for experiment in STABILITY_MODELS:
        model_label, books = STABILITY_MODELS[experiment]
        total = totals.setdefault(experiment, {"runs": 0, "unstable": 0})
        for lr in lrs:
            name = runs.get((experiment, lr))
            records = [record for (run, _), record in sorted(per_run.items()) if run == name]
            seeds = max(seeds, len(records))
            finished = [r["final_recon_mse"] for r in records if r["final_recon_mse"] is not None]
            rough = [r["roughness"] for r in records if r["roughness"] is not None]
            row = {"experiment": experiment, "label": experiment_label(experiment), "model": model_label,
                   "codebooks": books, "lr": lr, "run": name, "runs": len(records),
                   "spiked": sum(r["spikes"] > 0 for r in records), "spikes": sum(r["spikes"] for r in records),
                   "diverged": sum(r["diverged"] for r in records), "unstable": sum(r["unstable"] for r in records),
                   "recon_mse": mean_std(finished) if finished else None,
                   "roughness": mean_std(rough) if rough else None}
            rows.append(row)
            total["runs"] += row["runs"]
            total["unstable"] += row["unstable"]
    comparisons = {}
    for model_label in dict.fromkeys(label for label, _ in STABILITY_MODELS.values()):
        ema = next((e for e, (m, b) in STABILITY_MODELS.items() if m == model_label and b == "EMA"), None)
        learned = next((e for e, (m, b) in STABILITY_MODELS.items() if m == model_label and b == "learned"), None)
        te, tl = totals.get(ema), totals.get(learned)
        if not te or not tl or not te["runs"] or not tl["runs"]:
            continue
        comparisons[model_label] = {"unstable_ema": te["unstable"], "runs_ema": te["runs"],
                                    "unstable_learned": tl["unstable"], "runs_learned": tl["runs"],
                                    "p": fisher_exact(te["unstable"], te["runs"], tl["unstable"], tl["runs"])}
    return {"lrs": lrs, "default_lr": default_lr, "seeds": seeds, "baseline_mse": baseline_mse, "rows": rows,
            "totals": totals, "comparisons": comparisons,
            "per_run": {f"{name}/seed{seed}": record for (name, seed), record in sorted(per_run.items())}}
