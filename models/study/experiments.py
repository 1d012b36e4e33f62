"""The design of the RQ-VAE vs VQ-VAE study: its experiments, the codebook-health ablation, the learning-rate
sweep and the presets (what ``fastrq reproduce`` runs).

Every run uses the same encoder/decoder, latent 7×7×4 and Adam; they differ only in the bottleneck, the seed and
(in the sweep) the learning rate. Every configuration is trained with ``seeds`` consecutive seeds.

Main experiments (:data:`EXPERIMENTS`), with :class:`~fastrq.models.networks.autoencoders.ModelConfig`'s defaults
(healthy codebooks: see :data:`HEALTH_DEFAULTS`):

=================  =========================================================
``vae``            Gaussian VAE (KL term), the baseline
``vq256_ema``      VQ-VAE, 256 codes, EMA codebook
``vq256_learned``  VQ-VAE, 256 codes, gradient-learned codebook
``rq2x128_ema``    RQ-VAE, 2 levels × 128 codes, EMA
``rq2x128_learned``RQ-VAE, 2 levels × 128 codes, learned
``rq3x128_ema``    RQ-VAE, 3 levels × 128 codes, EMA (quantization error per level)
=================  =========================================================

Codebook-health ablation (:data:`ABLATION_MODELS` × :data:`ABLATION_ROWS`): VQ 256 and RQ 2×128 with EMA
codebooks and every lever off ("none"), one lever at a time, and the defaults (the main experiment's runs).

Stability (:data:`STABILITY_MODELS` × the preset's ``stability_lrs``): VQ 256 and RQ 2×128, EMA and learned, at each
learning rate; the preset's own ``lr`` is the main experiment's runs.

Presets (:data:`PRESETS`): ``quick`` (first 12,000 training images, 1 epoch, 2,000 test images, 3 seeds: ≤ 10
minutes on 2 idle CPU cores, everything included) and ``full`` (all 60,000 / 10,000 images, 3 epochs, 3 seeds).
"""

from __future__ import annotations

from typing import Any

from ..networks.autoencoders import ModelConfig

__all__ = ["EXPERIMENTS", "PRESETS", "THROUGHPUT_MODELS", "ABLATION_MODELS", "ABLATION_ROWS", "STABILITY_MODELS",
           "LEVERS_OFF", "HEALTH_DEFAULTS", "experiment_label", "experiment_model", "ablation_runs",
           "stability_runs", "lr_name"]

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

# the codebook-health levers, all off: the quantizer as the study ran it before issue 11
LEVERS_OFF: dict[str, Any] = {"decay": 0.99, "kmeans_init": False, "dead_code_threshold": 0.0,
                              "rotation_trick": False, "use_cosine_sim": False, "codebook_dim": None}
# the levers as ModelConfig sets them by default
HEALTH_DEFAULTS: dict[str, Any] = {name: getattr(ModelConfig, name) for name in LEVERS_OFF}
COSINE_CODEBOOK_DIM = 4  # the ablation's "cosine + codebook_dim" row: unit codes in a learned 4-d projection

# base → (label, main experiment with the defaults)
ABLATION_MODELS: dict[str, tuple[str, str]] = {"vq256": ("VQ 256", "vq256_ema"), "rq2x128": ("RQ 2×128", "rq2x128_ema")}
# row → (label, the levers; None: the defaults, i.e. the main experiment's runs)
ABLATION_ROWS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "none": ("none (every lever off)", dict(LEVERS_OFF)),
    "kmeans": ("k-means++ init", {**LEVERS_OFF, "kmeans_init": True}),
    "dead_code": (f"dead-code restarts (threshold {ModelConfig.dead_code_threshold or 2:g})",
                  {**LEVERS_OFF, "dead_code_threshold": ModelConfig.dead_code_threshold or 2.0}),
    "decay": (f"EMA decay {ModelConfig.decay:g}", {**LEVERS_OFF, "decay": ModelConfig.decay}),
    "rotation": ("rotation trick", {**LEVERS_OFF, "rotation_trick": True}),
    "cosine": (f"cosine codes + codebook_dim {COSINE_CODEBOOK_DIM}",
               {**LEVERS_OFF, "use_cosine_sim": True, "codebook_dim": COSINE_CODEBOOK_DIM}),
    "defaults": ("the defaults", None),
}

# the learning-rate sweep: main experiments (EMA vs learned, VQ vs RQ)
STABILITY_MODELS: dict[str, tuple[str, str]] = {
    "vq256_ema": ("VQ 256", "EMA"), "vq256_learned": ("VQ 256", "learned"),
    "rq2x128_ema": ("RQ 2×128", "EMA"), "rq2x128_learned": ("RQ 2×128", "learned"),
}

# ``prior``: overrides of the prior's training (PriorTrainConfig fields); ``prior_minutes``: its training-time
# budget (0: none, ``prior_epochs`` decide). Quick: a small prior that fits the budget (a smoke run: see the report);
# full: the configuration measured to meet issue 6's targets (benchmarks/results/prior_2026-11-24/).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"train_subset": 12000, "test_subset": 2000, "epochs": 1, "eval_every": 0, "batch_size": 128,
              "lr": 2e-3, "seeds": 3, "stability_lrs": (2e-3, 6e-3, 2e-2),
              "throughput_steps": 4, "throughput_rounds": 3, "classifier_epochs": 1,
              "prior": {"dim": 64, "spatial_layers": 2, "depth_layers": 1, "batch_size": 64, "lr": 3e-3,
                        "warmup_steps": 50},
              "prior_epochs": 5, "prior_minutes": 1.5, "prior_samples": 1000},
    "full": {"train_subset": 0, "test_subset": 0, "epochs": 3, "eval_every": 0, "batch_size": 128,
             "lr": 2e-3, "seeds": 3, "stability_lrs": (2e-3, 6e-3, 2e-2),
             "throughput_steps": 10, "throughput_rounds": 5, "classifier_epochs": 3,
             "prior": {}, "prior_epochs": 5, "prior_minutes": 0.0, "prior_samples": 2000},
}

# models timed for throughput (the learned-codebook variants cost the same search)
THROUGHPUT_MODELS = ("vae", "vq256_ema", "rq2x128_ema", "rq3x128_ema")


def experiment_label(name: str) -> str:
    return EXPERIMENTS[name][0] if name in EXPERIMENTS else name


def experiment_model(name: str, **options: Any) -> ModelConfig:
    """The network of experiment ``name``; ``options`` (e.g. ``backend``) override its fields."""
    arguments = {**EXPERIMENTS[name][1], **options}
    return ModelConfig.for_model(arguments.pop("model"), **arguments)


def lr_name(lr: float) -> str:
    return f"{lr:g}"


def ablation_runs() -> dict[tuple[str, str], tuple[str, ModelConfig]]:
    """(base, row) → (run name, network) of the ablation; the "defaults" row names the main experiment's run."""
    runs = {}
    for base, (_, main) in ABLATION_MODELS.items():
        for row, (_, levers) in ABLATION_ROWS.items():
            if levers is None:
                runs[(base, row)] = (main, experiment_model(main))
            else:
                runs[(base, row)] = (f"ablation_{base}_{row}", experiment_model(main, **levers))
    return runs


def stability_runs(lrs: tuple[float, ...], default_lr: float) -> dict[tuple[str, float], tuple[str, ModelConfig]]:
    """(main experiment, lr) → (run name, network) of the sweep; at ``default_lr`` the main experiment's run."""
    runs = {}
    for main in STABILITY_MODELS:
        for lr in lrs:
            name = main if lr == default_lr else f"{main}_lr{lr_name(lr)}"
            runs[(main, lr)] = (name, experiment_model(main))
    return runs
