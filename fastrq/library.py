"""``torch.library`` registrations of the ops the quantizer modules call, so that ``torch.compile(fullgraph=True)``
treats them as opaque nodes (with fake implementations for shape propagation) instead of graph-breaking on the
Python control flow, host-side checks and collectives inside them.

Ops (namespace ``fastrq``):

- ``check_finite(x, on_nonfinite) -> bool[]``: raises :class:`fastrq.NonFiniteError` (``"raise"``) or warns
  (``"skip"``) when x holds NaN/inf; returns whether x is finite (the state updates are skipped when not).
- ``straight_through_forward(x [N, D], codebooks [L, K, D], codes?, level_sizes, active_levels?, row_levels?,
  backend, want_codebook_grad, want_level_residuals) -> (quantized [N, D], codes [N, L], level_sqerr [L],
  commit_dir [N, D], counts [L, K], sums [L, K, D], counts·C − sums, level residuals)``: the greedy search and the
  walk in one pass (or the walk for given codes: beam search) plus what the straight-through backward reads
  (:func:`fastrq.ops.training.straight_through_forward`).
- ``search_codes(x, codebooks, level_sizes, active_levels?, beam_size, backend) -> int64 [N, L]``: codes only
  (greedy or beam search).
- ``snapshot(t) -> t.clone()``, opaque (see :func:`snapshot`).
- ``kmeans_init_(codebooks!, cluster_size!, embed_sum!, initted!, rng_state, x, valid?, finite, ...)``: mutating;
  ``valid`` (bool ``[N]``) leaves masked rows out.
- ``codebook_update_(codebooks!, cluster_size!, embed_sum!, rng_state!, x, codes, counts, sums, finite, ...)``.

``active_levels`` is an optional 0-d int64 CPU tensor (quantizer dropout: how many leading levels run); reading it
is not a device sync. The math lives in :mod:`fastrq.ops`; these are thin wrappers. Eager callers may call the
:mod:`fastrq.ops` functions directly (a registered op costs a few µs of dispatch per call, which matters at the
batch sizes a training step has); under ``torch.compile`` they must go through ``torch.ops.fastrq``.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from .errors import InvalidArgumentError, NonFiniteError
from .ops import codebook_state, search, training

__all__ = [
    "check_finite",
    "raise_or_warn_nonfinite",
    "straight_through_forward",
    "search_codes",
    "kmeans_init_",
    "codebook_update_",
    "snapshot",
    "num_active",
]


def num_active(active_levels: Optional[torch.Tensor], num_levels: int) -> int:
    """How many leading levels run: all of them, or the 0-d CPU tensor ``active_levels`` clamped to [1, L]."""
    return num_levels if active_levels is None else max(1, min(num_levels, int(active_levels)))


def raise_or_warn_nonfinite(on_nonfinite: str, what: str = "the quantizer input holds NaN or infinity") -> None:
    """The non-finite policy, once the host knows a batch is not finite: raise before any state change, or warn
    that its update is skipped."""
    if on_nonfinite == "raise":
        raise NonFiniteError(
            f"{what}; no codebook or EMA buffer was changed (on_nonfinite='skip' skips such batches instead)"
        )
    if on_nonfinite == "skip":
        warnings.warn(
            "fastrq: non-finite quantizer input, codebook update skipped for this batch "
            "(this warning is shown once per location)",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    raise InvalidArgumentError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")


@torch.library.custom_op("fastrq::check_finite", mutates_args=())
def check_finite(x: torch.Tensor, on_nonfinite: str) -> torch.Tensor:
    finite = torch.isfinite(x).all()
    if not bool(finite):
        raise_or_warn_nonfinite(on_nonfinite)
    return finite


@check_finite.register_fake
def _(x, on_nonfinite):
    return x.new_empty((), dtype=torch.bool)


def _training_fake(x, codebooks):
    num_levels, num_codes, dim = codebooks.shape
    return (
        torch.empty_like(x),
        x.new_empty((x.shape[0], num_levels), dtype=torch.long),
        x.new_empty(num_levels),
        torch.empty_like(x),
        x.new_empty(num_levels, num_codes),
        x.new_empty(num_levels, num_codes, dim),
    )


@torch.library.custom_op("fastrq::straight_through_forward", mutates_args=())
def straight_through_forward(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    codes: Optional[torch.Tensor],
    level_sizes: list[int],
    active_levels: Optional[torch.Tensor],
    row_levels: Optional[torch.Tensor],
    backend: str,
    want_codebook_grad: bool,
    want_level_residuals: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    active = num_active(active_levels, codebooks.shape[0])
    out = training.straight_through_forward(
        x, codebooks, codes, list(level_sizes), active, row_levels, backend, want_codebook_grad, want_level_residuals
    )
    return tuple(t.clone() if t is x or (codes is not None and t is codes) else t for t in out)


@straight_through_forward.register_fake
def _(x, codebooks, codes, level_sizes, active_levels, row_levels, backend, want_codebook_grad, want_level_residuals):
    num_levels = codebooks.shape[0]
    grad_base = x.new_empty(codebooks.shape) if want_codebook_grad else x.new_empty(0)
    residuals = x.new_empty(num_levels, *x.shape) if want_level_residuals else x.new_empty(0)
    return (*_training_fake(x, codebooks), grad_base, residuals)


@torch.library.custom_op("fastrq::search_codes", mutates_args=())
def search_codes(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int],
    active_levels: Optional[torch.Tensor],
    beam_size: int,
    backend: str,
) -> torch.Tensor:
    active = num_active(active_levels, codebooks.shape[0])
    return search.search_codes(x, codebooks, list(level_sizes), active, beam_size, backend)


@search_codes.register_fake
def _(x, codebooks, level_sizes, active_levels, beam_size, backend):
    return x.new_empty((x.shape[0], codebooks.shape[0]), dtype=torch.long)


# Tagged like a random op so that AOTAutograd's partitioner never moves it into the backward: it would recompute
# the copy there from the input buffer, which the EMA step has changed in place by then (seen with torch 2.14).
@torch.library.custom_op("fastrq::snapshot", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def snapshot(t: torch.Tensor) -> torch.Tensor:
    """A copy of t as an opaque node, computed in the forward: a compiled graph saves it for the backward instead
    of recomputing it from ``t``, which a later in-place state update (the EMA step) may already have changed."""
    return t.clone()


@snapshot.register_fake
def _(t):
    return torch.empty_like(t)


@torch.library.custom_op("fastrq::kmeans_init_", mutates_args=("codebooks", "cluster_size", "embed_sum", "initted"))
def kmeans_init_(
    codebooks: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    initted: torch.Tensor,
    rng_state: torch.Tensor,
    x: torch.Tensor,
    valid: Optional[torch.Tensor],
    finite: torch.Tensor,
    level_sizes: list[int],
    iters: int,
    sync: bool,
    backend: str,
) -> None:
    rows = x if valid is None else x[valid]
    codebook_state.kmeans_init_(
        codebooks, cluster_size, embed_sum, initted, rng_state, rows, finite, list(level_sizes), iters, sync, backend
    )


@kmeans_init_.register_fake
def _(codebooks, cluster_size, embed_sum, initted, rng_state, x, valid, finite, level_sizes, iters, sync, backend):
    return None


@torch.library.custom_op(
    "fastrq::codebook_update_", mutates_args=("codebooks", "cluster_size", "embed_sum", "rng_state")
)
def codebook_update_(
    codebooks: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    rng_state: torch.Tensor,
    x: torch.Tensor,
    codes: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    finite: torch.Tensor,
    active_levels: Optional[torch.Tensor],
    level_sizes: list[int],
    decay: float,
    eps: float,
    dead_code_threshold: float,
    ema: bool,
    sync: bool,
    groups: int = 1,
) -> None:
    active = num_active(active_levels, len(level_sizes) // groups)
    codebook_state.codebook_update_(
        codebooks, cluster_size, embed_sum, rng_state, x, codes, counts, sums, finite, active,
        list(level_sizes), decay, eps, dead_code_threshold, ema, sync, groups,
    )


@codebook_update_.register_fake
def _(codebooks, cluster_size, embed_sum, rng_state, x, codes, counts, sums, finite, active_levels, level_sizes,
      decay, eps, dead_code_threshold, ema, sync, groups=1):
    return None
