"""PNG figures of training runs (matplotlib, Agg backend; nothing is shown on screen).

- :func:`plot_curves`: loss curves of one or several runs from their ``metrics.jsonl`` (train loss per logged step,
  test loss per evaluation);
- :func:`plot_residual_norms`: mean L2 norm of the latent residual before and after each RQ level;
- :func:`plot_reconstructions`: originals and reconstructions side by side (one row each);
- :func:`plot_run`: the two figures of a single run, written by ``fastrq train``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..training.metrics_log import read_jsonl

__all__ = ["plot_curves", "plot_residual_norms", "plot_reconstructions", "plot_run"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


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
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no records", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@torch.no_grad()
def plot_run(out: str | os.PathLike, model: torch.nn.Module, images: torch.Tensor) -> list[Path]:
    """``<out>/plots/curves.png`` and ``<out>/plots/reconstructions.png`` for one run."""
    out = Path(out)
    was_training = model.training
    model.eval()
    recon = model(images)["recon"]
    model.train(was_training)
    label = out.name
    return [
        plot_curves({label: out}, out / "plots" / "curves.png"),
        plot_reconstructions({"original": images, label: recon}, out / "plots" / "reconstructions.png"),
    ]
