"""The RQ-VAE vs VQ-VAE study as a report folder: :func:`reproduce` on a :class:`ReproduceConfig`
(``fastrq reproduce --preset quick|full --out DIR`` builds one from its flags).

Sections, in order:

1. each experiment of :data:`~.experiments.EXPERIMENTS` (``--only``: a subset) trained with
   :func:`~fastrq.models.training.train_autoencoder`, then its run's plots;
2. the figures (loss curves, EMA vs learned, residual norms per level, reconstructions);
3. training throughput of each model with each fastrq backend usable here (:mod:`.throughput`);
4. the prior: the judge classifier, the RQ-Transformer prior on the RQ 2×128 (EMA) codes and its generative
   evaluation (:func:`~.prior_report.prior_report`).

A section that fails (any exception) is reported, in ``report.md`` ("Failures") and ``results.json``
("failures"), with its traceback on stderr; the other sections still run, and the command exits with status 1.
Missing data stops the study before it starts (the data set is loaded first); a stop request (Ctrl-C) stops it
after the running trainer's checkpoint.

The folder ``DIR`` gets ``report.md`` (self-contained: tables, findings, figure links; its title names the data
set, as read from the data), ``results.json`` (every number), ``figures/*.png`` and ``runs/<name>/`` (each run's
metrics.jsonl, final.json, checkpoints, plots). Runs whose ``final.json`` already exists are reused, interrupted
runs are resumed: re-running the same command continues.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..training.autoencoder import AutoencoderTrainConfig, train_autoencoder
from ..training.checkpoint import atomic_write_text
from ..training.classifier import ClassifierTrainConfig, train_classifier
from ..training.data import ImageSplit, load_dataset
from ..training.distributed import resolve_device
from ..training.loaders import load_autoencoder
from ..training.prior import PriorTrainConfig, train_prior
from . import plots
from .experiments import EXPERIMENTS, PRESETS, THROUGHPUT_MODELS, experiment_label, experiment_model
from .findings import findings
from .prior_report import prior_report
from .report import render_report
from .sampling import recommended_temperature, write_run_samples
from .throughput import measure_throughput

__all__ = ["ReproduceConfig", "reproduce"]

PRIOR_RUN = "rq2x128_ema"  # the experiment whose codes the prior learns


@dataclass
class ReproduceConfig:
    """What ``fastrq reproduce`` runs. The defaults are its flags' defaults.

    ``preset`` (:data:`~.experiments.PRESETS`); ``out`` (None: ``reports/<preset>``); ``dataset``, ``data_dir``,
    ``download``; ``threads``, ``device``, ``seed``; ``only`` (experiment names, None: all); overrides of the
    preset: ``epochs`` (0: the preset's), ``train_subset`` (-1: the preset's, 0: all), ``throughput_steps`` /
    ``throughput_rounds`` (0: the preset's); ``prior`` / ``throughput``: run those sections; ``progress``."""

    preset: str = "quick"
    out: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = False
    threads: int = 2
    device: str = "auto"
    seed: int = 0
    only: tuple[str, ...] | None = None
    epochs: int = 0
    train_subset: int = -1
    throughput_steps: int = 0
    throughput_rounds: int = 0
    prior: bool = True
    throughput: bool = True
    progress: bool = True

    @property
    def report_dir(self) -> Path:
        return Path(self.out or f"reports/{self.preset}")

    def preset_values(self) -> dict[str, Any]:
        """The preset with this config's overrides applied."""
        preset = dict(PRESETS[self.preset])
        for key, value, unset in (("epochs", self.epochs, 0), ("train_subset", self.train_subset, -1),
                                  ("throughput_steps", self.throughput_steps, 0),
                                  ("throughput_rounds", self.throughput_rounds, 0)):
            if value != unset:
                preset[key] = value
        return preset


class _Sections:
    """Runs the study's sections; one that raises is recorded in ``failures`` and the study goes on."""

    def __init__(self) -> None:
        self.failures: list[dict[str, str]] = []

    def run(self, section: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - any failure of a section is reported, not hidden
            traceback.print_exc()
            self.failures.append({"section": section, "error": f"{type(exc).__name__}: {exc}"})
            print(f"[reproduce] {section}: FAILED ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
            return None

    def failed(self, section: str) -> bool:
        return any(item["section"] == section for item in self.failures)


# ------------------------------------------------------------------------------------------------ sections


def run_experiment(name: str, config: ReproduceConfig, preset: dict[str, Any]) -> dict[str, Any]:
    """Train one experiment (or reuse its finished run) and draw its run's plots; returns its final.json."""
    run = config.report_dir / "runs" / name
    final = run / "final.json"
    if final.is_file():
        print(f"[reproduce] {name}: reusing {final}", flush=True)
        return json.loads(final.read_text())
    print(f"[reproduce] {name}: training ({experiment_label(name)})", flush=True)
    tick = time.perf_counter()
    train_config = AutoencoderTrainConfig(
        model=experiment_model(name), out=str(run), dataset=config.dataset, data_dir=config.data_dir,
        train_subset=preset["train_subset"], test_subset=preset["test_subset"], epochs=preset["epochs"],
        eval_every=preset["eval_every"], batch_size=preset["batch_size"], seed=config.seed, threads=config.threads,
        device=config.device, resume=True, progress=config.progress)
    result = train_autoencoder(train_config)
    plots.plot_trained_run(train_config)
    result["time_wall_s"] = time.perf_counter() - tick
    atomic_write_text(final, json.dumps(result, indent=2))
    return result


def draw_figures(out: Path, results: dict[str, dict[str, Any]], test: ImageSplit,
                 device: torch.device) -> dict[str, str]:
    """The study's figures from its finished runs; returns title → path (relative to ``out``)."""
    names = list(results)
    runs = {experiment_label(n): out / "runs" / n for n in names}
    figures: dict[str, str] = {}
    main_runs = {experiment_label(n): out / "runs" / n
                 for n in ("vq256_ema", "rq2x128_ema", "vq256_learned", "rq2x128_learned") if n in results}
    if main_runs:
        plots.plot_curves(main_runs, out / "figures" / "loss_curves.png", title="total loss")
        figures["Total loss: VQ 256 vs RQ 2×128"] = "figures/loss_curves.png"
    if runs:
        plots.plot_curves(runs, out / "figures" / "recon_curves.png", key="recon_mse", title="reconstruction MSE")
        figures["Reconstruction MSE, all models"] = "figures/recon_curves.png"
    pairs = {experiment_label(n): out / "runs" / n
             for n in ("vq256_ema", "vq256_learned", "rq2x128_ema", "rq2x128_learned") if n in results}
    if pairs:
        plots.plot_curves(pairs, out / "figures" / "ema_vs_learned.png", title="EMA vs learned codebooks")
        figures["EMA vs learned codebooks"] = "figures/ema_vs_learned.png"
    norms = {experiment_label(n): r["test"]["residual_norm"] for n, r in results.items()
             if "residual_norm" in r["test"]}
    if norms:
        plots.plot_residual_norms(norms, out / "figures" / "residual_norms.png")
        figures["Quantization error after each level"] = "figures/residual_norms.png"
    rows = {"original": test.images}
    with torch.no_grad():
        for n in names:
            model = load_autoencoder(out / "runs" / n, device=device)
            rows[experiment_label(n)] = model(test.images.to(device))["recon"].cpu()
    plots.plot_reconstructions(rows, out / "figures" / "reconstructions.png")
    figures["Reconstructions (top: originals)"] = "figures/reconstructions.png"
    return figures


def train_judge(config: ReproduceConfig, preset: dict[str, Any]) -> Path:
    """The classifier that judges the prior's samples (reused when its run is finished); returns its run folder."""
    folder = config.report_dir / "runs" / "classifier"
    if not (folder / "final.json").is_file():
        print("[reproduce] classifier: training", flush=True)
        train_classifier(ClassifierTrainConfig(
            out=str(folder), dataset=config.dataset, data_dir=config.data_dir, seed=config.seed,
            threads=config.threads, train_subset=preset["train_subset"], epochs=preset["classifier_epochs"],
            progress=config.progress))
    return folder


def train_prior_run(config: ReproduceConfig, preset: dict[str, Any]) -> Path:
    """The RQ-Transformer prior on the RQ 2×128 (EMA) codes (resumed / reused); returns its run folder."""
    folder = config.report_dir / "runs" / "rqtransformer"
    if not (folder / "final.json").is_file():
        print("[reproduce] rqtransformer prior: training", flush=True)
        train_prior(PriorTrainConfig(
            rqvae=str(config.report_dir / "runs" / PRIOR_RUN), out=str(folder), dataset=config.dataset,
            data_dir=config.data_dir, seed=config.seed, threads=config.threads, train_subset=preset["train_subset"],
            epochs=preset["prior_epochs"],  # sets the LR schedule's length
            max_minutes=preset["prior_minutes"], resume=True, progress=config.progress))
        write_run_samples(folder, num=64, seed=config.seed)
    return folder


def evaluate_prior(config: ReproduceConfig, preset: dict[str, Any], judge: Path, prior: Path) -> dict[str, Any]:
    """``prior_report`` with the recommended per-depth temperatures (and plain temperature 1 beside them), and a
    few headline numbers for report.md."""
    print("[reproduce] rqtransformer prior: generative evaluation", flush=True)
    levels = json.loads((prior / "final.json").read_text())["prior_config"]["depth"]
    report = prior_report(config.report_dir, prior=prior, classifier=judge,
                          rqvae=config.report_dir / "runs" / PRIOR_RUN, num_samples=preset["prior_samples"], dataset=config.dataset, data_dir=config.data_dir,
                          test_subset=preset["test_subset"], seed=config.seed,
                          temperature=recommended_temperature(levels),
                          sweep=[{"temperature": 1.0}])  # plain temperature 1 always reported beside it
    return {
        "samples confident (p ≥ 0.9)": f"{report['samples']['confident_fraction']:.3f}",
        "samples classifier-FID": f"{report['samples']['classifier_fid']:.2f}",
        "reconstructions classifier-FID": f"{report['reconstructions']['classifier_fid']:.2f}",
        "targets met": ", ".join(f"{k}: {v}" for k, v in report["targets_met"].items()),
    }


def prior_section(config: ReproduceConfig, preset: dict[str, Any], sections: _Sections,
                  results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Classifier, prior and generative evaluation as three sections; the summary for report.md."""
    if not config.prior:
        return {"available": False, "reason": "skipped (--no-prior)"}
    if PRIOR_RUN not in results:
        failed = sections.failed(PRIOR_RUN)
        return {"available": False, "failed": failed,
                "reason": f"the {PRIOR_RUN} run failed" if failed else f"needs the {PRIOR_RUN} run"}
    tick = time.perf_counter()
    judge = sections.run("classifier", lambda: train_judge(config, preset))
    prior = sections.run("rqtransformer prior", lambda: train_prior_run(config, preset))
    if judge is None or prior is None:
        failed = [name for name, done in (("classifier", judge), ("rqtransformer prior", prior)) if done is None]
        return {"available": False, "failed": True, "reason": f"{' and '.join(failed)} training failed"}
    summary = sections.run("generative evaluation", lambda: evaluate_prior(config, preset, judge, prior))
    if summary is None:
        return {"available": False, "failed": True, "reason": "the generative evaluation failed"}
    return {"available": True, "time_wall_s": time.perf_counter() - tick, "summary": summary}


# ------------------------------------------------------------------------------------------------ the study


def _git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def reproduce(config: ReproduceConfig) -> dict[str, Any]:
    """Run the study (see the module docstring); writes report.md and results.json and returns the report dict,
    whose ``failures`` lists the sections that failed."""
    preset = config.preset_values()
    out = config.report_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    tick = time.perf_counter()
    # first: missing data stops the study here, with where to put the files; 12 test images for the figure
    test = load_dataset(config.dataset, data_dir=config.data_dir, train=False, download=config.download, subset=12)
    sections = _Sections()
    names = [n for n in EXPERIMENTS if not config.only or n in config.only]
    results = {}
    for name in names:
        result = sections.run(name, lambda name=name: run_experiment(name, config, preset))
        if result is not None:
            results[name] = result
    figures = sections.run("figures", lambda: draw_figures(out, results, test, device)) or {}
    throughput = None
    if config.throughput:
        throughput = sections.run("throughput", lambda: _throughput(config, preset, device, results))
    prior = prior_section(config, preset, sections, results)

    from fastrq import __version__

    first = next(iter(results.values()), {})
    report = {
        "preset_name": config.preset, "preset": preset, "seed": config.seed, "threads": torch.get_num_threads(),
        "device": str(device), "fastrq_version": __version__, "torch_version": torch.__version__,
        "git_revision": _git_revision(), "platform": platform.platform(), "python": sys.version.split()[0],
        "dataset": {"name": test.name, "train_images": first.get("train_images", preset["train_subset"] or "all"),
                    "test_images": first.get("test_images", preset["test_subset"] or "all")},
        "results": results, "findings": findings(results, out), "figures": figures, "throughput": throughput,
        "prior": prior, "failures": sections.failures,
        "time_wall_s": time.perf_counter() - tick,
    }
    atomic_write_text(out / "results.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "report.md", render_report(report))
    return report


def _throughput(config: ReproduceConfig, preset: dict[str, Any], device: torch.device,
                results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    print("[reproduce] measuring training throughput", flush=True)
    train_split = load_dataset(config.dataset, data_dir=config.data_dir, train=True,
                               subset=preset["throughput_steps"] * preset["batch_size"])
    return measure_throughput(train_split.images, device, steps=preset["throughput_steps"],
                              rounds=preset["throughput_rounds"], batch_size=preset["batch_size"],
                              models=tuple(n for n in THROUGHPUT_MODELS if n in results))
