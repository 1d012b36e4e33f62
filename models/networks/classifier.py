"""A small MNIST CNN: the offline judge of generated digits (confidence, class histogram, classifier-feature FID).

Trained by :mod:`fastrq.models.training.classifier` (``fastrq train --model classifier``).

Network (input ``[B, 1, 28, 28]`` in [0, 1])::

    Conv(1→32, 3×3, p1) BN ReLU → Conv(32→32, 3×3, p1) BN ReLU → MaxPool 2      28 → 14
    Conv(32→64, 3×3, p1) BN ReLU → Conv(64→64, 3×3, p1) BN ReLU → MaxPool 2     14 → 7
    Flatten → Linear(64·7·7 → 128) BN ReLU = features [B, 128] → Dropout → Linear(128 → 10) = logits

:meth:`MNISTClassifier.features` gives the 128-d penultimate activations used for the Fréchet distance;
:func:`predict` runs a whole image set through it.
"""

from __future__ import annotations

import torch
from torch import nn

from fastrq.errors import ShapeError

__all__ = ["MNISTClassifier", "predict", "FEATURE_DIM"]

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
