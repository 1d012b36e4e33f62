"""``report.md`` of ``fastrq reproduce``: a self-contained page (tables, findings, figure links) rendered from the
report dict that ``results.json`` holds."""

from __future__ import annotations

from typing import Any

from .experiments import experiment_label
from .findings import format_list

__all__ = ["render_report"]


def render_report(report: dict[str, Any]) -> str:
    """The markdown of ``report`` (the dict :func:`fastrq.models.study.reproduce.reproduce` returns)."""
    lines = _intro(report) + _failures(report) + _results(report) + _findings(report) + _figures(report)
    failed = {item["section"] for item in report["failures"]}
    lines += _throughput(report.get("throughput"), "throughput" in failed) + _prior(report["prior"])
    lines += ["", "## Files", "", "- `results.json`: every number above; `runs/<name>/`: each run's metrics.jsonl, "
              "final.json, checkpoints and plots.", ""]
    return "\n".join(lines)


def _intro(report: dict[str, Any]) -> list[str]:
    preset, data = report["preset"], report["dataset"]
    return [
        f"# RQ-VAE vs VQ-VAE on {data['name']}: reproduction report",
        "",
        f"Preset **{report['preset_name']}**: {data['train_images']} training images, "
        f"{preset['epochs']} epochs, batch {preset['batch_size']}, Adam lr 2e-3, seed {report['seed']}, "
        f"evaluation on {data['test_images']} test images. Latent 7×7×4, β = 0.25, EMA decay 0.99. "
        f"fastrq {report['fastrq_version']} (git {report['git_revision']}), torch {report['torch_version']}, "
        f"{report['threads']} threads, device {report['device']}; wall time {report['time_wall_s'] / 60:.1f} min.",
        "",
    ]


def _failures(report: dict[str, Any]) -> list[str]:
    if not report["failures"]:
        return []
    lines = ["## Failures", "", f"{len(report['failures'])} section(s) failed, so this report is incomplete and "
             "`fastrq reproduce` exited with status 1 (the traceback is in its error output):", ""]
    lines += [f"- **{item['section']}**: {item['error']}" for item in report["failures"]]
    return lines + [""]


def _results(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Results (test set)",
        "",
        "| model | codebooks | total loss | recon MSE | PSNR (dB) | usage per level | perplexity per level | "
        "residual L2 norm (before, after each level) | train images/s |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for name, result in report["results"].items():
        t, cfg = result["test"], result["model_config"]
        if cfg["model"] == "vae":
            books = "– (Gaussian, KL)"
        else:
            books = f"{cfg['num_quantizers']}×{cfg['codebook_size']} {'EMA' if cfg['ema'] else 'learned'}"
        lines.append(
            f"| {experiment_label(name)} | {books} | {t['loss']:.5f} | "
            f"{t['recon_mse']:.5f} | {t['psnr']:.2f} | {format_list(t.get('usage'), '.3f')} | "
            f"{format_list(t.get('perplexity'), '.1f')} | {format_list(t.get('residual_norm'), '.4f')} | "
            f"{result.get('train_images_per_s') or 0:.0f} |"
        )
    return lines + [
        "",
        "Total loss = reconstruction MSE + quantizer loss (Σ levels β·commitment, plus the codebook term for learned "
        "codebooks) or + KL/pixels for the VAE, so the VAE's total is not comparable with the others; compare recon "
        "MSE / PSNR across all. Usage = fraction of a level's codes used on the test set; perplexity = exp(entropy) "
        "of the level's code histogram on the test set. Train images/s is measured during the run itself (the "
        "machine may have been shared).",
        "",
    ]


def _findings(report: dict[str, Any]) -> list[str]:
    lines = ["## Findings of the original study, checked", ""]
    verdicts = {True: "**reproduced**", False: "**not reproduced**", None: "(not decided automatically)"}
    lines += [f"- {item['finding']}: {verdicts[item['reproduced']]}. {item['evidence']}" for item in report["findings"]]
    return lines


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
        lines.append(f"See [prior_report.md](prior_report.md) (trained on the RQ 2×128 (EMA) codes; "
                     f"{prior['time_wall_s'] / 60:.1f} min including the classifier).")
        summary = prior.get("summary") or {}
        if summary:
            lines += ["", "Summary: " + ", ".join(f"{k} {v}" for k, v in summary.items()) + "."]
    elif prior.get("failed"):
        lines.append(f"**Failed**: {prior.get('reason')}.")
    else:
        lines.append(f"Not available: {prior.get('reason')}.")
    return lines
