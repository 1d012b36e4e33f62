"""Trained models from their run folders: the one place that reads a checkpoint back into a network.

Every loader takes a run folder (``runs/rqvae``), its ``checkpoints/`` directory or one checkpoint folder
(``runs/rqvae/checkpoints/step-00000120``), loads the newest complete checkpoint there and returns the network in
eval mode. A checkpoint of another kind of model raises :class:`fastrq.StateDictError` and loads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import StateDictError

from ..networks.autoencoders import MODEL_NAMES, RQVAE, Autoencoder, build_model
from ..networks.classifier import MNISTClassifier
from ..networks.rq_transformer import PriorConfig, RQTransformer
from .checkpoint import Checkpoint, load_checkpoint, load_model_weights

__all__ = ["checkpoint_folder", "load_autoencoder", "load_rqvae", "load_prior", "load_classifier", "LoadedPrior"]


def checkpoint_folder(path: str | Path) -> Path:
    """``<run>/checkpoints`` for a run folder, else ``path`` itself (a checkpoints/ directory or one checkpoint)."""
    path = Path(path)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def _load(path: str | Path) -> Checkpoint:
    return load_checkpoint(checkpoint_folder(path))


def load_autoencoder(path: str | Path, kinds: tuple[str, ...] = MODEL_NAMES,
                     device: torch.device | str = "cpu") -> Autoencoder:
    """A trained VAE / VQ-VAE / RQ-VAE (one of ``kinds``), eval mode, on ``device``."""
    ckpt = _load(path)
    config = ckpt.config.get("model_config")
    if not config or config.get("model") not in kinds:
        raise StateDictError(f"{ckpt.path} is not a {' / '.join(kinds)} checkpoint (model_config={config})")
    model = build_model(config)
    load_model_weights(model, ckpt)
    return model.to(device).eval()


def load_rqvae(path: str | Path) -> RQVAE:
    """A trained RQ-VAE (or VQ-VAE: one level), eval mode: what the prior is trained on and decodes with."""
    return load_autoencoder(path, kinds=("rqvae", "vqvae"))


@dataclass
class LoadedPrior:
    """A trained prior with what is needed to turn its codes into images: ``model``, the latent ``height`` and
    ``width``, ``rqvae_path`` (the RQ-VAE it was trained on, as recorded at training time), ``config`` (the
    checkpoint's config.json)."""

    model: RQTransformer
    height: int
    width: int
    rqvae_path: str | None
    config: dict[str, Any]


def load_prior(path: str | Path) -> LoadedPrior:
    ckpt = _load(path)
    if "prior_config" not in ckpt.config:
        raise StateDictError(f"{ckpt.path} is not an RQ-Transformer prior checkpoint")
    model = RQTransformer(PriorConfig.from_dict(ckpt.config["prior_config"]))
    load_model_weights(model, ckpt)
    return LoadedPrior(model.eval(), int(ckpt.config["height"]), int(ckpt.config["width"]), ckpt.config.get("rqvae"),
                       ckpt.config)


def load_classifier(path: str | Path) -> MNISTClassifier:
    """The trained judge CNN, eval mode."""
    model = MNISTClassifier()
    load_model_weights(model, _load(path))
    return model.eval()
