"""Test metrics of a trained autoencoder: what ``fastrq train`` logs as "eval" / "final" records and final.json."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..networks.autoencoders import Autoencoder

__all__ = ["evaluate", "psnr_from_mse", "perplexity_ceiling"]


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1]: 10·log10(1 / mse)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def perplexity_ceiling(rows: torch.Tensor, num_codes: int) -> float:
    """The highest perplexity any quantizer with ``num_codes`` codes can reach on ``rows`` ``[N, D]``.

    A quantizer maps identical rows to the same code, so a group of exact duplicates (on MNIST, the latent vectors
    of blank image regions: about 45 % of them) cannot be spread over several codes. With the groups' shares
    p_1 ≥ p_2 ≥ …, the bound is water-filling: the j largest groups each alone on a code while p_j·(K − j + 1) > the
    share left, and the rest spread evenly over the other K − j codes (as if divisible), so
    ``exp(−Σ_{i≤j} p_i ln p_i + r·ln((K − j)/r))`` with r the share left. Exact when there are at most K groups
    (each its own code)."""
    n = rows.shape[0]
    if n == 0:
        return 0.0
    _, counts = torch.unique(rows, dim=0, return_counts=True)
    shares = counts.double().sort(descending=True).values / n
    if len(shares) <= num_codes:
        return float(torch.exp(-(shares * shares.log()).sum()))
    rest, alone = 1.0, 0
    while alone < num_codes - 1 and float(shares[alone]) * (num_codes - alone) > rest:
        rest -= float(shares[alone])
        alone += 1
    top = shares[:alone]
    entropy = float(-(top * top.log()).sum()) + (rest * math.log((num_codes - alone) / rest) if rest > 0 else 0.0)
    return math.exp(entropy)


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Test metrics of ``model`` (eval mode; changes no state) on ``images`` ``[N, 1, H, W]``.

    Returns ``loss`` (recon + aux), ``recon_mse`` (per-pixel MSE of the raw output), ``psnr`` (mean per-image PSNR
    of the output clamped to [0, 1]), ``aux_loss``; for quantized models also per level ``usage`` (fraction of the
    level's codes used on the whole set), ``perplexity`` (of the level's code histogram on the whole set),
    ``perplexity_ceiling`` (the highest perplexity any quantizer could reach on what the level quantized:
    :func:`perplexity_ceiling`), ``level_mse`` (mean squared latent residual after each level) and ``residual_norm``
    (mean L2 norm of the latent residual per latent vector, before any level and after each level: L+1 values). With ``codebook_dim`` the
    latent is the quantizer's input after its ``project_in`` (d values per vector)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    levels = model.num_levels
    totals = {"loss": 0.0, "recon_mse": 0.0, "aux_loss": 0.0, "psnr": 0.0}
    counts = None
    norm_sums = torch.zeros(levels + 1, dtype=torch.float64)
    sq_sums = torch.zeros(levels, dtype=torch.float64)
    level_inputs: list[list[torch.Tensor]] = [[] for _ in range(levels)]  # what each level quantized
    vectors = 0
    n = images.shape[0]
    for start in range(0, n, batch_size):
        x = images[start:start + batch_size].to(device)
        out = model(x)
        b = x.shape[0]
        totals["loss"] += float(out["loss"]) * b
        totals["recon_mse"] += float(out["recon_loss"]) * b
        totals["aux_loss"] += float(out["aux_loss"]) * b
        per_image = (out["recon"].clamp(0, 1) - x).pow(2).flatten(1).mean(1)
        totals["psnr"] += float(psnr_from_mse(per_image).sum())
        if levels:
            codes = out["codes"].reshape(-1, levels)
            size = model.quantizer.codebook_size
            hist = torch.stack([torch.bincount(codes[:, l].clamp_min(0), minlength=size) for l in range(levels)])
            counts = hist.cpu() if counts is None else counts + hist.cpu()
            quantizer = model.quantizer
            z = model.encoder(x).movedim(1, -1).reshape(-1, model.config.latent_dim).float()
            if quantizer.project_in is not None:  # codebook_dim: the quantizer works on the projected latent
                z = quantizer.project_in(z)
            residual = z
            norm_sums[0] += residual.norm(dim=-1).double().sum().cpu()
            codebooks = model.quantizer.codebooks.detach()
            for l in range(levels):
                level_inputs[l].append(residual.cpu())
                residual = residual - codebooks[l][codes[:, l]]
                norm_sums[l + 1] += residual.norm(dim=-1).double().sum().cpu()
                sq_sums[l] += residual.pow(2).double().sum().cpu()
            vectors += z.shape[0]
    result: dict[str, Any] = {k: v / n for k, v in totals.items()}
    if levels:
        sizes = torch.tensor(model.quantizer.level_sizes, dtype=torch.float64)
        probs = counts.double() / counts.sum(-1, keepdim=True).clamp_min(1)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
        result["usage"] = ((counts > 0).sum(-1).double() / sizes).tolist()
        result["perplexity"] = entropy.exp().tolist()
        result["perplexity_ceiling"] = [perplexity_ceiling(torch.cat(rows), int(k))
                                        for rows, k in zip(level_inputs, model.quantizer.level_sizes)]
        result["level_mse"] = (sq_sums / max(vectors * model.quantizer.codebook_dim, 1)).tolist()
        result["residual_norm"] = (norm_sums / max(vectors, 1)).tolist()
    model.train(was_training)
    return result
