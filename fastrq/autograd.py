"""The straight-through estimator with commitment (and codebook) loss, as one ``torch.autograd.Function``.

Given rows x ``[N, D]``, codebooks ``[L, K, D]`` and codes ``[N, L]`` (found by the forward's search, or given by
beam search; levels with code −1 skipped), with ``r_0 = x``, ``e_l = C_l[c_l]``, ``r_{l+1} = r_l − e_l`` and
``M = N_valid·D`` (rows a mask leaves out do not count):

    quantized = Σ_l e_l                 forward value; gradient passes straight through: ∂/∂x = grad_out
                                        (the value of x + sg(q − x), exactly the decoded codes)
    loss_l    = β·mean((r_l − sg(e_l))²)                          (commitment; r_l depends on x only,
              [+ mean((sg(r_l) − e_l)²)  when learned]              earlier levels enter through sg)

Backward, recomputation-free for the usual scalar loss: the forward keeps ``commit_dir = Σ_l r_{l+1}`` (one
``[N, D]`` tensor), so

    ∂(Σ_l loss_l)/∂x   = (2β / M) · Σ_l r_{l+1}
    ∂loss_l/∂C_l[k]    = (2 / M) · (count_{l,k} · C_l[k] − sum_{l,k})     (learned codebook; per-code statistics)

Nothing that a later in-place EMA update changes is read in the backward (the codebook gradient is formed in the
forward), so updating the codebooks after the forward is safe. A per-level loss whose gradient differs between
levels needs each level's residual: the forward then also keeps r_{l+1} of every level (``[L, N, D]``).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import library
from .ops import training

__all__ = ["ResidualStraightThrough"]


def _forward_pass(x, codebooks, codes, level_sizes, active_levels, row_levels, backend, learn, per_level):
    """The forward pass and what the backward reads: through the registered op under torch.compile (so every
    tensor the backward reads is an op output computed before the in-place EMA step), directly in eager mode."""
    if torch.compiler.is_compiling():
        return torch.ops.fastrq.straight_through_forward(
            x, codebooks, codes, level_sizes, active_levels, row_levels, backend, learn, per_level
        )
    active = library.num_active(active_levels, codebooks.shape[0])
    return training.straight_through_forward(x, codebooks, codes, level_sizes, active, row_levels, backend, learn, per_level)


class ResidualStraightThrough(torch.autograd.Function):
    """``(quantized, loss, codes, level_sqerr, counts, sums) = ResidualStraightThrough.apply(x, codebooks, codes,
    level_sizes, active_levels, row_levels, num_valid, commitment_weight, learn_codebook, per_level_grad, backend,
    done)``.

    x ``[N, D]`` and codebooks ``[L, K, D]`` in the compute dtype (float32); codes None (search here) or int64
    ``[N, L]`` (beam search); active_levels None or a 0-d int64 CPU tensor (levels ≥ it are skipped); row_levels
    None or int ``[N]`` (levels ≥ it skipped for that row; 0 = masked); num_valid: the number of rows that count
    (an int or a 0-d tensor). ``loss`` carries the gradient: the 0-d sum Σ_l loss_l, or with ``per_level_grad``
    the ``[L]`` vector of the levels' losses (which the caller may weight differently; the backward then recomputes
    the residuals). codes, level_sqerr ``[L]``, counts ``[L, K]`` and sums ``[L, K, D]`` carry no gradient.
    done: None, or the outputs ``(quantized, codes, level_sqerr, commit_dir, counts, sums)`` of a training pass the
    caller has already run (:func:`fastrq.ops.training.quantize_and_update_`, which updated the EMA state in the
    same native call); only for the summed loss of an EMA codebook (neither ``learn_codebook`` nor
    ``per_level_grad``).
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        codebooks: torch.Tensor,
        codes: Optional[torch.Tensor],
        level_sizes: list[int],
        active_levels: Optional[torch.Tensor],
        row_levels: Optional[torch.Tensor],
        num_valid,
        commitment_weight: float,
        learn_codebook: bool,
        per_level_grad: bool,
        backend: str,
        done: Optional[tuple] = None,
    ):
        if done is not None:
            quantized, codes, level_sqerr, commit_dir, counts, sums = done
            grad_base = residuals = None
        else:
            quantized, codes, level_sqerr, commit_dir, counts, sums, grad_base, residuals = _forward_pass(
                x, codebooks, codes, level_sizes, active_levels, row_levels, backend, learn_codebook, per_level_grad
            )
        numel = num_valid * x.shape[1] if isinstance(num_valid, int) else num_valid.to(x.dtype) * x.shape[1]
        numel = max(numel, 1) if isinstance(numel, int) else numel.clamp_min(1)
        weight = commitment_weight + (1.0 if learn_codebook else 0.0)
        if per_level_grad:
            loss = level_sqerr * (weight / numel)
        else:  # Σ_l first, then one scale (two small ops, not three)
            loss = level_sqerr.sum() * (weight / numel)
        grad_codebooks = grad_base * (2.0 / numel) if learn_codebook else None
        ctx.save_for_backward(None if per_level_grad else commit_dir, grad_codebooks, residuals if per_level_grad else None)
        ctx.scale = (2.0 * commitment_weight) / numel
        ctx.learn_codebook = learn_codebook
        ctx.mark_non_differentiable(codes, level_sqerr, counts, sums)
        ctx.set_materialize_grads(False)  # no zero tensors for the outputs without a gradient (~25 µs a step at N = 1k)
        return quantized, loss, codes, level_sqerr, counts, sums

    @staticmethod
    def backward(ctx, grad_quantized, grad_loss, *unused):
        commit_dir, grad_codebooks, residuals = ctx.saved_tensors
        grad_x = grad_codebook = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_quantized  # None when quantized took no part in the loss
            if grad_loss is not None:
                scale = ctx.scale  # 2β / M: a float, or a 0-d tensor when M counts the rows a mask keeps
                if commit_dir is not None:  # the summed loss: ∂/∂x = (2β / M) · grad · Σ_l r_{l+1}
                    direction, weight = commit_dir, grad_loss
                else:  # per-level losses weighted by their own gradients: Σ_l g_l · r_{l+1}
                    direction = torch.einsum("l,lnd->nd", grad_loss * scale, residuals)
                    weight = scale = None
                if grad_x is None:
                    grad_x = direction if weight is None else direction * (weight * scale)
                elif weight is None:
                    grad_x = grad_x + direction
                elif isinstance(scale, float):  # one op: grad_q + scale · weight · direction
                    grad_x = torch.addcmul(grad_x, direction, weight, value=scale)
                else:
                    grad_x = torch.addcmul(grad_x, direction, weight * scale)
        if ctx.learn_codebook and ctx.needs_input_grad[1] and grad_loss is not None:
            grad_codebook = grad_codebooks * (grad_loss[:, None, None] if grad_loss.dim() else grad_loss)
        return grad_x, grad_codebook, None, None, None, None, None, None, None, None, None, None
