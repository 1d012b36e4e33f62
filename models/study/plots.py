"""PNG figures of training runs (matplotlib, Agg backend; nothing is shown on screen).

- :func:`plot_curves`: loss curves of one or several runs from their ``metrics.jsonl`` (train loss per logged step,
  test loss per evaluation);
- :func:`plot_residual_norms`: mean L2 norm of the latent residual before and after each RQ level;
- :func:`plot_reconstructions`: originals and reconstructions side by side (one row each);
- :func:`plot_codebooks`: codebook usage and perplexity per level over training (train batches and test set);
- :func:`plot_run` / :func:`plot_trained_run`: the figures of a single run (``plots/``), drawn by ``fastrq train``
  after training and by ``fastrq reproduce`` for each of its runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..training.autoencoder import AutoencoderTrainConfig
from ..training.data import load_dataset
from ..training.distributed import resolve_device
from ..training.loaders import load_autoencoder
from ..training.metrics_log import read_jsonl

__all__ = ["plot_curves", "plot_residual_norms", "plot_reconstructions", "plot_codebooks", "plot_run",
           "plot_trained_run"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _legend_or_empty(ax) -> None:
    """The axes' legend, or "no records" across it when nothing was plotted."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no records", transform=ax.transAxes, ha="center")


def _save(plt, fig, path: str | os.PathLike, **options) -> Path:
    """Write ``fig`` to ``path`` (its folder created) at 110 dpi and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, **options)
    plt.close(fig)
    return path


def plot_curves(runs: Mapping[str, str | os.PathLike], path: str | os.PathLike, key: str = "loss",
                title: str = "total loss") -> Path:
    """``runs``: label → run folder (holding metrics.jsonl). Left: train ``key`` per logged step; right: test
    ``key`` per evaluation. Returns ``path``."""
    plt = _pyplot()
    fig, (ax_train, ax_test) = plt.subplots(1, 2, figsize=(11, 4))
    for label, folder in runs.items():
        records = read_jsonl(Path(folder) / "metrics.jsonl")
        train = [(r["step"], r[key]) for r in records if r.get("kind") == "train" and key in r]
        test = [(r["step"], r[key]) for r in records if r.get("kind") == "eval" and key in r]
        if train:
            ax_train.plot(*zip(*train), label=label, linewidth=1)
        if test:
            ax_test.plot(*zip(*test), marker="o", label=label)
    for ax, split in ((ax_train, "train (per batch)"), (ax_test, "test")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_yscale("log")
        ax.set_title(f"{title}: {split}")
        ax.grid(True, which="both", alpha=0.3)
        _legend_or_empty(ax)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_residual_norms(norms: Mapping[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """``norms``: label → [‖z‖, ‖r_1‖, …, ‖r_L‖] (mean L2 norms of the latent residual before / after each level)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in norms.items():
        ax.plot(range(len(values)), values, marker="o", label=label)
    ax.set_xlabel("levels applied")
    ax.set_ylabel("mean L2 norm of the latent residual")
    ax.set_title("quantization error after each level (test set)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_reconstructions(rows: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """``rows``: label → images ``[n, 1, H, W]`` (same n); one row per label, clamped to [0, 1]."""
    plt = _pyplot()
    labels = list(rows)
    n = rows[labels[0]].shape[0]
    fig, axes = plt.subplots(len(labels), n, figsize=(n * 0.8 + 1.2, len(labels) * 0.9), squeeze=False)
    for i, label in enumerate(labels):
        images = rows[label].detach().float().clamp(0, 1).cpu()
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(images[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.15, wspace=0.05, hspace=0.05)
    return _save(plt, fig, path, bbox_inches="tight")


def plot_codebooks(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Codebook usage (fraction of a level's codes used) and perplexity per level over training, from a run's
    metrics.jsonl: lines for the train batches (``batch_usage`` / ``batch_perplexity`` of the "train" records),
    markers for the test set ("eval" records). Returns ``path``."""
    plt = _pyplot()
    records = read_jsonl(Path(folder) / "metrics.jsonl")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("usage", "perplexity")):
        train = [(r["step"], r[f"batch_{key}"]) for r in records if r.get("kind") == "train" and f"batch_{key}" in r]
        test = [(r["step"], r[key]) for r in records if r.get("kind") == "eval" and key in r]
        for level in range(max([len(values) for _, values in train + test] or [0])):
            for points, style in ((train, dict(linewidth=1, alpha=0.7)), (test, dict(marker="o", linestyle="--"))):
                line = [(step, values[level]) for step, values in points if level < len(values)]
                if line:
                    split = "train batch" if points is train else "test set"
                    ax.plot(*zip(*line), color=f"C{level}", label=f"level {level + 1}: {split}", **style)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_title(f"codebook {key} per level")
        ax.grid(True, alpha=0.3)
        _legend_or_empty(ax)
    fig.tight_layout()
    return _save(plt, fig, path)


@torch.no_grad()
def plot_run(out: str | os.PathLike, model: torch.nn.Module, images: torch.Tensor) -> list[Path]:
    """``<out>/plots/curves.png``, ``<out>/plots/reconstructions.png`` and, for a quantized model,
    ``<out>/plots/codebooks.png`` for one run."""
    out = Path(out)
    was_training = model.training
    model.eval()
    recon = model(images)["recon"]
    model.train(was_training)
    label = out.name
    written = [
        plot_curves({label: out}, out / "plots" / "curves.png"),
        plot_reconstructions({"original": images, label: recon}, out / "plots" / "reconstructions.png"),
    ]
    if getattr(model, "num_levels", 0):
        written.append(plot_codebooks(out, out / "plots" / "codebooks.png"))
    return written


def plot_trained_run(config: AutoencoderTrainConfig) -> list[Path]:
    """:func:`plot_run` for the run that ``config`` trained: the model from its newest checkpoint and the first 16
    test images."""
    device = resolve_device(config.device)
    model = load_autoencoder(config.run_dir, device=device)
    subset = min(16, config.test_subset) if config.test_subset else 16
    images = load_dataset(config.dataset, data_dir=config.data_dir, train=False, subset=subset).images
    return plot_run(config.run_dir, model, images.to(device))
