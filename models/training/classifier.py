"""Train the MNIST judge CNN (:class:`~fastrq.models.networks.classifier.MNISTClassifier`): :func:`train_classifier`
on a :class:`ClassifierTrainConfig` (``fastrq train --model classifier`` builds one from its flags).

AdamW with a one-cycle LR schedule and random ±2 px shifts, in :class:`~.loop.TrainingLoop` (exact resume, stop
requests with a checkpoint first, NaN guard); a checkpoint and an "eval" record (train loss, test accuracy) at each
epoch end. Outputs in ``out`` (default ``runs/classifier``): ``run.json``, ``metrics.jsonl``, ``checkpoints/``,
``final.json`` (the test accuracy).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..networks.classifier import MNISTClassifier, predict
from .checkpoint import atomic_write_text
from .data import ImageSplit, batch_indices, epoch_order, load_splits
from .loop import LoopState, TrainingLoop, TrainingTask
from .metrics_log import MetricsLog

__all__ = ["ClassifierTrainConfig", "train_classifier", "accuracy"]


@dataclass
class ClassifierTrainConfig:
    """How to train the judge. The defaults are ``fastrq train --model classifier``'s: ``out``, ``dataset``,
    ``data_dir``, ``train_subset`` / ``test_subset`` (first N images, 0: all), ``epochs``, ``batch_size``, ``lr``
    (the one-cycle peak), ``seed``, ``threads`` (0: leave as is), ``resume``, ``progress``."""

    out: str = "runs/classifier"
    dataset: str = "mnist"
    data_dir: str | None = None
    train_subset: int = 0
    test_subset: int = 0
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    threads: int = 0
    resume: bool = False
    progress: bool = True


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ±max_shift px per image (zero fill): cheap augmentation."""
    padded = F.pad(x, (max_shift,) * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, x.shape[0]), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(x.shape[0])])


def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    probs = predict(model, images)["probs"]
    return float((probs.argmax(-1) == labels).float().mean()) if len(labels) else math.nan


class _ClassifierTask(TrainingTask):
    name = "classifier"

    def __init__(self, config: ClassifierTrainConfig, train: ImageSplit, test: ImageSplit, metrics: MetricsLog):
        self.config, self.train, self.test, self.metrics = config, train, test, metrics
        torch.manual_seed(config.seed)
        self.model = MNISTClassifier()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=1e-4)
        steps_per_epoch = len(batch_indices(torch.arange(len(train)), config.batch_size))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=config.lr,
                                                             total_steps=config.epochs * steps_per_epoch)
        self.generator = torch.Generator().manual_seed(config.seed + 1)  # the augmentation's shifts
        self.loss_sum, self.count, self.batch_size = 0.0, 0, 0  # this epoch's Σ loss·B and B

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return batch_indices(epoch_order(len(self.train), self.config.seed, epoch), self.config.batch_size)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        self.batch_size = len(batch)
        return F.cross_entropy(self.model(_shift(self.train.images[batch], self.generator)), self.train.labels[batch])

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()

    def after_step(self, loss: float) -> None:
        self.loss_sum, self.count = self.loss_sum + loss * self.batch_size, self.count + self.batch_size

    def end_epoch(self, state: LoopState) -> None:
        self.metrics.write({"kind": "eval", "step": state.step, "epoch": state.epoch + 1,
                            "train_loss": self.loss_sum / max(self.count, 1),
                            "test_accuracy": accuracy(self.model, self.test.images, self.test.labels),
                            "time_epoch_s": state.train_seconds})
        self.loss_sum, self.count = 0.0, 0

    def state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "epoch_loss": [self.loss_sum, self.count]}

    def load_state(self, extra: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(extra["scheduler"])
        self.generator.set_state(extra["generator"])
        self.loss_sum, self.count = extra.get("epoch_loss", [0.0, 0])  # epoch-end checkpoints of old runs lack it


def train_classifier(config: ClassifierTrainConfig) -> dict[str, Any]:
    """Train as configured; returns the final metrics (final.json).

    Raises :class:`~.interrupt.TrainingInterrupted` after saving a checkpoint when SIGINT/SIGTERM arrived, and
    :class:`~.loop.TrainingDivergedError` on a non-finite loss."""
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    train_split, test_split = load_splits(config)
    metrics = MetricsLog(out / "metrics.jsonl")
    task = _ClassifierTask(config, train_split, test_split, metrics)
    loop = TrainingLoop(task, out=out, run_config={"model": "classifier", "train_config": asdict(config)},
                        epochs=config.epochs, resume=config.resume, progress=config.progress, metrics=metrics)
    loop.run()
    result = {"test_accuracy": accuracy(task.model, test_split.images, test_split.labels), "epochs": config.epochs,
              "test_images": len(test_split), "time_train_s": loop.state.train_seconds}
    atomic_write_text(out / "final.json", json.dumps(result, indent=2))
    return result
