"""The RQ-VAE vs VQ-VAE study as a report folder: :func:`reproduce` on a :class:`ReproduceConfig`
(``fastrq reproduce --preset quick|full --out DIR`` builds one from its flags).

Sections, in order:

1. the main experiments of :data:`~.experiments.EXPERIMENTS` (``--only``: a subset), each trained with
   ``seeds`` consecutive seeds by :func:`~fastrq.models.training.train_autoencoder` (plots for the first seed);
2. the codebook-health ablation (VQ 256 and RQ 2×128: every lever off, one lever at a time, the defaults);
3. the learning-rate sweep for training stability (:mod:`.stability`: VQ 256 and RQ 2×128, EMA and learned);
4. the figures (loss curves, EMA vs learned, residual norms per level, reconstructions; first seed);
5. training throughput of each model with each fastrq backend usable here (:mod:`.throughput`);
6. the prior: the judge classifier, the RQ-Transformer prior on the RQ 2×128 (EMA) codes of the first seed and
   its generative evaluation (:func:`~.prior_report.prior_report`).

Every training (sections 1–3 and the prior's two) is a task of :func:`~.runner.run_tasks`: ``jobs`` of them run at
once in worker processes, each with ``threads // jobs`` threads (default: one single-threaded worker per thread).
A run that shares its configuration with another section (the ablation's defaults, the sweep's default learning
rate) is trained once. Every number in the tables is the mean ± std over the seeds (:mod:`.statistics` says when
two differ).

A section that fails (any exception; every seed of an experiment diverging) is reported, in ``report.md``
("Failures") and ``results.json`` ("failures"), with its traceback on stderr; the other sections still run, and the
command exits with status 1. A run whose loss turns non-finite is a result (it "diverged"), not a failure. Missing
data stops the study before it starts (the data set is loaded first); a stop request (Ctrl-C) stops it after every
running trainer's checkpoint.

The folder ``DIR`` gets ``report.md`` (self-contained: tables, findings, figure links; its title names the data
set, as read from the data), ``results.json`` (every number), ``figures/*.png`` and ``runs/<name>/seed<k>/`` (each
run's metrics.jsonl, final.json, checkpoints, plots). Runs whose ``final.json`` already exists are reused,
interrupted runs are resumed: re-running the same command continues.
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

from ..networks.autoencoders import ModelConfig
from ..training.autoencoder import AutoencoderTrainConfig, train_autoencoder
from ..training.checkpoint import atomic_write_text
from ..training.classifier import ClassifierTrainConfig, train_classifier
from ..training.data import ImageSplit, load_dataset
from ..training.distributed import resolve_device
from ..training.loaders import load_autoencoder
from ..training.loop import TrainingDivergedError
from ..training.prior import PriorTrainConfig, train_prior
from . import plots
from .aggregate import aggregate
from .experiments import (
    ABLATION_MODELS, ABLATION_ROWS, EXPERIMENTS, PRESETS, STABILITY_MODELS, THROUGHPUT_MODELS, ablation_runs,
    experiment_label, experiment_model, lr_name, stability_runs,
)
from .findings import ablation_summary, findings, stability_summary
from .prior_report import prior_report
from .report import render_report
from .runner import Task, run_tasks
from .sampling import recommended_temperature, write_run_samples
from .stability import run_stability
from .throughput import measure_throughput

__all__ = ["ReproduceConfig", "reproduce", "ExperimentRun", "run_experiment"]

PRIOR_RUN = "rq2x128_ema"  # the experiment whose codes (first seed) the prior learns
SECTION_ORDER = ("main", "ablation", "stability", "classifier", "rqtransformer prior", "generative evaluation",
                 "figures", "throughput")


@dataclass
class ReproduceConfig:
    """What ``fastrq reproduce`` runs. The defaults are its flags' defaults.

    ``preset`` (:data:`~.experiments.PRESETS`); ``out`` (None: ``reports/<preset>``); ``dataset``, ``data_dir``,
    ``download``; ``threads`` (in all), ``jobs`` (trainings at once, each with ``threads // jobs`` threads; 0: one
    per thread), ``device``, ``seed`` (the first seed); ``only`` (main experiments, None: all); overrides of the
    preset: ``seeds`` / ``epochs`` (0: the preset's), ``train_subset`` (-1: the preset's, 0: all),
    ``throughput_steps`` / ``throughput_rounds`` (0: the preset's); ``ablation`` / ``stability`` / ``prior`` /
    ``throughput``: run those sections; ``progress``."""

    preset: str = "quick"
    out: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = False
    threads: int = 2
    jobs: int = 0
    device: str = "auto"
    seed: int = 0
    seeds: int = 0
    only: tuple[str, ...] | None = None
    epochs: int = 0
    train_subset: int = -1
    throughput_steps: int = 0
    throughput_rounds: int = 0
    ablation: bool = True
    stability: bool = True
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
                                  ("seeds", self.seeds, 0), ("throughput_steps", self.throughput_steps, 0),
                                  ("throughput_rounds", self.throughput_rounds, 0)):
            if value != unset:
                preset[key] = value
        return preset

    @property
    def job_count(self) -> int:
        return max(1, self.jobs or self.threads)

    @property
    def threads_per_job(self) -> int:
        return max(1, self.threads // self.job_count)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.preset_values()["seeds"])]


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class ExperimentRun:
    """One training of the study: ``train`` (its config; ``train.out`` is the run folder), whether to draw its
    run's ``plots``, its ``label``."""

    train: AutoencoderTrainConfig
    label: str
    plots: bool = False


def run_experiment(run: ExperimentRun) -> dict[str, Any]:
    """Train one run (or reuse its finished run) and draw its plots; returns its final.json. A run whose loss turns
    non-finite returns (and stores) ``{"diverged": True, "error": ..., ...}``: divergence is a result here."""
    folder = run.train.run_dir
    final = folder / "final.json"
    if final.is_file():
        print(f"[reproduce] {folder}: reusing final.json", flush=True)
        return json.loads(final.read_text())
    print(f"[reproduce] {folder}: training ({run.label}, seed {run.train.seed})", flush=True)
    tick = time.perf_counter()
    try:
        result = train_autoencoder(run.train)
    except TrainingDivergedError as exc:
        result = {"diverged": True, "error": str(exc), "model": run.train.model.model,
                  "model_config": run.train.model.to_dict(), "seed": run.train.seed, "lr": run.train.lr}
    else:
        if run.plots:
            plots.plot_trained_run(run.train)
    result["time_wall_s"] = time.perf_counter() - tick
    atomic_write_text(final, json.dumps(result, indent=2))
    print(f"[reproduce] {folder}: done in {result['time_wall_s']:.0f} s"
          + (" (diverged)" if result.get("diverged") else ""), flush=True)
    return result


def train_judge(config: ReproduceConfig, preset: dict[str, Any]) -> Path:
    """The classifier that judges the prior's samples (reused when its run is finished); returns its run folder."""
    folder = config.report_dir / "runs" / "classifier"
    if not (folder / "final.json").is_file():
        print("[reproduce] classifier: training", flush=True)
        train_classifier(ClassifierTrainConfig(
            out=str(folder), dataset=config.dataset, data_dir=config.data_dir, seed=config.seed,
            threads=config.threads_per_job, train_subset=preset["train_subset"], epochs=preset["classifier_epochs"],
            progress=config.progress and config.job_count == 1))
    return folder


def prior_rqvae(config: ReproduceConfig) -> Path:
    return config.report_dir / "runs" / PRIOR_RUN / f"seed{config.seed}"


def train_prior_run(config: ReproduceConfig, preset: dict[str, Any]) -> Path:
    """The RQ-Transformer prior on the RQ 2×128 (EMA) codes of the first seed (resumed / reused); returns its run
    folder."""
    folder = config.report_dir / "runs" / "rqtransformer"
    if not (folder / "final.json").is_file():
        print("[reproduce] rqtransformer prior: training", flush=True)
        train_prior(PriorTrainConfig(
            rqvae=str(prior_rqvae(config)), out=str(folder), dataset=config.dataset,
            data_dir=config.data_dir, seed=config.seed, threads=config.threads_per_job,
            train_subset=preset["train_subset"], epochs=preset["prior_epochs"],  # sets the LR schedule's length
            max_minutes=preset["prior_minutes"], resume=True, progress=config.progress and config.job_count == 1,
            **preset.get("prior", {})))
        write_run_samples(folder, num=64, seed=config.seed)
    return folder


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class _Plan:
    """The study's distinct runs: run name → (label, network, learning rate), and which section wants which."""

    runs: dict[str, tuple[str, ModelConfig, float]]
    main: list[str]
    ablation: dict[tuple[str, str], str]
    stability: dict[tuple[str, float], str]


def _plan(config: ReproduceConfig, preset: dict[str, Any]) -> _Plan:
    lr = preset["lr"]
    main = [n for n in EXPERIMENTS if not config.only or n in config.only]
    runs = {name: (experiment_label(name), experiment_model(name), lr) for name in main}
    ablation, stability = {}, {}
    if config.ablation:
        for (base, row), (name, model) in ablation_runs().items():
            ablation[(base, row)] = name
            runs.setdefault(name, (f"{ABLATION_MODELS[base][0]}, {ABLATION_ROWS[row][0]}", model, lr))
    if config.stability:
        for (experiment, rate), (name, model) in stability_runs(tuple(preset["stability_lrs"]), lr).items():
            stability[(experiment, rate)] = name
            runs.setdefault(name, (f"{experiment_label(experiment)}, lr {lr_name(rate)}", model, rate))
    return _Plan(runs, main, ablation, stability)


def _train_config(config: ReproduceConfig, preset: dict[str, Any], name: str, model: ModelConfig, lr: float,
                  seed: int) -> AutoencoderTrainConfig:
    return AutoencoderTrainConfig(
        model=model, out=str(config.report_dir / "runs" / name / f"seed{seed}"), dataset=config.dataset,
        data_dir=config.data_dir, train_subset=preset["train_subset"], test_subset=preset["test_subset"],
        epochs=preset["epochs"], eval_every=preset["eval_every"], batch_size=preset["batch_size"], lr=lr, seed=seed,
        threads=config.threads_per_job, device=config.device, log_every=1, resume=True,
        progress=config.progress and config.job_count == 1)


def _tasks(config: ReproduceConfig, preset: dict[str, Any], plan: _Plan) -> list[Task]:
    """Every training as a task: the prior's RQ-VAE first, then the classifier and the prior (which can run beside
    the other trainings), then every other run, seed after seed."""
    tasks = []
    for seed in config.seed_list:
        for name, (label, model, lr) in plan.runs.items():
            run = ExperimentRun(_train_config(config, preset, name, model, lr, seed), label,
                                plots=seed == config.seed and name in plan.main)
            tasks.append(Task(f"{name}/seed{seed}", name, run_experiment, (run,)))
    want_prior = config.prior and PRIOR_RUN in plan.main
    if want_prior:
        first = next(i for i, t in enumerate(tasks) if t.key == f"{PRIOR_RUN}/seed{config.seed}")
        tasks.insert(0, tasks.pop(first))
        tasks.insert(1, Task("classifier", "classifier", train_judge, (config, preset)))
        tasks.insert(2, Task("rqtransformer prior", "rqtransformer prior", train_prior_run, (config, preset),
                             after=f"{PRIOR_RUN}/seed{config.seed}"))
    return tasks


# ------------------------------------------------------------------------------------------------ sections


class _Sections:
    """Runs the study's in-process sections; one that raises is recorded in ``failures`` and the study goes on."""

    def __init__(self) -> None:
        self.failures: list[dict[str, Any]] = []

    def add(self, section: str, error: str, **details: Any) -> None:
        self.failures.append({"section": section, "error": error, **details})
        print(f"[reproduce] {section}: FAILED ({error})", file=sys.stderr, flush=True)

    def run(self, section: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - any failure of a section is reported, not hidden
            traceback.print_exc()
            self.add(section, f"{type(exc).__name__}: {exc}")
            return None

    def failed(self, section: str) -> bool:
        return any(item["section"] == section for item in self.failures)

    def ordered(self, plan: _Plan) -> list[dict[str, Any]]:
        """Failures in the report's order: main experiments, ablation and sweep runs, then the other sections."""
        names = list(plan.main) + [n for n in plan.runs if n not in plan.main]
        rank = {name: i for i, name in enumerate(names)}
        rank.update({s: len(names) + i for i, s in enumerate(SECTION_ORDER)})
        return sorted(self.failures, key=lambda f: rank.get(f["section"], len(rank)))


def draw_figures(out: Path, results: dict[str, dict[str, Any]], seed: int, test: ImageSplit,
                 device: torch.device, sweep: dict[tuple[str, float], str] | None = None) -> dict[str, str]:
    """The study's figures from its finished runs (seed ``seed``); returns title → path (relative to ``out``).
    ``sweep``: the learning-rate sweep's runs ((experiment, lr) → run name), drawn per model."""
    def folder(name: str) -> Path:
        return out / "runs" / name / f"seed{seed}"

    names = [n for n in results if seed in results[n]["seeds"]]
    figures: dict[str, str] = {}
    main_runs = {experiment_label(n): folder(n)
                 for n in ("vq256_ema", "rq2x128_ema", "vq256_learned", "rq2x128_learned") if n in names}
    if main_runs:
        plots.plot_curves(main_runs, out / "figures" / "loss_curves.png", title=f"total loss (seed {seed})")
        figures["Total loss: VQ 256 vs RQ 2×128"] = "figures/loss_curves.png"
    if names:
        plots.plot_curves({experiment_label(n): folder(n) for n in names}, out / "figures" / "recon_curves.png",
                          key="recon_mse", title=f"reconstruction MSE (seed {seed})")
        figures["Reconstruction MSE, all models"] = "figures/recon_curves.png"
    pairs = {experiment_label(n): folder(n)
             for n in ("vq256_ema", "vq256_learned", "rq2x128_ema", "rq2x128_learned") if n in names}
    if pairs:
        plots.plot_curves(pairs, out / "figures" / "ema_vs_learned.png", title="EMA vs learned codebooks")
        figures["EMA vs learned codebooks"] = "figures/ema_vs_learned.png"
    for model_label, tag in (("VQ 256", "vq256"), ("RQ 2×128", "rq2x128")):
        lines = {f"{STABILITY_MODELS[experiment][1]}, lr {lr_name(lr)}": folder(name)
                 for (experiment, lr), name in sorted((sweep or {}).items())
                 if STABILITY_MODELS[experiment][0] == model_label and (folder(name) / "metrics.jsonl").is_file()}
        if lines:
            path = out / "figures" / f"lr_sweep_{tag}.png"
            plots.plot_curves(lines, path, title=f"{model_label}, learning-rate sweep (seed {seed})")
            figures[f"{model_label}: learning-rate sweep, EMA and learned codebooks"] = f"figures/{path.name}"
    norms = {experiment_label(n): results[n]["test"]["residual_norm"] for n in names
             if "residual_norm" in results[n]["test"]}
    if norms:
        plots.plot_residual_norms(norms, out / "figures" / "residual_norms.png")
        figures["Quantization error after each level (mean over seeds)"] = "figures/residual_norms.png"
    rows = {"original": test.images}
    with torch.no_grad():
        for n in names:
            model = load_autoencoder(folder(n), device=device)
            rows[experiment_label(n)] = model(test.images.to(device))["recon"].cpu()
    plots.plot_reconstructions(rows, out / "figures" / "reconstructions.png")
    figures[f"Reconstructions (top: originals; seed {seed})"] = "figures/reconstructions.png"
    return figures


def evaluate_prior(config: ReproduceConfig, preset: dict[str, Any], judge: Path, prior: Path) -> dict[str, Any]:
    """``prior_report`` with the recommended per-depth temperatures (and plain temperature 1 beside them), and a
    few headline numbers for report.md."""
    print("[reproduce] rqtransformer prior: generative evaluation", flush=True)
    levels = json.loads((prior / "final.json").read_text())["prior_config"]["depth"]
    report = prior_report(config.report_dir, prior=prior, classifier=judge, rqvae=prior_rqvae(config),
                          num_samples=preset["prior_samples"], dataset=config.dataset, data_dir=config.data_dir,
                          test_subset=preset["test_subset"], seed=config.seed,
                          temperature=recommended_temperature(levels),
                          sweep=[{"temperature": 1.0}])  # plain temperature 1 always reported beside it
    return {
        "samples confident (p ≥ 0.9)": f"{report['samples']['confident_fraction']:.3f}",
        "samples classifier-FID": f"{report['samples']['classifier_fid']:.2f}",
        "reconstructions classifier-FID": f"{report['reconstructions']['classifier_fid']:.2f}",
        "targets met": ", ".join(f"{k}: {v}" for k, v in report["targets_met"].items()),
        "confident_fraction": report["samples"]["confident_fraction"],
        "prior_steps": (report.get("prior_training") or {}).get("steps"),
        "prior_train_minutes": ((report.get("prior_training") or {}).get("time_train_s") or 0.0) / 60,
    }


def prior_section(config: ReproduceConfig, preset: dict[str, Any], sections: _Sections, plan: _Plan,
                  done: dict[str, Any]) -> dict[str, Any]:
    """The generative evaluation of the trained prior (classifier and prior were tasks); the summary for report.md."""
    if not config.prior:
        return {"available": False, "reason": "skipped (--no-prior)"}
    if PRIOR_RUN not in plan.main:
        return {"available": False, "reason": f"needs the {PRIOR_RUN} run"}
    judge, prior = done.get("classifier"), done.get("rqtransformer prior")
    if judge is None or prior is None:
        if f"{PRIOR_RUN}/seed{config.seed}" not in done:
            return {"available": False, "failed": True, "reason": f"the {PRIOR_RUN} run (seed {config.seed}) failed"}
        failed = [name for name, path in (("classifier", judge), ("rqtransformer prior", prior)) if path is None]
        return {"available": False, "failed": True, "reason": f"{' and '.join(failed)} training failed"}
    tick = time.perf_counter()
    summary = sections.run("generative evaluation", lambda: evaluate_prior(config, preset, judge, prior))
    if summary is None:
        return {"available": False, "failed": True, "reason": "the generative evaluation failed"}
    return {"available": True, "time_evaluation_s": time.perf_counter() - tick, "summary": summary}


def _baseline_mse(config: ReproduceConfig, preset: dict[str, Any]) -> float:
    """Test MSE of the trivial reconstruction: the mean training image for every test image."""
    train = load_dataset(config.dataset, data_dir=config.data_dir, train=True, subset=preset["train_subset"] or None)
    test = load_dataset(config.dataset, data_dir=config.data_dir, train=False, subset=preset["test_subset"] or None)
    return float((test.images - train.images.mean(0, keepdim=True)).pow(2).mean())


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
    plan = _plan(config, preset)
    tasks = _tasks(config, preset, plan)
    print(f"[reproduce] {len(tasks)} trainings ({len(plan.runs)} configurations × {len(config.seed_list)} seeds"
          f"{' + classifier + prior' if any(t.key == 'classifier' for t in tasks) else ''}), {config.job_count} at "
          f"a time with {config.threads_per_job} thread(s) each", flush=True)
    tasks_tick = time.perf_counter()
    done, task_failures = run_tasks(tasks, config.job_count)
    tasks_seconds = time.perf_counter() - tasks_tick
    by_run: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in done.items():
        if "/seed" in key:
            name, seed = key.rsplit("/seed", 1)
            by_run.setdefault(name, {})[int(seed)] = value
    failed_seeds: dict[str, list[tuple[int, str]]] = {}
    for failure in task_failures:
        if "/seed" in failure.key:
            name, seed = failure.key.rsplit("/seed", 1)
            failed_seeds.setdefault(name, []).append((int(seed), failure.error))
        else:
            sections.add(failure.section, failure.error)
    for name, items in failed_seeds.items():  # one entry per configuration, naming the seeds that failed
        sections.add(name, items[0][1], seeds=[seed for seed, _ in items])
    aggregated: dict[str, dict[str, Any]] = {}
    for name, finals in by_run.items():
        summary = aggregate(plan.runs[name][0], finals)
        if summary is None:
            if name not in failed_seeds:
                sections.add(name, "every seed diverged (non-finite loss)", seeds=sorted(finals))
        else:
            aggregated[name] = summary
    results = {name: aggregated[name] for name in plan.main if name in aggregated}

    figures = sections.run("figures", lambda: draw_figures(out, results, config.seed, test, device,
                                                           plan.stability)) or {}
    throughput = None
    if config.throughput:
        throughput = sections.run("throughput", lambda: _throughput(config, preset, device, results))
    prior = prior_section(config, preset, sections, plan, done)
    ablation = ablation_summary(plan.ablation, aggregated) if plan.ablation else None
    stability = None
    if plan.stability:
        baseline = _baseline_mse(config, preset)
        per_run = {(name, seed): run_stability(out / "runs" / name / f"seed{seed}", final, baseline)
                   for name, finals in by_run.items() if name in plan.stability.values()
                   for seed, final in finals.items()}
        stability = stability_summary(plan.stability, per_run, aggregated, baseline, preset["lr"])

    from fastrq import __version__

    first = next(iter(aggregated.values()), {})
    report = {
        "preset_name": config.preset, "preset": preset, "seed": config.seed, "seeds": config.seed_list,
        "threads": config.threads, "jobs": config.job_count, "threads_per_job": config.threads_per_job,
        "device": str(device), "fastrq_version": __version__, "torch_version": torch.__version__,
        "git_revision": _git_revision(), "platform": platform.platform(), "python": sys.version.split()[0],
        "dataset": {"name": test.name, "train_images": first.get("train_images", preset["train_subset"] or "all"),
                    "test_images": first.get("test_images", preset["test_subset"] or "all")},
        "health_defaults": {k: v for k, v in ModelConfig().to_dict().items()
                            if k in ("kmeans_init", "dead_code_threshold", "rotation_trick", "use_cosine_sim",
                                     "codebook_dim", "decay", "commitment_weight")},
        "results": results, "findings": findings(results, stability), "ablation": ablation, "stability": stability,
        "figures": figures, "throughput": throughput, "prior": prior, "failures": sections.ordered(plan),
        "time_trainings_s": tasks_seconds, "time_wall_s": time.perf_counter() - tick,
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
