"""Digits sampled from a trained RQ-Transformer prior, as codes, images and PNG grids (``fastrq sample``).

- :func:`generate_codes`: ``num`` samples of image-shaped codes from a :class:`~fastrq.models.training.LoadedPrior`;
- :func:`save_grid`, :func:`write_sample_grids`: ``samples.png`` (unconditional; a class-conditional prior is
  sampled with its "no class" token), ``samples_by_class.png`` (class-conditional priors: one row per digit) and
  ``codes.pt`` (the sampled codes and the settings);
- :func:`write_run_samples`: those grids in a prior's run folder, from its checkpoint (``fastrq train --model
  rqtransformer`` ends with it);
- :func:`recommended_temperature`: the per-depth temperatures the README's sweep chose.

Sampling settings take one value or one per depth: ``temperature=[1.0, 0.8]``, ``top_k=[None, 16]``, ``top_p``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from fastrq.errors import InvalidArgumentError

from ..networks.autoencoders import RQVAE, decode_images
from ..networks.rq_transformer import unflatten_codes
from ..training.loaders import LoadedPrior, load_prior, load_rqvae

__all__ = ["generate_codes", "save_grid", "write_sample_grids", "write_run_samples", "recommended_temperature"]


def recommended_temperature(depth: int) -> list[float]:
    """Per-depth sampling temperatures chosen by the sweep in the README ("RQ-Transformer prior"): 1 at depth 0
    (the coarse code carries the sample's diversity), 0 (the most likely code) at the later, refining depths."""
    return [1.0] + [0.0] * (depth - 1)


@torch.no_grad()
def generate_codes(prior: LoadedPrior, num: int, labels: torch.Tensor | None = None, *, batch_size: int = 256,
                   seed: int = 0, temperature: float | Sequence[float] = 1.0, top_k=None, top_p=None) -> torch.Tensor:
    """``num`` samples of image-shaped codes ``[num, h, w, L]``, drawn with the KV-cached sampler in batches of
    ``batch_size`` (draws from a generator seeded with ``seed``)."""
    if num < 0 or batch_size < 1:
        raise InvalidArgumentError(f"num must be ≥ 0 and batch_size ≥ 1, got {num}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        lab = None if labels is None else labels[start:start + n]
        chunks.append(prior.model.sample(n, lab, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator))
    c = prior.model.config
    codes = torch.cat(chunks) if chunks else torch.zeros(0, c.num_positions, c.depth, dtype=torch.long)
    return unflatten_codes(codes, prior.height, prior.width)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    """A PNG grid (torchvision ``save_image``; 2 px padding)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)
    return path


def write_sample_grids(prior: LoadedPrior, rqvae: RQVAE, out_dir: str | Path, *, num: int = 64, per_class: int = 10,
                       seed: int = 0, batch_size: int = 256, **sampling: Any) -> dict[str, Path]:
    """``samples.png`` (``num`` samples) and, for a class-conditional prior, ``samples_by_class.png`` (10 rows)."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    codes = generate_codes(prior, num, batch_size=batch_size, seed=seed, **sampling)
    images = decode_images(rqvae, codes)
    written["samples"] = save_grid(images, out_dir / "samples.png", nrow=max(1, int(round(num ** 0.5))))
    record: dict[str, Any] = {"codes": codes, "settings": json.dumps(sampling, default=str)}
    if prior.model.config.num_classes:
        labels = torch.arange(prior.model.config.num_classes).repeat_interleave(per_class)
        class_codes = generate_codes(prior, len(labels), labels, batch_size=batch_size, seed=seed + 1, **sampling)
        written["samples_by_class"] = save_grid(decode_images(rqvae, class_codes), out_dir / "samples_by_class.png",
                                                nrow=per_class)
        record["class_codes"], record["class_labels"] = class_codes, labels
    torch.save(record, out_dir / "codes.pt")
    return written


def write_run_samples(prior_run: str | Path, *, num: int = 64, seed: int = 0) -> dict[str, Path]:
    """:func:`write_sample_grids` into a prior's run folder, from its newest checkpoint and the RQ-VAE it was trained
    on (plain temperature 1)."""
    prior = load_prior(prior_run)
    return write_sample_grids(prior, load_rqvae(prior.rqvae_path), prior_run, num=num, seed=seed)
