"""The MNIST autoencoders of the RQ-VAE vs VQ-VAE study: a shared conv encoder/decoder with a Gaussian (VAE),
vector-quantized (VQ-VAE) or residual-quantized (RQ-VAE) bottleneck.

Shapes (defaults): image ``[B, 1, 28, 28]`` → latent ``[B, latent_dim=4, 7, 7]`` → image ``[B, 1, 28, 28]``.

- encoder: Conv2d(1→h1, 3×3, s2, p1) ReLU → Conv2d(h1→h2, 3×3, s2, p1) ReLU → Conv2d(h2→latent, 1×1)
- decoder: ConvT(latent→h2, 3×3, s2) ReLU → ConvT(h2→h1, 3×3, s2) ReLU → ConvT(h1→1, 3×3); ("same" padding, so
  7 → 14 → 28 → 28), linear output (images are in [0, 1]; the loss is the per-pixel MSE).

Losses (every model returns the same dict, see :meth:`Autoencoder.forward`):

- VQ-VAE / RQ-VAE: ``mse(x̂, x) + quantizer loss`` where the quantizer loss is Σ_levels β·commitment
  (+ the codebook term for gradient-learned codebooks; the EMA variant drops it), computed by
  :class:`fastrq.ResidualQuantizer`.
- VAE: ``mse(x̂, x) + kl_weight · KL(q(z|x) ‖ N(0, I))``, the KL summed over latent elements and divided by the
  number of pixels so that it is on the per-pixel scale of the MSE. This is the negative ELBO of a Gaussian decoder
  with fixed variance σ², scaled by 2σ²/pixels: ``kl_weight = 2σ²`` (default 0.02: σ = 0.1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fastrq
from fastrq.errors import InvalidArgumentError, ShapeError

__all__ = ["ModelConfig", "Encoder", "Decoder", "Autoencoder", "VAE", "VQVAE", "RQVAE", "build_model", "MODEL_NAMES",
           "encode_images", "decode_images"]

MODEL_NAMES = ("vae", "vqvae", "rqvae")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored in checkpoints as JSON)."""

    model: str = "rqvae"
    in_channels: int = 1
    hidden: tuple[int, int] = (32, 64)
    latent_dim: int = 4
    codebook_size: int = 256
    num_quantizers: int = 2
    ema: bool = True
    decay: float = 0.99
    commitment_weight: float = 0.25
    kmeans_init: bool = False
    dead_code_threshold: float = 0.0
    kl_weight: float = 0.02
    backend: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def for_model(cls, model: str, *, codebook_size: int | None = None, num_quantizers: int = 2,
                  **options: Any) -> "ModelConfig":
        """The configuration of ``model`` with the study's conventions: ``codebook_size`` defaults to 128 codes per
        level for an RQ-VAE and 256 otherwise, and only an RQ-VAE has more than one level (``num_quantizers`` is 1
        for the others). ``options``: any other field."""
        if codebook_size is None:
            codebook_size = 128 if model == "rqvae" else 256
        return cls(model=model, codebook_size=codebook_size, num_quantizers=num_quantizers if model == "rqvae" else 1,
                   **options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(kwargs["hidden"])
        return cls(**kwargs)


class Encoder(nn.Module):
    """``[B, C, H, W]`` → ``[B, out_dim, H/4, W/4]``."""

    def __init__(self, in_channels: int, hidden: tuple[int, int], out_dim: int):
        super().__init__()
        h1, h2 = hidden
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, h1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h1, h2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h2, out_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """``[B, latent_dim, h, w]`` → ``[B, C, 4h, 4w]`` (linear output)."""

    def __init__(self, out_channels: int, hidden: tuple[int, int], latent_dim: int):
        super().__init__()
        h1, h2 = hidden
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, h2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(h2, h1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(h1, out_channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Autoencoder(nn.Module):
    """Base class. ``forward(x)`` returns a dict:

    - ``recon`` ``[B, C, H, W]``; ``loss`` (0-d, what is minimised); ``recon_loss`` (0-d per-pixel MSE);
      ``aux_loss`` (0-d: KL term or quantizer loss);
    - quantized models also ``codes`` ``[B, h, w, L]`` and, with ``return_stats=True``, ``stats``: dict of ``[L]``
      tensors ``mse`` (mean squared residual after each level), ``usage``, ``perplexity``, ``dead_codes``.
    """

    config: ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.decoder = Decoder(config.in_channels, tuple(config.hidden), config.latent_dim)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ShapeError(
                f"{type(self).__name__} expects images [B, {self.config.in_channels}, H, W] with H, W divisible by 4, "
                f"got {tuple(x.shape)}"
            )

    @property
    def num_levels(self) -> int:
        return 0


class VAE(Autoencoder):
    """Gaussian VAE: the encoder outputs mean and log-variance (2·latent_dim channels)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder = Encoder(config.in_channels, tuple(config.hidden), 2 * config.latent_dim)

    def forward(self, x: torch.Tensor, *, return_stats: bool = False) -> dict[str, Any]:
        self._check_input(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if self.training else mean
        recon = self.decoder(z)
        recon_loss = F.mse_loss(recon, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum() / x.numel()
        return {"recon": recon, "loss": recon_loss + self.config.kl_weight * kl, "recon_loss": recon_loss, "aux_loss": kl}

    @torch.no_grad()
    def sample(self, n: int, spatial: tuple[int, int] = (7, 7), generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` draws of the N(0, I) prior → ``[n, C, 4h, 4w]``."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, *spatial, generator=generator).to(device)
        return self.decoder(z)


class RQVAE(Autoencoder):
    """RQ-VAE: the latent ``[B, latent_dim, h, w]`` goes through a :class:`fastrq.ResidualQuantizer` (channel_first)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder = Encoder(config.in_channels, tuple(config.hidden), config.latent_dim)
        self.quantizer = self._make_quantizer(config)

    def _make_quantizer(self, config: ModelConfig) -> nn.Module:
        return fastrq.ResidualQuantizer(
            config.latent_dim, config.codebook_size, config.num_quantizers, channel_first=True, **self._options(config)
        )

    @staticmethod
    def _options(config: ModelConfig) -> dict[str, Any]:
        return dict(
            ema=config.ema, decay=config.decay, commitment_weight=config.commitment_weight,
            kmeans_init=config.kmeans_init, dead_code_threshold=config.dead_code_threshold, backend=config.backend,
        )

    @property
    def num_levels(self) -> int:
        return self.config.num_quantizers

    def forward(self, x: torch.Tensor, *, return_stats: bool = False) -> dict[str, Any]:
        self._check_input(x)
        z = self.encoder(x)
        out = self.quantizer(z, return_stats=return_stats)
        quantized, codes, qloss = out[:3]
        recon = self.decoder(quantized)
        recon_loss = F.mse_loss(recon, x)
        result = {"recon": recon, "loss": recon_loss + qloss, "recon_loss": recon_loss, "aux_loss": qloss,
                  "codes": codes.reshape(*codes.shape[:3], -1)}
        if return_stats:
            result["stats"] = {k: v.reshape(-1) for k, v in out[3].items()}
        return result

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` → codes int64 ``[B, H/4, W/4, L]``; changes no state."""
        self._check_input(x)
        codes = self.quantizer.encode(self.encoder(x))
        return codes.reshape(*codes.shape[:3], -1)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes int64 ``[B, h, w, L']`` (a prefix of the levels; −1 = skipped) → images ``[B, C, 4h, 4w]``."""
        if codes.dim() != 4:
            raise ShapeError(f"codes must be [B, h, w, L], got {tuple(codes.shape)}")
        latent = fastrq.ResidualQuantizer.decode(self.quantizer, codes)
        return self.decoder(latent.to(next(self.decoder.parameters()).dtype))


class VQVAE(RQVAE):
    """VQ-VAE: one level (a :class:`fastrq.VectorQuantizer`); codes are reported as ``[B, h, w, 1]``."""

    def _make_quantizer(self, config: ModelConfig) -> nn.Module:
        if config.num_quantizers != 1:
            raise InvalidArgumentError(f"a VQ-VAE has one quantizer level, got num_quantizers={config.num_quantizers}")
        return fastrq.VectorQuantizer(config.latent_dim, config.codebook_size, channel_first=True, **self._options(config))

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.quantizer.encode(self.encoder(x)).unsqueeze(-1)


def build_model(config: ModelConfig | dict[str, Any]) -> Autoencoder:
    """The model named by ``config.model`` ("vae", "vqvae", "rqvae")."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if config.model == "vae":
        return VAE(config)
    if config.model == "vqvae":
        if config.num_quantizers != 1:
            config = ModelConfig.from_dict({**config.to_dict(), "num_quantizers": 1})
        return VQVAE(config)
    if config.model == "rqvae":
        return RQVAE(config)
    raise InvalidArgumentError(f"unknown model {config.model!r}; choose one of {', '.join(MODEL_NAMES)}")


@torch.no_grad()
def encode_images(rqvae: RQVAE, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Images ``[N, C, H, W]`` → image-shaped codes int64 ``[N, H/4, W/4, L]``, in batches of ``batch_size``."""
    chunks = [rqvae.encode_codes(images[s:s + batch_size]) for s in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def decode_images(rqvae: RQVAE, codes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Codes ``[N, h, w, L]`` → images ``[N, C, 4h, 4w]`` clamped to [0, 1], in batches of ``batch_size``."""
    images = [rqvae.decode_codes(codes[s:s + batch_size]).clamp(0, 1) for s in range(0, codes.shape[0], batch_size)]
    if images:
        return torch.cat(images)
    h, w = codes.shape[1:3]
    return torch.zeros(0, rqvae.config.in_channels, 4 * h, 4 * w)
