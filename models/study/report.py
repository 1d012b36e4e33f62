"""``report.md`` of ``fastrq reproduce``: a self-contained page (tables, findings, figure links) rendered from the
report dict that ``results.json`` holds."""

from __future__ import annotations

from typing import Any

from .experiments import experiment_label, lr_name
from .findings import PERPLEXITY_FLOOR, USAGE_FLOOR, format_list, health
from .stability import DIVERGED_FRACTION, SPIKE_FACTOR, SPIKE_WINDOW
from .statistics import format_mean_std

__all__ = ["render_report", "QUICK_PRIOR_REFERENCE", "PRIOR_CONFIDENT_FLOOR"]

# the measured configuration that meets issue 6's targets (what a smoke prior is pointed to)
QUICK_PRIOR_REFERENCE = "benchmarks/results/prior_2026-11-24/"
PRIOR_CONFIDENT_FLOOR = 0.6  # below this share of confident samples the prior section is a smoke run


def render_report(report: dict[str, Any]) -> str:
    """The markdown of ``report`` (the dict :func:`fastrq.models.study.reproduce.reproduce` returns)."""
    lines = _intro(report) + _failures(report) + _results(report) + _health(report) + _findings(report)
    lines += _ablation(report.get("ablation")) + _stability(report.get("stability")) + _figures(report)
    failed = {item["section"] for item in report["failures"]}
    lines += _throughput(report.get("throughput"), "throughput" in failed) + _prior(report["prior"])
    lines += ["", "## Files", "", "- `results.json`: every number above (and every seed's); `runs/<name>/seed<k>/`: "
              "each run's metrics.jsonl, final.json, checkpoints and plots.", ""]
    return "\n".join(lines)


def _pm(mean, std, fmt: str) -> str:
    return format_mean_std(mean, std, fmt)


def _intro(report: dict[str, Any]) -> list[str]:
    preset, data = report["preset"], report["dataset"]
    seeds = report.get("seeds") or [report["seed"]]
    defaults = report.get("health_defaults") or {}
    levers = ", ".join(f"{k} = {v}" for k, v in defaults.items())
    return [
        f"# RQ-VAE vs VQ-VAE on {data['name']}: reproduction report",
        "",
        f"Preset **{report['preset_name']}**: {data['train_images']} training images, "
        f"{preset['epochs']} epoch(s), batch {preset['batch_size']}, Adam lr {lr_name(preset.get('lr', 2e-3))}, "
        f"seeds {', '.join(map(str, seeds))}, evaluation on {data['test_images']} test images. Latent 7×7×4. "
        f"Quantizer defaults: {levers or 'see results.json'}. "
        f"fastrq {report['fastrq_version']} (git {report['git_revision']}), torch {report['torch_version']}, "
        f"{report['threads']} threads ({report.get('jobs', 1)} trainings at a time), device {report['device']}; "
        f"wall time {report['time_wall_s'] / 60:.1f} min.",
        "",
        f"Every number is the mean ± sample std over the {len(seeds)} seeds. Two numbers are **distinguishable** "
        "when their mean ± std intervals do not overlap (|mean₁ − mean₂| > std₁ + std₂); otherwise the difference "
        "lies inside the seeds' spread and is reported as **not distinguishable**. Counts of unstable runs are "
        "compared with Fisher's exact test (two-sided, distinguishable when p < 0.05).",
        "",
    ]


def _failures(report: dict[str, Any]) -> list[str]:
    if not report["failures"]:
        return []
    lines = ["## Failures", "", f"{len(report['failures'])} section(s) failed, so this report is incomplete and "
             "`fastrq reproduce` exited with status 1 (the traceback is in its error output):", ""]
    for item in report["failures"]:
        seeds = f" (seeds {', '.join(map(str, item['seeds']))})" if item.get("seeds") else ""
        lines.append(f"- **{item['section']}**: {item['error']}{seeds}")
    return lines + [""]


def _books(cfg: dict[str, Any]) -> str:
    if cfg["model"] == "vae":
        return "– (Gaussian, KL)"
    return f"{cfg['num_quantizers']}×{cfg['codebook_size']} {'EMA' if cfg['ema'] else 'learned'}"


def _results(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Results (test set)",
        "",
        "| model | codebooks | seeds | total loss | recon MSE | PSNR (dB) | usage per level | perplexity per level | "
        "residual L2 norm (before, after each level) | train images/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for name, result in report["results"].items():
        t, s = result["test"], result["test_std"]
        seeds = str(len(result["seeds"])) + (f" ({len(result['diverged_seeds'])} diverged)"
                                             if result.get("diverged_seeds") else "")
        lines.append(
            f"| {experiment_label(name)} | {_books(result['model_config'])} | {seeds} | "
            f"{_pm(t['loss'], s['loss'], '.5f')} | {_pm(t['recon_mse'], s['recon_mse'], '.5f')} | "
            f"{_pm(t['psnr'], s['psnr'], '.2f')} | "
            f"{_pm(t['usage'], s['usage'], '.3f') if 'usage' in t else '–'} | "
            f"{_pm(t['perplexity'], s['perplexity'], '.1f') if 'perplexity' in t else '–'} | "
            f"{format_list(t.get('residual_norm'), '.4f')} | {result.get('train_images_per_s') or 0:.0f} |"
        )
    return lines + [
        "",
        "Total loss = reconstruction MSE + quantizer loss (Σ levels β·commitment, plus the codebook term for learned "
        "codebooks) or + KL/pixels for the VAE, so the VAE's total is not comparable with the others; compare recon "
        "MSE / PSNR across all. Usage = fraction of a level's codes used on the test set; perplexity = exp(entropy) "
        f"of the level's code histogram on the test set. Healthy codebooks: usage ≥ {USAGE_FLOOR} and perplexity ≥ "
        f"{PERPLEXITY_FLOOR}·K at every level. Train images/s is measured during the runs themselves (the machine "
        "may have been shared, and several trainings ran at once).",
        "",
    ]


def _yes(flag: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[flag]


def _health(report: dict[str, Any]) -> list[str]:
    rows = [(name, result, health(result)) for name, result in report["results"].items()]
    rows = [row for row in rows if row[2] is not None]
    if not rows:
        return []
    lines = [
        "## Codebook health (test set)", "",
        f"The floor of issue 11: every level of every VQ and RQ model uses ≥ {USAGE_FLOOR:.0%} of its codes, with "
        f"perplexity ≥ {PERPLEXITY_FLOOR}·K; “every seed” checks each seed's each level. The ceiling is the highest "
        "perplexity any quantizer could reach on what the level quantizes: identical inputs must share a code, and "
        "on MNIST the latent vectors of blank regions are a few exact duplicates holding about 45 % of all vectors "
        "(`fastrq.models.training.evaluation.perplexity_ceiling`).", "",
        "| model | usage per level | usage floor (every seed) | perplexity per level | ceiling per level | "
        "0.25·K | perplexity floor (every seed) |",
        "| --- | --- | --- | --- | --- | ---: | --- |",
    ]
    for name, result, parts in rows:
        t, s = result["test"], result["test_std"]
        ceiling = _pm(t["perplexity_ceiling"], s["perplexity_ceiling"], ".1f") if "perplexity_ceiling" in t else "–"
        size = result["model_config"]["codebook_size"]
        lines.append(f"| {experiment_label(name)} | {_pm(t['usage'], s['usage'], '.3f')} | {_yes(parts['usage'])} | "
                     f"{_pm(t['perplexity'], s['perplexity'], '.1f')} | {ceiling} | {PERPLEXITY_FLOOR * size:g} | "
                     f"{_yes(parts['perplexity'])} |")
    return lines + [""]


def _findings(report: dict[str, Any]) -> list[str]:
    lines = ["## Findings of the original study, checked", ""]
    for item in report["findings"]:
        verdict = item.get("verdict")
        if verdict is None and "verdict" not in item:  # results.json of an older report
            verdict = {True: "reproduced", False: "not reproduced"}.get(item.get("reproduced"))
        text = f"**{verdict}**" if verdict else "(not decided automatically)"
        lines.append(f"- {item['finding']}: {text}. {item['evidence']}")
    return lines


def _ablation(ablation: dict[str, Any] | None) -> list[str]:
    if not ablation:
        return []
    lines = ["", "## Codebook-health ablation (EMA codebooks, test set)", "",
             "Each row turns one lever on with every other lever off (\"none\": the quantizer as the study ran before "
             "issue 11); the last row is the defaults (the main experiment's runs). \"vs none\": the recon MSE "
             "compared with the \"none\" row by the rule above. Floors as in the codebook-health table (every seed, "
             "every level).", ""]
    for table in ablation.values():
        lines += [f"### {table['label']}", "",
                  "| levers | seeds | recon MSE | vs none | usage per level | usage floor | perplexity per level | "
                  "perplexity floor |",
                  "| --- | ---: | ---: | --- | --- | --- | --- | --- |"]
        for row in table["rows"].values():
            if not row.get("available"):
                lines.append(f"| {row['label']} | 0 | – | – | – | – | – | (failed) |")
                continue
            floor = row.get("floor") or {}
            lines.append(
                f"| {row['label']} | {len(row['seeds'])} | {_pm(row['recon_mse'], row['recon_mse_std'], '.5f')} | "
                f"{row.get('recon_mse_vs_none', '–')} | {_pm(row['usage'], row['usage_std'], '.3f')} | "
                f"{_yes(floor.get('usage'))} | {_pm(row['perplexity'], row['perplexity_std'], '.1f')} | "
                f"{_yes(floor.get('perplexity'))} |")
        lines.append("")
    return lines


def _stability(stability: dict[str, Any] | None) -> list[str]:
    if not stability:
        return []
    lines = [
        "", "## Training stability: learning-rate sweep", "",
        f"Every run logs its train loss at every step. A **spike** is a step after the first {SPIKE_WINDOW} whose "
        f"loss exceeds {SPIKE_FACTOR:g}× the median loss of the {SPIKE_WINDOW} steps before it. A run **diverged** "
        "when its loss became non-finite (the NaN guard stopped it) or its final test recon MSE is at least "
        f"{DIVERGED_FRACTION:g}× that of the trivial reconstruction (the mean training image: "
        f"{stability['baseline_mse']:.5f}). **Unstable** = spiked or diverged. Roughness = std of successive "
        "log-differences of the train loss over the second half of training. "
        f"lr {lr_name(stability['default_lr'])} is the main experiments' runs.", "",
        "| model | codebooks | lr | runs | spiked | diverged | unstable | final recon MSE | roughness |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in stability["rows"]:
        recon = _pm(*row["recon_mse"], ".5f") if row["recon_mse"] else "–"
        rough = _pm(*row["roughness"], ".4f") if row["roughness"] else "–"
        lines.append(f"| {row['model']} | {row['codebooks']} | {lr_name(row['lr'])} | {row['runs']} | "
                     f"{row['spiked']} | {row['diverged']} | {row['unstable']} | {recon} | {rough} |")
    lines += ["", "| model | unstable runs, EMA | unstable runs, learned | Fisher exact p |", "| --- | ---: | ---: | ---: |"]
    for label, c in stability["comparisons"].items():
        lines.append(f"| {label} | {c['unstable_ema']} / {c['runs_ema']} | {c['unstable_learned']} / "
                     f"{c['runs_learned']} | {c['p']:.3f} |")
    return lines + [""]


def _figures(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Figures", ""]
    for title, path in report["figures"].items():
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    return lines


def _throughput(tp: dict[str, Any] | None, failed: bool) -> list[str]:
    lines = ["## Training throughput (images/s)", ""]
    if tp is None:
        return lines + ["Not measured: the measurement failed (see Failures)." if failed
                        else "Not measured (--no-throughput)."]
    backends = sorted({b for per in tp["results"].values() for b in per if b != "-"})
    lines += [
        f"Forward + backward + Adam step on batches of {tp['batch_size']}, {tp['steps']} steps per round, median "
        f"of {tp['rounds']} interleaved rounds, {tp['threads']} threads, device {tp['device']}.",
        "",
        "| model | " + " | ".join(backends or ["-"]) + " |",
        "| --- | " + " | ".join("---:" for _ in backends or ["-"]) + " |",
    ]
    for name, per in tp["results"].items():
        if "-" in per:
            cells = [f"{per['-']:.0f} (no quantizer)"] + [""] * (len(backends) - 1)
        else:
            cells = [f"{per[b]:.0f}" if b in per else "–" for b in backends]
        lines.append(f"| {experiment_label(name)} | " + " | ".join(cells) + " |")
    for backend, reason in tp["unavailable"].items():
        lines.append(f"\nBackend `{backend}` not measured: {reason}.")
    return lines


def _prior(prior: dict[str, Any]) -> list[str]:
    lines = ["", "## RQ-Transformer prior", ""]
    if prior.get("available"):
        summary = prior.get("summary") or {}
        confident = summary.get("confident_fraction")
        if confident is not None and confident < PRIOR_CONFIDENT_FLOOR:
            lines += [f"**This is a smoke run, not a result**: only {confident:.0%} of its samples are confident "
                      f"(p ≥ 0.9) after {summary.get('prior_steps')} steps "
                      f"({summary.get('prior_train_minutes', 0):.1f} min) of prior training, below the "
                      f"{PRIOR_CONFIDENT_FLOOR:.0%} at which a person recognises most samples. It shows that the "
                      "pipeline runs, not what the prior can do: the configuration measured to meet the sample-quality "
                      f"targets (29 minutes of training on 2 cores) is in `{QUICK_PRIOR_REFERENCE}` "
                      "(README.md there).", ""]
        lines.append(f"See [prior_report.md](prior_report.md) (trained on the RQ 2×128 (EMA) codes of the first seed: "
                     f"{summary.get('prior_steps')} steps, {summary.get('prior_train_minutes', 0):.1f} min of "
                     f"training beside the other trainings; the evaluation took "
                     f"{prior.get('time_evaluation_s', 0) / 60:.1f} min).")
        hidden = ("confident_fraction", "prior_steps", "prior_train_minutes")
        shown = {k: v for k, v in summary.items() if k not in hidden}
        if shown:
            lines += ["", "Summary: " + ", ".join(f"{k} {v}" for k, v in shown.items()) + "."]
    elif prior.get("failed"):
        lines.append(f"**Failed**: {prior.get('reason')}.")
    else:
        lines.append(f"Not available: {prior.get('reason')}.")
    return lines
