"""``fastrq reproduce --preset quick|full --out DIR``: the RQ-VAE vs VQ-VAE study on MNIST, as a report folder.

Runs (same seed, same encoder/decoder, latent 7×7×4):

=================  =========================================================
``vae``            Gaussian VAE (KL term), the baseline
``vq256_ema``      VQ-VAE, 256 codes, EMA codebook
``vq256_learned``  VQ-VAE, 256 codes, gradient-learned codebook
``rq2x128_ema``    RQ-VAE, 2 levels × 128 codes, EMA
``rq2x128_learned``RQ-VAE, 2 levels × 128 codes, learned
``rq3x128_ema``    RQ-VAE, 3 levels × 128 codes, EMA (quantization error per level)
=================  =========================================================

and, when :mod:`fastrq.models.generative_eval` provides ``prior_report``, a classifier and an RQ-Transformer prior on
the RQ 2×128 codes with its generative evaluation. Then it measures training throughput (images/s) of each model
with each fastrq backend usable here (interleaved rounds, medians).

The folder ``DIR`` gets ``report.md`` (self-contained: tables, findings, figure links), ``results.json`` (every
number), ``figures/*.png`` and ``runs/<name>/`` (each run's metrics.jsonl, final.json, checkpoints). Runs whose
``final.json`` already exists are reused, interrupted runs are resumed: re-running the same command continues.

Presets: ``quick`` (first 20,000 training images, 3 epochs, 2,000 test images: ≤ 10 minutes on 2 idle CPU cores)
and ``full`` (all 60,000 / 10,000 images, 20 epochs: the curves flatten).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastrq.ops.backends import BACKENDS, backend_status
from fastrq.errors import FastRQError

from ..networks.autoencoders import ModelConfig, build_model
from ..training.checkpoint import atomic_write_text, load_model_weights
from ..training.data import default_data_dir, load_dataset
from ..training.metrics_log import read_jsonl
from . import plots
from ..training import autoencoder as trainer

__all__ = ["main", "EXPERIMENTS", "PRESETS", "measure_throughput"]

# name → (label, train arguments)
EXPERIMENTS: dict[str, tuple[str, list[str]]] = {
    "vae": ("VAE", ["--model", "vae"]),
    "vq256_ema": ("VQ 256 (EMA)", ["--model", "vqvae", "--codebook-size", "256"]),
    "vq256_learned": ("VQ 256 (learned)", ["--model", "vqvae", "--codebook-size", "256", "--learned-codebook"]),
    "rq2x128_ema": ("RQ 2×128 (EMA)", ["--model", "rqvae", "--codebook-size", "128", "--num-quantizers", "2"]),
    "rq2x128_learned": ("RQ 2×128 (learned)", ["--model", "rqvae", "--codebook-size", "128", "--num-quantizers", "2",
                                               "--learned-codebook"]),
    "rq3x128_ema": ("RQ 3×128 (EMA)", ["--model", "rqvae", "--codebook-size", "128", "--num-quantizers", "3"]),
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"train_subset": 20000, "test_subset": 2000, "epochs": 3, "eval_every": 40, "batch_size": 128,
              "throughput_steps": 4, "throughput_rounds": 3,
              "classifier_epochs": 1, "prior_epochs": 1, "prior_minutes": 1.0, "prior_samples": 1000},
    "full": {"train_subset": 0, "test_subset": 0, "epochs": 20, "eval_every": 0, "batch_size": 128,
             "throughput_steps": 10, "throughput_rounds": 5,
             "classifier_epochs": 3, "prior_epochs": 5, "prior_minutes": 29.0, "prior_samples": 2000},
}

# models timed for throughput (the learned-codebook variants cost the same search)
THROUGHPUT_MODELS = ("vae", "vq256_ema", "rq2x128_ema", "rq3x128_ema")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrq reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    p.add_argument("--out", default="reports/quick", help="report folder (default: reports/<preset>)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $FASTRQ_DATA or ./data)")
    p.add_argument("--dataset", choices=("mnist", "synthetic"), default="mnist")
    p.add_argument("--download", action="store_true")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", choices=tuple(EXPERIMENTS), help="run only these experiments")
    p.add_argument("--epochs", type=int, default=0, help="override the preset's epochs")
    p.add_argument("--train-subset", type=int, default=-1, help="override the preset's training subset (0: all)")
    p.add_argument("--no-prior", action="store_true", help="skip the RQ-Transformer prior section")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    p.add_argument("--throughput-steps", type=int, default=0, help="override the preset's steps per timing round")
    p.add_argument("--throughput-rounds", type=int, default=0, help="override the preset's timing rounds")
    p.add_argument("--no-progress", action="store_true")
    return p


# ------------------------------------------------------------------------------------------------ experiments


def _train_argv(name: str, args: argparse.Namespace, preset: dict[str, Any], out: Path) -> list[str]:
    argv = list(EXPERIMENTS[name][1]) + [
        "--out", str(out / "runs" / name), "--dataset", args.dataset, "--data-dir", args.data_dir,
        "--train-subset", str(preset["train_subset"]), "--test-subset", str(preset["test_subset"]),
        "--epochs", str(preset["epochs"]), "--eval-every", str(preset["eval_every"]),
        "--batch-size", str(preset["batch_size"]), "--seed", str(args.seed), "--threads", str(args.threads),
        "--device", args.device, "--resume",
    ]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def run_experiment(name: str, args: argparse.Namespace, preset: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train one experiment (or reuse its finished run); returns its final.json."""
    run = out / "runs" / name
    final = run / "final.json"
    if final.is_file():
        print(f"[reproduce] {name}: reusing {final}", flush=True)
        return json.loads(final.read_text())
    print(f"[reproduce] {name}: training ({EXPERIMENTS[name][0]})", flush=True)
    tick = time.perf_counter()
    train_args = trainer.build_parser().parse_args(_train_argv(name, args, preset, out))
    result = trainer.train(train_args)
    result["time_wall_s"] = time.perf_counter() - tick
    atomic_write_text(final, json.dumps(result, indent=2))
    return result


def _load_trained(out: Path, name: str, device: torch.device) -> torch.nn.Module:
    final = json.loads((out / "runs" / name / "final.json").read_text())
    model = build_model(ModelConfig.from_dict(final["model_config"]))
    load_model_weights(model, out / "runs" / name / "checkpoints")
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------ throughput


def _time_steps(model, optimizer, batches: list[torch.Tensor]) -> float:
    tick = time.perf_counter()
    for x in batches:
        out = model(x, return_stats=True)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return sum(b.shape[0] for b in batches) / (time.perf_counter() - tick)


def measure_throughput(images: torch.Tensor, device: torch.device, *, steps: int, rounds: int,
                       batch_size: int = 128, models: tuple[str, ...] = THROUGHPUT_MODELS) -> dict[str, Any]:
    """Training images/s (forward + backward + Adam step, ``batch_size`` images) of each model with each fastrq
    backend usable on ``device``. Rounds are interleaved (model A backend 1, A 2, B 1, …, then again) and the median
    over rounds is reported, so slow drifts of a shared machine hit every entry alike. Returns
    ``{"results": {model: {backend: images/s}}, "unavailable": {backend: reason}, ...}``."""
    status = backend_status(device)
    usable = [b for b in BACKENDS if status.get(b) is None]
    unavailable = {b: reason for b, reason in status.items() if reason is not None}
    if device.type == "cpu" and "triton" in usable:  # only under TRITON_INTERPRET=1: an emulator, not a fast path
        usable.remove("triton")
        unavailable["triton"] = "runs only in the Triton interpreter here (TRITON_INTERPRET=1): not timed"
    batches = [images[i * batch_size:(i + 1) * batch_size].to(device) for i in range(steps)]
    combos = []
    for name in models:
        argv = EXPERIMENTS[name][1]
        for backend in (usable if name != "vae" else ["-"]):
            parsed = trainer.build_parser().parse_args(argv + (["--backend", backend] if backend != "-" else []))
            torch.manual_seed(0)
            model = build_model(trainer.model_config_from_args(parsed)).to(device).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            _time_steps(model, optimizer, batches[:1])  # warm-up
            combos.append((name, backend, model, optimizer))
    samples: dict[tuple[str, str], list[float]] = {(n, b): [] for n, b, _, _ in combos}
    for _ in range(rounds):
        for name, backend, model, optimizer in combos:
            samples[(name, backend)].append(_time_steps(model, optimizer, batches))
    results: dict[str, dict[str, float]] = {}
    for (name, backend), values in samples.items():
        results.setdefault(name, {})[backend] = statistics.median(values)
    return {"results": results, "unavailable": unavailable, "steps": steps, "rounds": rounds,
            "batch_size": batch_size, "threads": torch.get_num_threads(), "device": str(device)}


# ------------------------------------------------------------------------------------------------ prior section


def prior_section(args: argparse.Namespace, preset: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train the classifier and the RQ-Transformer prior (on the RQ 2×128 EMA codes) and run
    ``generative_eval.prior_report``; ``{"available": False, "reason": ...}`` when that is not possible."""
    try:
        generative_eval = importlib.import_module("fastrq.models.study.generative_metrics")
        prior_report = getattr(generative_eval, "prior_report")
        prior = importlib.import_module("fastrq.models.training.prior")
        classifier = importlib.import_module("fastrq.models.networks.classifier")
    except (ImportError, AttributeError) as exc:
        return {"available": False, "reason": f"fastrq.models.generative_eval.prior_report is not available ({exc})"}
    common = ["--dataset", args.dataset, "--data-dir", args.data_dir, "--seed", str(args.seed),
              "--threads", str(args.threads), "--train-subset", str(preset["train_subset"])]
    if args.no_progress:
        common.append("--no-progress")
    classifier_dir, prior_dir = out / "runs" / "classifier", out / "runs" / "rqtransformer"
    tick = time.perf_counter()
    if not (classifier_dir / "final.json").is_file():
        print("[reproduce] classifier: training", flush=True)
        rc = classifier.main(common + ["--out", str(classifier_dir), "--epochs", str(preset["classifier_epochs"])])
        if rc:
            return {"available": False, "reason": f"classifier training failed (exit status {rc})"}
    if not (prior_dir / "final.json").is_file():
        print("[reproduce] rqtransformer prior: training", flush=True)
        rc = prior.main(common + ["--out", str(prior_dir), "--rqvae", str(out / "runs" / "rq2x128_ema"),
                                  "--epochs", str(preset["prior_epochs"]),  # sets the LR schedule's length
                                  "--max-minutes", str(preset["prior_minutes"]), "--resume"])
        if rc:
            return {"available": False, "reason": f"prior training failed (exit status {rc})"}
    print("[reproduce] rqtransformer prior: generative evaluation", flush=True)
    levels = json.loads((prior_dir / "final.json").read_text())["prior_config"]["depth"]
    report = prior_report(out, prior=prior_dir, classifier=classifier_dir, rqvae=out / "runs" / "rq2x128_ema",
                          num_samples=preset["prior_samples"], dataset=args.dataset, data_dir=args.data_dir,
                          test_subset=preset["test_subset"], seed=args.seed,
                          temperature=generative_eval.recommended_temperature(levels),
                          sweep=[{"temperature": 1.0}])  # plain temperature 1 always reported beside it
    summary: dict[str, Any] = {}
    try:  # a few headline numbers for report.md; the full report is prior_report.md
        summary = {
            "samples confident (p ≥ 0.9)": f"{report['samples']['confident_fraction']:.3f}",
            "samples classifier-FID": f"{report['samples']['classifier_fid']:.2f}",
            "reconstructions classifier-FID": f"{report['reconstructions']['classifier_fid']:.2f}",
            "targets met": ", ".join(f"{k}: {v}" for k, v in report["targets_met"].items()),
        }
    except (KeyError, TypeError):
        pass
    return {"available": True, "time_wall_s": time.perf_counter() - tick, "report": report, "summary": summary}


# ------------------------------------------------------------------------------------------------ findings


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


def _fmt_list(values, fmt: str) -> str:
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
                                  + _fmt_list(norms, ".4f") + " (figures/residual_norms.png)"})
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


# ------------------------------------------------------------------------------------------------ report


def _git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _markdown(report: dict[str, Any]) -> str:
    results, preset = report["results"], report["preset"]
    lines = [
        "# RQ-VAE vs VQ-VAE on MNIST: reproduction report",
        "",
        f"Preset **{report['preset_name']}**: {preset['train_subset'] or 60000} training images, "
        f"{preset['epochs']} epochs, batch {preset['batch_size']}, Adam lr 2e-3, seed {report['seed']}, "
        f"evaluation on {preset['test_subset'] or 10000} test images. Latent 7×7×4, β = 0.25, EMA decay 0.99. "
        f"fastrq {report['fastrq_version']} (git {report['git_revision']}), torch {report['torch_version']}, "
        f"{report['threads']} threads, device {report['device']}; wall time {report['time_wall_s'] / 60:.1f} min.",
        "",
        "## Results (test set)",
        "",
        "| model | codebooks | total loss | recon MSE | PSNR (dB) | usage per level | perplexity per level | "
        "residual L2 norm (before, after each level) | train images/s |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for name, result in results.items():
        t, cfg = result["test"], result["model_config"]
        if cfg["model"] == "vae":
            books = "– (Gaussian, KL)"
        else:
            books = f"{cfg['num_quantizers']}×{cfg['codebook_size']} {'EMA' if cfg['ema'] else 'learned'}"
        lines.append(
            f"| {EXPERIMENTS[name][0] if name in EXPERIMENTS else name} | {books} | {t['loss']:.5f} | "
            f"{t['recon_mse']:.5f} | {t['psnr']:.2f} | {_fmt_list(t.get('usage'), '.3f')} | "
            f"{_fmt_list(t.get('perplexity'), '.1f')} | {_fmt_list(t.get('residual_norm'), '.4f')} | "
            f"{result.get('train_images_per_s') or 0:.0f} |"
        )
    lines += [
        "",
        "Total loss = reconstruction MSE + quantizer loss (Σ levels β·commitment, plus the codebook term for learned "
        "codebooks) or + KL/pixels for the VAE, so the VAE's total is not comparable with the others; compare recon "
        "MSE / PSNR across all. Usage = fraction of a level's codes used on the test set; perplexity = exp(entropy) "
        "of the level's code histogram on the test set. Train images/s is measured during the run itself (the "
        "machine may have been shared).",
        "",
        "## Findings of the original study, checked",
        "",
    ]
    for item in report["findings"]:
        verdict = {True: "**reproduced**", False: "**not reproduced**", None: "(not decided automatically)"}[item["reproduced"]]
        lines.append(f"- {item['finding']}: {verdict}. {item['evidence']}")
    lines += ["", "## Figures", ""]
    for title, path in report["figures"].items():
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    tp = report.get("throughput")
    lines += ["## Training throughput (images/s)", ""]
    if tp is None:
        lines.append("Not measured (--no-throughput).")
    else:
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
            lines.append(f"| {EXPERIMENTS[name][0]} | " + " | ".join(cells) + " |")
        for backend, reason in tp["unavailable"].items():
            lines.append(f"\nBackend `{backend}` not measured: {reason}.")
    lines += ["", "## RQ-Transformer prior", ""]
    prior = report["prior"]
    if prior.get("available"):
        lines.append(f"See [prior_report.md](prior_report.md) (trained on the RQ 2×128 (EMA) codes; "
                     f"{prior['time_wall_s'] / 60:.1f} min including the classifier).")
        summary = prior.get("summary") or {}
        if summary:
            lines.append("")
            lines.append("Summary: " + ", ".join(f"{k} {v}" for k, v in summary.items()) + ".")
    else:
        lines.append(f"Not available: {prior.get('reason')}.")
    lines += ["", "## Files", "", "- `results.json`: every number above; `runs/<name>/`: each run's metrics.jsonl, "
              "final.json, checkpoints and plots.", ""]
    return "\n".join(lines)


def reproduce(args: argparse.Namespace) -> dict[str, Any]:
    preset = dict(PRESETS[args.preset])
    if args.epochs:
        preset["epochs"] = args.epochs
    if args.train_subset >= 0:
        preset["train_subset"] = args.train_subset
    if args.throughput_steps:
        preset["throughput_steps"] = args.throughput_steps
    if args.throughput_rounds:
        preset["throughput_rounds"] = args.throughput_rounds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = trainer.resolve_device(args.device)
    tick = time.perf_counter()
    names = [n for n in EXPERIMENTS if not args.only or n in args.only]
    results = {name: run_experiment(name, args, preset, out) for name in names}

    figures: dict[str, str] = {}
    runs = {EXPERIMENTS[n][0]: out / "runs" / n for n in names}
    main_runs = {EXPERIMENTS[n][0]: out / "runs" / n for n in ("vq256_ema", "rq2x128_ema", "vq256_learned",
                                                               "rq2x128_learned") if n in names}
    if main_runs:
        plots.plot_curves(main_runs, out / "figures" / "loss_curves.png", title="total loss")
        figures["Total loss: VQ 256 vs RQ 2×128"] = "figures/loss_curves.png"
    plots.plot_curves(runs, out / "figures" / "recon_curves.png", key="recon_mse", title="reconstruction MSE")
    figures["Reconstruction MSE, all models"] = "figures/recon_curves.png"
    pairs = {EXPERIMENTS[n][0]: out / "runs" / n for n in ("vq256_ema", "vq256_learned", "rq2x128_ema",
                                                           "rq2x128_learned") if n in names}
    if pairs:
        plots.plot_curves(pairs, out / "figures" / "ema_vs_learned.png", title="EMA vs learned codebooks")
        figures["EMA vs learned codebooks"] = "figures/ema_vs_learned.png"
    norms = {EXPERIMENTS[n][0]: results[n]["test"]["residual_norm"] for n in names if "residual_norm" in results[n]["test"]}
    if norms:
        plots.plot_residual_norms(norms, out / "figures" / "residual_norms.png")
        figures["Quantization error after each level"] = "figures/residual_norms.png"
    test = load_dataset(args.dataset, data_dir=args.data_dir, train=False, subset=12)
    rows = {"original": test.images}
    with torch.no_grad():
        for n in names:
            rows[EXPERIMENTS[n][0]] = _load_trained(out, n, device)(test.images.to(device))["recon"].cpu()
    plots.plot_reconstructions(rows, out / "figures" / "reconstructions.png")
    figures["Reconstructions (top: originals)"] = "figures/reconstructions.png"

    throughput = None
    if not args.no_throughput:
        print("[reproduce] measuring training throughput", flush=True)
        train_split = load_dataset(args.dataset, data_dir=args.data_dir, train=True,
                                   subset=preset["throughput_steps"] * preset["batch_size"])
        throughput = measure_throughput(train_split.images, device, steps=preset["throughput_steps"],
                                        rounds=preset["throughput_rounds"], batch_size=preset["batch_size"],
                                        models=tuple(n for n in THROUGHPUT_MODELS if n in names))
    prior = {"available": False, "reason": "skipped (--no-prior)"} if args.no_prior else (
        prior_section(args, preset, out) if "rq2x128_ema" in names
        else {"available": False, "reason": "needs the rq2x128_ema run"})

    from fastrq import __version__

    report = {
        "preset_name": args.preset, "preset": preset, "seed": args.seed, "threads": torch.get_num_threads(),
        "device": str(device), "fastrq_version": __version__, "torch_version": torch.__version__,
        "git_revision": _git_revision(), "platform": platform.platform(), "python": sys.version.split()[0],
        "results": results, "findings": findings(results, out), "figures": figures, "throughput": throughput,
        "prior": {k: v for k, v in prior.items() if k != "report"},
        "time_wall_s": time.perf_counter() - tick,
    }
    atomic_write_text(out / "results.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "report.md", _markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out == "reports/quick" and args.preset != "quick":
        args.out = f"reports/{args.preset}"
    if args.data_dir is None:
        args.data_dir = default_data_dir()
    try:
        report = reproduce(args)
    except KeyboardInterrupt:
        print("fastrq reproduce: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except FastRQError as exc:
        print(f"fastrq reproduce: error: {exc}", file=sys.stderr)
        return 2
    for item in report["findings"]:
        verdict = {True: "reproduced", False: "NOT reproduced", None: "not decided automatically"}[item["reproduced"]]
        print(f"{item['finding']}: {verdict}")
    print(f"report: {(Path(args.out) / 'report.md').resolve()} (took {report['time_wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
