"""The design of the RQ-VAE vs VQ-VAE study: its experiments and presets (what ``fastrq reproduce`` runs).

Every experiment uses the same encoder/decoder, latent 7×7×4, seed and optimiser; they differ only in the
bottleneck:

=================  =========================================================
``vae``            Gaussian VAE (KL term), the baseline
``vq256_ema``      VQ-VAE, 256 codes, EMA codebook
``vq256_learned``  VQ-VAE, 256 codes, gradient-learned codebook
``rq2x128_ema``    RQ-VAE, 2 levels × 128 codes, EMA
``rq2x128_learned``RQ-VAE, 2 levels × 128 codes, learned
``rq3x128_ema``    RQ-VAE, 3 levels × 128 codes, EMA (quantization error per level)
=================  =========================================================

Presets: ``quick`` (first 20,000 training images, 3 epochs, 2,000 test images: ≤ 10 minutes on 2 idle CPU cores)
and ``full`` (all 60,000 / 10,000 images, 20 epochs: the curves flatten).
"""

from __future__ import annotations

from typing import Any

from ..networks.autoencoders import ModelConfig

__all__ = ["EXPERIMENTS", "PRESETS", "THROUGHPUT_MODELS", "experiment_label", "experiment_model"]

# name → (label, the network: ModelConfig.for_model's arguments)
EXPERIMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vae": ("VAE", {"model": "vae"}),
    "vq256_ema": ("VQ 256 (EMA)", {"model": "vqvae", "codebook_size": 256}),
    "vq256_learned": ("VQ 256 (learned)", {"model": "vqvae", "codebook_size": 256, "ema": False}),
    "rq2x128_ema": ("RQ 2×128 (EMA)", {"model": "rqvae", "codebook_size": 128, "num_quantizers": 2}),
    "rq2x128_learned": ("RQ 2×128 (learned)", {"model": "rqvae", "codebook_size": 128, "num_quantizers": 2,
                                               "ema": False}),
    "rq3x128_ema": ("RQ 3×128 (EMA)", {"model": "rqvae", "codebook_size": 128, "num_quantizers": 3}),
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


def experiment_label(name: str) -> str:
    return EXPERIMENTS[name][0] if name in EXPERIMENTS else name


def experiment_model(name: str, **options: Any) -> ModelConfig:
    """The network of experiment ``name``; ``options`` (e.g. ``backend``) override its fields."""
    arguments = {**EXPERIMENTS[name][1], **options}
    return ModelConfig.for_model(arguments.pop("model"), **arguments)
