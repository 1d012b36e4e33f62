"""Metrics of generated MNIST digits judged by our own classifier (no Inception weights needed).

For a set of images ``[N, 1, 28, 28]`` and a trained :class:`~fastrq.models.networks.classifier.MNISTClassifier`:

- ``confident_fraction``: fraction of images whose top class probability is ≥ 0.9;
- ``class_entropy``: entropy (nats) of the histogram of predicted classes (ln 10 ≈ 2.303 = perfectly balanced);
- ``classifier_fid``: Fréchet distance between Gaussians fitted to the classifier's 128-d penultimate features of
  the images and of the MNIST test set::

      FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})

  computed in float64 with symmetric eigendecompositions (tr((Σ₁Σ₂)^{1/2}) = tr((Σ₁^{1/2}Σ₂Σ₁^{1/2})^{1/2}), and the
  inner matrix is symmetric PSD, so no non-symmetric matrix square root is needed).

:func:`fastrq.models.study.prior_report.prior_report` applies them to a trained prior.
"""

from __future__ import annotations

from typing import Any

import torch

from fastrq.errors import NonFiniteError, ShapeError

from ..networks.classifier import MNISTClassifier, predict

__all__ = [
    "gaussian_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "confident_fraction",
    "class_histogram_entropy",
    "image_metrics",
]


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``features`` ``[N ≥ 2, D]``."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ShapeError(f"features must be [N ≥ 2, D], got {tuple(features.shape)}")
    x = features.double()
    if not torch.isfinite(x).all():
        raise NonFiniteError("features contain NaN or inf")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ShapeError(f"mismatched statistics: {tuple(mu1.shape)}, {tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}")
    root1 = _sqrt_psd(sigma1)
    inner = torch.linalg.eigvalsh((root1 @ sigma2 @ root1 + (root1 @ sigma2 @ root1).T) / 2)
    trace_cross = inner.clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_cross
    return float(value.clamp_min(0))


def frechet_distance_from_features(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


def confident_fraction(probs: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of rows of ``probs`` ``[N, C]`` whose largest probability is ≥ ``threshold``."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ShapeError(f"probs must be [N ≥ 1, C], got {tuple(probs.shape)}")
    return float((probs.max(-1).values >= threshold).double().mean())


def class_histogram_entropy(probs: torch.Tensor) -> float:
    """Entropy (nats) of the histogram of ``argmax`` classes of ``probs`` ``[N, C]``."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ShapeError(f"probs must be [N ≥ 1, C], got {tuple(probs.shape)}")
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).double()
    p = counts / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log()).sum()) + 0.0  # + 0.0: no "-0.0" for a single class


def image_metrics(classifier: MNISTClassifier, images: torch.Tensor, reference_features: torch.Tensor) -> dict[str, Any]:
    """The three image metrics for ``images`` ``[N, 1, 28, 28]`` against reference features ``[M, 128]``, plus the
    class histogram."""
    out = predict(classifier, images)
    probs = out["probs"]
    return {
        "num_images": int(images.shape[0]),
        "confident_fraction": confident_fraction(probs),
        "class_entropy": class_histogram_entropy(probs),
        "classifier_fid": frechet_distance_from_features(out["features"], reference_features),
        "class_histogram": torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).tolist(),
    }
