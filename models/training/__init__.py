"""Training of the reference models: one loop, three trainers, and the machinery around them.

- :mod:`.loop`: :class:`TrainingLoop`, the one training loop (exact resume, stop requests with a checkpoint first,
  NaN guard before the update, periodic and epoch-end checkpoints, run.json);
- trainers, each a config dataclass and a function: :mod:`.autoencoder` (VAE / VQ-VAE / RQ-VAE, DDP),
  :mod:`.prior` (the RQ-Transformer on RQ-VAE codes), :mod:`.classifier` (the judge CNN);
- :mod:`.loaders`: trained networks back from their run folders (the one place that resolves checkpoint folders);
- :mod:`.checkpoint` (atomic checkpoints, RNG state), :mod:`.metrics_log` (metrics.jsonl), :mod:`.interrupt`
  (SIGINT/SIGTERM), :mod:`.distributed` (rank, world, DDP), :mod:`.data` (MNIST-format sets and generated data,
  the batch order), :mod:`.evaluation` (an autoencoder's test metrics).

Nothing here parses command lines (that is :mod:`fastrq.cli`) or writes figures (:mod:`fastrq.models.study`).
"""

from .autoencoder import AutoencoderTrainConfig, train_autoencoder
from .classifier import ClassifierTrainConfig, train_classifier
from .interrupt import TrainingInterrupted
from .loaders import LoadedPrior, load_autoencoder, load_classifier, load_prior, load_rqvae
from .loop import TrainingDivergedError, TrainingLoop, TrainingTask
from .prior import PriorTrainConfig, train_prior

__all__ = [
    "AutoencoderTrainConfig", "train_autoencoder", "PriorTrainConfig", "train_prior", "ClassifierTrainConfig",
    "train_classifier", "TrainingLoop", "TrainingTask", "TrainingInterrupted", "TrainingDivergedError",
    "LoadedPrior", "load_autoencoder", "load_rqvae", "load_prior", "load_classifier",
]
