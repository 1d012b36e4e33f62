"""Reference models built on the fastrq quantizer modules (installed as ``fastrq.models``).

- :mod:`fastrq.models.autoencoders`: VAE, VQVAE, RQVAE (the MNIST study's encoder/decoder);
- :mod:`fastrq.models.train`: ``fastrq train`` (checkpoints, exact resume, DDP); :mod:`fastrq.models.reproduce`:
  ``fastrq reproduce``; :mod:`fastrq.models.checkpoint`, :mod:`fastrq.models.metrics_log`,
  :mod:`fastrq.models.interrupt`: reusable training machinery; :mod:`fastrq.models.data`: MNIST / generated data.

Importing this package does not import torchvision or matplotlib (the submodules that need them import them lazily).
"""

from .networks.autoencoders import RQVAE, VAE, VQVAE, ModelConfig, build_model

__all__ = ["VAE", "VQVAE", "RQVAE", "ModelConfig", "build_model"]
