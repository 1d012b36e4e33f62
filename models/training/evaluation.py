"""Test metrics of a trained autoencoder: what ``fastrq train`` logs as "eval" / "final" records and final.json."""

from __future__ import annotations

from typing import Any

import torch

from ..networks.autoencoders import Autoencoder

__all__ = ["evaluate", "psnr_from_mse"]


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1]: 10·log10(1 / mse)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Test metrics of ``model`` (eval mode; changes no state) on ``images`` ``[N, 1, H, W]``.

    Returns ``loss`` (recon + aux), ``recon_mse`` (per-pixel MSE of the raw output), ``psnr`` (mean per-image PSNR
    of the output clamped to [0, 1]), ``aux_loss``; for quantized models also per level ``usage`` (fraction of the
    level's codes used on the whole set), ``perplexity`` (of the level's code histogram on the whole set),
    ``level_mse`` (mean squared latent residual after each level) and ``residual_norm`` (mean L2 norm of the latent
    residual per latent vector, before any level and after each level: L+1 values)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    levels = model.num_levels
    totals = {"loss": 0.0, "recon_mse": 0.0, "aux_loss": 0.0, "psnr": 0.0}
    counts = None
    norm_sums = torch.zeros(levels + 1, dtype=torch.float64)
    sq_sums = torch.zeros(levels, dtype=torch.float64)
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
            z = model.encoder(x).movedim(1, -1).reshape(-1, model.config.latent_dim).float()
            residual = z
            norm_sums[0] += residual.norm(dim=-1).double().sum().cpu()
            codebooks = model.quantizer.codebooks.detach()
            for l in range(levels):
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
        result["level_mse"] = (sq_sums / max(vectors * model.config.latent_dim, 1)).tolist()
        result["residual_norm"] = (norm_sums / max(vectors, 1)).tolist()
    model.train(was_training)
    return result
