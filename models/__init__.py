"""Reference models built on the fastrq quantizer modules (installed as ``fastrq.models``), in three layers that
import only downwards:

- :mod:`fastrq.models.networks`: the ``nn.Module``s: VAE / VQ-VAE / RQ-VAE, the RQ-Transformer prior, the MNIST
  classifier;
- :mod:`fastrq.models.training`: one training loop (exact resume, stop requests, NaN guard), the three trainers
  (each a config dataclass and a function), checkpoints, loaders, data, DDP, metrics log;
- :mod:`fastrq.models.study`: the RQ-vs-VQ study (``fastrq reproduce``), the generative evaluation, sampling, plots.

Command lines live in :mod:`fastrq.cli`; ``python -m fastrq.models.train`` and ``python -m
fastrq.models.generative_eval`` are kept as entry points into it. Importing this package does not import
torchvision or matplotlib (the modules that need them import them when they draw or load).
"""

from .networks.autoencoders import RQVAE, VAE, VQVAE, ModelConfig, build_model

__all__ = ["VAE", "VQVAE", "RQVAE", "ModelConfig", "build_model"]
