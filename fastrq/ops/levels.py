"""How many residual levels each row uses in one step: quantizer dropout, ``n_quantizers`` and padding masks.

The training pass (:mod:`fastrq.ops.training`) takes two limits: ``num_active`` (levels ≥ it are skipped for every
row; a 0-d CPU tensor when it was drawn at random, so a compiled graph does not specialise on it) and
``row_levels`` (int64 ``[N]``, levels ≥ ``row_levels[n]`` are skipped for row n; 0 leaves the row out entirely,
which is how a padding mask is applied). This module turns the quantizer's options into those two limits.

Quantizer dropout (SoundStream / EnCodec / DAC): in training, with probability ``prob``, a random number of
leading levels runs, uniform in ``[cutoff_index + 1, top]`` (``top`` = L, or ``n_quantizers``), rounded up to a
multiple of ``multiple_of`` (and capped at ``top``); otherwise all ``top`` levels run. The draw is per step for the
whole batch, or with ``per_sample`` per sample (index of x's first dimension; every vector of a sample, e.g. all
its time steps, shares the sample's count), as DAC does.
"""

from __future__ import annotations

import math

import torch

__all__ = ["DropoutSettings", "draw_levels", "apply_mask"]


class DropoutSettings:
    """Quantizer dropout options (validated by the module)."""

    def __init__(self, enabled: bool, prob: float, per_sample: bool, cutoff_index: int, multiple_of: int):
        self.enabled = enabled
        self.prob = prob
        self.per_sample = per_sample
        self.cutoff_index = cutoff_index
        self.multiple_of = multiple_of


def _round_up(count: torch.Tensor, multiple_of: int, top: int) -> torch.Tensor:
    if multiple_of <= 1:
        return count
    return torch.clamp((count + multiple_of - 1) // multiple_of * multiple_of, max=top)


def draw_levels(
    settings: DropoutSettings, num_levels: int, top: int, lead: tuple[int, ...], dropping: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(num_active, row_levels)`` for one step of ``prod(lead)`` rows (x's leading shape ``lead``).

    ``top``: the levels asked for (L, or ``n_quantizers``). ``dropping``: a training step with dropout enabled.
    ``num_active`` is None when every level runs, else a 0-d int64 CPU tensor; ``row_levels`` is None unless the
    draw is per sample. Uses torch's global generator (so ``torch.manual_seed`` reproduces a run)."""
    fixed = None if top == num_levels else torch.tensor(top)
    if not (dropping and settings.enabled and top > 1):
        return fixed, None
    low = min(settings.cutoff_index + 1, top)
    if not settings.per_sample:
        count = _round_up(torch.randint(low, top + 1, ()), settings.multiple_of, top)
        if settings.prob < 1.0:  # decided on the tensor, not the host: no graph break under torch.compile
            count = torch.where(torch.rand(()) < settings.prob, count, torch.tensor(top))
        return count, None
    samples = lead[0] if lead else 1
    counts = _round_up(torch.randint(low, top + 1, (samples,)), settings.multiple_of, top)
    if settings.prob < 1.0:
        counts = torch.where(torch.rand(samples) < settings.prob, counts, torch.full_like(counts, top))
    per_row = math.prod(lead[1:]) if len(lead) > 1 else 1
    return fixed, counts.repeat_interleave(per_row)


def apply_mask(
    row_levels: torch.Tensor | None, mask: torch.Tensor | None, num_levels: int, device: torch.device
) -> torch.Tensor | None:
    """Row limits with the padding mask applied (masked rows: 0 levels). ``mask``: bool ``[N]`` or None."""
    if mask is None:
        return None if row_levels is None else row_levels.to(device)
    limit = row_levels.to(device) if row_levels is not None else torch.full(mask.shape, num_levels, device=device)
    return torch.where(mask, limit, torch.zeros_like(limit))
