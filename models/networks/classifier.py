"""A small MNIST CNN: the offline judge of generated digits (confidence, class histogram, classifier-feature FID).

``fastrq train --model classifier [--epochs 3] [--out runs/classifier]`` or ``fastrq.models.classifier.main(argv)``.

Network (input ``[B, 1, 28, 28]`` in [0, 1])::

    Conv(1→32, 3×3, p1) BN ReLU → Conv(32→32, 3×3, p1) BN ReLU → MaxPool 2      28 → 14
    Conv(32→64, 3×3, p1) BN ReLU → Conv(64→64, 3×3, p1) BN ReLU → MaxPool 2     14 → 7
    Flatten → Linear(64·7·7 → 128) BN ReLU = features [B, 128] → Dropout → Linear(128 → 10) = logits

:meth:`MNISTClassifier.features` gives the 128-d penultimate activations used for the Fréchet distance. Training:
Adam, one-cycle LR, random ±2 px shifts; saved with :func:`fastrq.models.checkpoint.save_checkpoint` each epoch
(``--resume`` continues at the next epoch). ``final.json`` holds the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastrq.errors import FastRQError, ShapeError

from ..training.checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from ..training.data import batch_indices, default_data_dir, epoch_order, load_dataset
from ..training.interrupt import StopRequest
from ..training.metrics_log import MetricsLog

__all__ = ["MNISTClassifier", "load_classifier", "predict", "build_parser", "train", "main"]

FEATURE_DIM = 128


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class MNISTClassifier(nn.Module):
    """``[B, 1, 28, 28]`` → logits ``[B, 10]``; ``features()`` → ``[B, 128]``."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            *_conv(1, 32), *_conv(32, 32), nn.MaxPool2d(2),
            *_conv(32, 64), *_conv(64, 64), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM, bias=False), nn.BatchNorm1d(FEATURE_DIM), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ShapeError(f"images must be [B, 1, 28, 28], got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


@torch.no_grad()
def predict(model: MNISTClassifier, images: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """Eval-mode pass over ``images`` ``[N, 1, 28, 28]``: ``probs`` ``[N, 10]``, ``features`` ``[N, 128]`` (float32,
    CPU). Images are clamped to [0, 1] (decoder outputs may overshoot)."""
    was_training = model.training
    model.eval()
    probs, feats = [], []
    device = next(model.parameters()).device
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device).float().clamp(0, 1)
            f = model.features(x)
            feats.append(f.float().cpu())
            probs.append(model.head(f).float().softmax(-1).cpu())
    finally:
        model.train(was_training)
    return {"probs": torch.cat(probs) if probs else torch.zeros(0, 10),
            "features": torch.cat(feats) if feats else torch.zeros(0, FEATURE_DIM)}


def load_classifier(path: str | Path) -> MNISTClassifier:
    """A trained classifier from its run folder, checkpoint folder or ``checkpoints/`` directory (eval mode)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    ckpt = load_checkpoint(path)
    model = MNISTClassifier()
    load_model_weights(model, ckpt)
    return model.eval()


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ±max_shift px per image (zero fill): cheap augmentation."""
    padded = F.pad(x, (max_shift,) * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, x.shape[0]), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(x.shape[0])])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrq train --model classifier", description="train the MNIST judge CNN")
    p.add_argument("--out", default="runs/classifier", help="run folder")
    p.add_argument("--dataset", choices=("mnist", "synthetic"), default="mnist")
    p.add_argument("--data-dir", default=None, help=f"folder holding MNIST/raw (default: $FASTRQ_DATA or {default_data_dir()})")
    p.add_argument("--train-subset", type=int, default=0, help="use the first N training images (0 = all)")
    p.add_argument("--test-subset", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")
    return p


def train(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    train_split = load_dataset(args.dataset, data_dir=args.data_dir, train=True, subset=args.train_subset or None)
    test_split = load_dataset(args.dataset, data_dir=args.data_dir, train=False, subset=args.test_subset or None)
    run_config = {"model": "classifier", "args": vars(args)}
    torch.manual_seed(args.seed)
    model = MNISTClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = len(batch_indices(torch.arange(len(train_split)), args.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed + 1)
    epoch = 0
    metrics = MetricsLog(out / "metrics.jsonl")
    newest = latest_checkpoint(ckpt_dir) if args.resume else None
    if newest is not None:
        ckpt = load_checkpoint(newest)
        load_model_weights(model, ckpt)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        extra = ckpt.state["extra"]
        scheduler.load_state_dict(extra["scheduler"])
        generator.set_state(extra["generator"])
        restore_rng_state(ckpt.state["rng"][0])
        epoch = int(extra["epoch"])
        metrics.truncate_after(int(extra["step"]))
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run.json", json.dumps(run_config, indent=2, default=str))

    use_progress = not args.no_progress
    if use_progress:
        from tqdm.auto import tqdm
    seconds = 0.0
    with StopRequest() as stop:
        while epoch < args.epochs:
            model.train()
            batches = batch_indices(epoch_order(len(train_split), args.seed, epoch), args.batch_size)
            bar = tqdm(batches, desc=f"classifier epoch {epoch + 1}/{args.epochs}", leave=False, file=sys.stderr) if use_progress else batches
            total, count = 0.0, 0
            tick = time.perf_counter()
            for index in bar:
                x = _shift(train_split.images[index], generator)
                loss = F.cross_entropy(model(x), train_split.labels[index])
                value = float(loss.detach())
                if not math.isfinite(value):  # before the update: the weights stay as they were
                    raise FastRQError(f"classifier training diverged (loss {value}) in epoch {epoch}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total, count = total + value * len(index), count + len(index)
                if stop.requested():
                    break
            seconds += time.perf_counter() - tick
            if stop.requested():  # the epoch is incomplete: keep the last complete checkpoint, exit like train.py
                print("fastrq train --model classifier: interrupted; --resume restarts this epoch", file=sys.stderr)
                raise KeyboardInterrupt
            epoch += 1
            acc = accuracy(model, test_split.images, test_split.labels)
            metrics.write({"kind": "eval", "step": epoch * steps_per_epoch, "epoch": epoch, "train_loss": total / max(count, 1),
                           "test_accuracy": acc, "time_epoch_s": seconds})
            save_checkpoint(ckpt_dir, step=epoch * steps_per_epoch, model=model, optimizer=optimizer,
                            config={**json.loads(json.dumps(run_config, default=str)), "epoch": epoch},
                            extra={"epoch": epoch, "step": epoch * steps_per_epoch, "scheduler": scheduler.state_dict(),
                                   "generator": generator.get_state()})
    result = {"test_accuracy": accuracy(model, test_split.images, test_split.labels), "epochs": args.epochs,
              "test_images": len(test_split), "time_train_s": seconds}
    atomic_write_text(out / "final.json", json.dumps(result, indent=2))
    return result


def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    probs = predict(model, images)["probs"]
    return float((probs.argmax(-1) == labels).float().mean()) if len(labels) else math.nan


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = train(args)
    except KeyboardInterrupt:
        return 130
    except FastRQError as exc:
        print(f"fastrq train --model classifier: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
