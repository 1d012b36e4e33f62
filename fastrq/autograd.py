"""The straight-through estimator with commitment (and codebook) loss, as one ``torch.autograd.Function``.

Given rows x ``[N, D]``, codebooks ``[L, K, D]`` and the chosen codes ``[N, L]`` (levels with code −1 skipped),
with ``r_0 = x``, ``e_l = C_l[c_l]``, ``r_{l+1} = r_l − e_l`` and ``M = N·D``:

    quantized = Σ_l e_l                 forward value; gradient passes straight through: ∂/∂x = grad_out
                                        (the value of x + sg(q − x), exactly the decoded codes)
    loss      = β Σ_l mean((r_l − sg(e_l))²)                      (commitment; r_l depends on x only,
              [+ Σ_l mean((sg(r_l) − e_l)²)  when learned]          earlier levels enter through sg)

Backward, recomputation-free: the forward keeps ``commit_dir = Σ_l r_{l+1}`` (one ``[N, D]`` tensor), so

    ∂loss/∂x   = (2β / M) · Σ_l r_{l+1}
    ∂loss/∂C_l[k] = (2 / M) · (count_{l,k} · C_l[k] − sum_{l,k})     (learned codebook; from per-code statistics)

Nothing that a later in-place EMA update changes is saved, so updating the codebooks after the forward is safe.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import library  # noqa: F401  (registers torch.ops.fastrq.*)

__all__ = ["ResidualStraightThrough"]


class ResidualStraightThrough(torch.autograd.Function):
    """``(quantized, loss, level_sqerr, counts, sums) = ResidualStraightThrough.apply(x, codebooks, codes,
    active_levels, commitment_weight, learn_codebook, want_stats, backend)``.

    x ``[N, D]`` and codebooks ``[L, K, D]`` in the compute dtype (float32); codes int64 ``[N, L]``;
    active_levels: None or a 0-d int64 CPU tensor (levels ≥ it are skipped). level_sqerr ``[L]``, counts ``[L, K]``,
    sums ``[L, K, D]`` carry no gradient (counts / sums are zeros unless ``want_stats`` or ``learn_codebook``).
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        codebooks: torch.Tensor,
        codes: torch.Tensor,
        active_levels: Optional[torch.Tensor],
        commitment_weight: float,
        learn_codebook: bool,
        want_stats: bool,
        backend: str,
    ):
        quantized, level_sqerr, commit_dir, counts, sums, grad_codebooks = torch.ops.fastrq.residual_walk(
            x, codebooks, codes, active_levels, want_stats, learn_codebook, backend
        )
        numel = max(x.numel(), 1)
        total = level_sqerr.sum() / numel
        loss = total * (commitment_weight + (1.0 if learn_codebook else 0.0))
        ctx.save_for_backward(commit_dir, grad_codebooks if learn_codebook else None)
        ctx.scale = 2.0 * commitment_weight / numel
        ctx.learn_codebook = learn_codebook
        ctx.mark_non_differentiable(level_sqerr, counts, sums)
        return quantized, loss, level_sqerr, counts, sums

    @staticmethod
    def backward(ctx, grad_quantized, grad_loss, *unused):
        commit_dir, grad_codebooks = ctx.saved_tensors
        grad_x = grad_codebook = None
        if ctx.needs_input_grad[0]:
            grad_x = commit_dir * (grad_loss * ctx.scale)
            if grad_quantized is not None:
                grad_x = grad_x + grad_quantized
        if ctx.learn_codebook and ctx.needs_input_grad[1]:
            grad_codebook = grad_codebooks * grad_loss
        return grad_x, grad_codebook, None, None, None, None, None, None
