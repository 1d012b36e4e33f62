"""Sample digits from a trained RQ-Transformer prior: ``fastrq sample --prior runs/rqtransformer [--num 64]``.

Writes PNG grids into ``--out`` (default: ``<prior run>/samples``):

- ``samples.png``: ``--num`` unconditional samples (for a class-conditional prior: with the "no class" token);
- ``samples_by_class.png`` (class-conditional priors only): one row per digit 0…9, ``--per-class`` columns;
- ``codes.pt``: the sampled codes ``[N, h, w, L]`` (int64) and the sampling settings.

Sampling settings take one value or one per depth (comma-separated): ``--temperature 1.0,0.8 --top-k 0,16
--top-p 0.95`` (``0`` = no top-k / top-p at that depth). The RQ-VAE decoder is the one recorded in the prior's
checkpoint unless ``--rqvae`` says otherwise. ``fastrq.models.sample.main(argv)`` is the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from fastrq.errors import FastRQError, InvalidArgumentError

from ..networks.autoencoders import RQVAE
from ..networks.rq_transformer import unflatten_codes

__all__ = ["generate_codes", "decode_images", "save_grid", "write_sample_grids", "build_parser", "main"]


@torch.no_grad()
def generate_codes(prior, num: int, labels: torch.Tensor | None = None, *, batch_size: int = 256, seed: int = 0,
                   temperature: float | Sequence[float] = 1.0, top_k=None, top_p=None) -> torch.Tensor:
    """``num`` samples of image-shaped codes ``[num, h, w, L]`` from a :class:`~fastrq.models.prior.LoadedPrior`,
    drawn with the KV-cached sampler in batches of ``batch_size`` (draws from a generator seeded with ``seed``)."""
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


@torch.no_grad()
def decode_images(rqvae: RQVAE, codes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Codes ``[N, h, w, L]`` → images ``[N, 1, 28, 28]`` clamped to [0, 1]."""
    images = [rqvae.decode_codes(codes[s:s + batch_size]).clamp(0, 1) for s in range(0, codes.shape[0], batch_size)]
    return torch.cat(images) if images else torch.zeros(0, 1, 28, 28)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    """A PNG grid (torchvision ``save_image``; 2 px padding)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)
    return path


def write_sample_grids(prior, rqvae: RQVAE, out_dir: str | Path, *, num: int = 64, per_class: int = 10, seed: int = 0,
                       batch_size: int = 256, **sampling: Any) -> dict[str, Path]:
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
        written["samples_by_class"] = save_grid(decode_images(rqvae, class_codes), out_dir / "samples_by_class.png", nrow=per_class)
        record["class_codes"], record["class_labels"] = class_codes, labels
    torch.save(record, out_dir / "codes.pt")
    return written


def _per_depth_arg(text: str, kind):
    """"1.0" → 1.0; "1.0,0.8" → [1.0, 0.8]; 0 means "off" for top-k / top-p."""
    values = [kind(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def _off_if_zero(value):
    if isinstance(value, list):
        return [v if v else None for v in value]
    return value if value else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrq sample", description="sample digit grids from a trained RQ-Transformer prior")
    p.add_argument("--prior", default="runs/rqtransformer", help="prior run folder or checkpoint")
    p.add_argument("--rqvae", default=None, help="RQ-VAE checkpoint (default: the one the prior was trained on)")
    p.add_argument("--out", default=None, help="output folder (default: <prior>/samples)")
    p.add_argument("--num", type=int, default=64, help="unconditional samples in samples.png")
    p.add_argument("--per-class", type=int, default=10, help="columns of samples_by_class.png (conditional priors)")
    p.add_argument("--temperature", default="1.0", help="one value or one per depth, comma-separated")
    p.add_argument("--top-k", default="0", help="one value or one per depth (0 = off)")
    p.add_argument("--top-p", default="0", help="one value or one per depth (0 = off)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..training.prior import load_prior, load_rqvae

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        prior = load_prior(args.prior)
        rqvae_path = args.rqvae or prior.rqvae_path
        if not rqvae_path:
            raise InvalidArgumentError("the prior checkpoint names no RQ-VAE; pass --rqvae")
        rqvae = load_rqvae(rqvae_path)
        sampling = dict(temperature=_per_depth_arg(args.temperature, float),
                        top_k=_off_if_zero(_per_depth_arg(args.top_k, int)),
                        top_p=_off_if_zero(_per_depth_arg(args.top_p, float)))
        out = Path(args.out) if args.out else Path(args.prior) / "samples"
        written = write_sample_grids(prior, rqvae, out, num=args.num, per_class=args.per_class, seed=args.seed,
                                     batch_size=args.batch_size, **sampling)
    except (FastRQError, ValueError) as exc:
        print(f"fastrq sample: {exc}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
