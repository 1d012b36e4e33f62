"""The public functional ops: validation, dispatch to a backend, and shapes back to the caller's.

Each op checks its input (raising a :mod:`fastrq.errors` exception that names the problem), flattens ``[..., D]``
to rows ``[N, D]`` in the compute dtype (float32 for fp16 / bf16 / fp32, float64 for float64), calls the chosen
backend (:mod:`fastrq.ops.backends`) and restores the caller's leading shape.

Autograd: inputs may require grad (an encoder output, an ``nn.Parameter`` or ``nn.Embedding`` weight as the
codebook). The search itself is piecewise constant and runs on detached tensors; outputs that are differentiable
functions of the inputs for fixed codes are recomputed with differentiable torch ops when a gradient is wanted:
``sqdist`` of :func:`nearest_code` (w.r.t. x and the codebook), ``quantized`` of :func:`residual_quantize` and of
:func:`residual_decode` (w.r.t. the codebooks; the codes carry no gradient to x), ``sums`` of
:func:`code_statistics` (w.r.t. x). ``ema_update_`` is a state update: no gradient flows through it.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidArgumentError, NonFiniteError
from . import validation as check
from .backends import resolve_backend

__all__ = ["nearest_code", "residual_quantize", "residual_decode", "ema_update_", "code_statistics"]


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook row of every vector, in squared L2.

    Args:
        x: ``[..., D]`` floating vectors (any layout; views and channel-first permutes work).
        codebook: ``[K, D]`` floating, K ≥ 1.
        backend: ``"auto"``, ``"reference"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``codes``: int64 ``[...]``, ``argmin_k Σ_d (x_d − codebook[k, d])²``; among exact ties the smallest k.
        ``sqdist``: ``[...]``, the squared distance to the chosen row as the direct difference ``Σ_d (x − e)²``;
        float64 if x or codebook is float64, else float32.

    Rows of x holding NaN or infinity get some code in ``[0, K)`` and a non-finite sqdist.
    """
    dtype = check.check_search_inputs(x, codebook, 2)
    impl = resolve_backend(backend, x.device)
    rows = check.as_rows(x, dtype)
    codes, sqdist = impl.nearest_code(check.detached(rows), check.as_table(codebook, dtype))
    if _wants_grad(x, codebook):  # the same direct difference, differentiable in x and the codebook
        table = codebook.to(dtype)
        sqdist = (rows - table.index_select(0, codes)).square().sum(dim=1)
    if x.dim() == 2:
        return codes, sqdist
    lead = x.shape[:-1]
    return codes.reshape(lead), sqdist.reshape(lead)


def _wants_grad(*tensors: torch.Tensor) -> bool:
    for t in tensors:
        if t.requires_grad:
            return torch.is_grad_enabled()
    return False


def residual_quantize(
    x: torch.Tensor, codebooks: torch.Tensor, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy residual quantization over L codebooks.

    ``r_0 = x``; for each level ``c_l = nearest_code(r_l, C_l)``, ``r_{l+1} = r_l − C_l[c_l]``.

    Args:
        x: ``[..., D]`` floating.
        codebooks: ``[L, K, D]`` floating, L ≥ 1, K ≥ 1.

    Returns:
        ``quantized``: ``[..., D]`` in x's dtype, ``Σ_l C_l[c_l]`` (summed in the compute dtype); differentiable
        w.r.t. the codebooks (the codes are piecewise constant in x: no gradient reaches x).
        ``codes``: int64 ``[..., L]``.
    """
    dtype = check.check_search_inputs(x, codebooks, 3)
    impl = resolve_backend(backend, x.device)
    # no call where nothing changes: each no-op conversion, detach or reshape is still a dispatched op (~1-3 µs,
    # ~20 µs of a 60 µs call at N = 1,024, D = 4 before, 2026-12-03)
    tables = check.as_table(codebooks, dtype, detach=False)  # with its grad: the differentiable decode reads it
    quantized, codes = impl.residual_quantize(check.detached(check.as_rows(x, dtype)), check.detached(tables))
    if _wants_grad(codebooks):
        quantized = _differentiable_decode(codes, tables)
    if quantized.dtype != x.dtype:
        quantized = quantized.to(x.dtype)
    if x.dim() == 2:
        return quantized, codes
    return quantized.reshape(x.shape), codes.reshape(*x.shape[:-1], codebooks.shape[0])


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Sum of the chosen codebook rows: the inverse of :func:`residual_quantize`'s encoding.

    Args:
        codes: integer ``[..., L']`` with ``L' ≤ L`` (a prefix of the levels); ``−1`` means "level skipped".
        codebooks: ``[L, K, D]`` floating.

    Returns:
        ``[..., D]`` in the codebooks' dtype: ``Σ_{l < L', c_l ≠ −1} C_l[c_l]``.
    """
    check.check_codebooks(codebooks)
    if not isinstance(codes, torch.Tensor) or codes.dim() < 1:
        raise check.ShapeError("codes must be a tensor of shape [..., L'] (one code per level)")
    num_levels = codebooks.shape[0]
    if codes.shape[-1] > num_levels:
        raise check.ShapeError(
            f"level-count mismatch: codes have {codes.shape[-1]} levels but there are only {num_levels} codebooks"
        )
    check.check_codes(codes, codebooks.shape[1], allow_skip=True)
    check.check_same_device(("codes", codes), ("codebooks", codebooks))
    impl = resolve_backend(backend, codebooks.device)
    dtype = check.compute_dtype(codebooks.dtype)
    rows = codes.reshape(math.prod(codes.shape[:-1]), codes.shape[-1]).long().contiguous()
    tables = codebooks.to(dtype).contiguous()
    if _wants_grad(codebooks):
        quantized = _differentiable_decode(rows, tables)
    else:
        quantized = impl.residual_decode(rows, tables)
    return quantized.to(codebooks.dtype).reshape(*codes.shape[:-1], codebooks.shape[2])


def _differentiable_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Σ_l C_l[c_l] over codes ``[N, L']`` (−1 skipped) with torch ops, so the gradient reaches the codebooks."""
    levels = codes.shape[1]
    flat = codebooks[:levels].reshape(-1, codebooks.shape[2])
    offsets = torch.arange(levels, device=codes.device) * codebooks.shape[1]
    rows = flat.index_select(0, (codes.clamp(min=0) + offsets).reshape(-1)).view(codes.shape[0], levels, -1)
    return (rows * (codes >= 0)[..., None]).sum(dim=1)


def code_statistics(
    x: torch.Tensor, codes: torch.Tensor, codebook_size: int, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code count and sum of the rows assigned to each code (the EMA statistics of one level).

    Args:
        x: ``[..., D]`` floating; codes: integer ``[...]`` (x's leading shape) in ``[0, K)``.

    Returns:
        ``counts`` ``[K]`` and ``sums`` ``[K, D]``, in the compute dtype of x (float32 or float64). Deterministic.
        ``sums`` is differentiable w.r.t. x; ``counts`` carries no gradient.
    """
    check._check_floating("x", x)
    if x.dim() < 1:
        raise check.ShapeError("x must have shape [..., D]")
    if not isinstance(codes, torch.Tensor) or codes.shape != x.shape[:-1]:
        got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise check.ShapeError(f"codes must have x's leading shape {tuple(x.shape[:-1])}, got {got}")
    if codebook_size < 1:
        raise check.EmptyCodebookError(f"codebook_size must be ≥ 1, got {codebook_size}")
    check.check_codes(codes, codebook_size, allow_skip=False)
    check.check_same_device(("x", x), ("codes", codes))
    dtype = check.compute_dtype(x.dtype)
    impl = resolve_backend(backend, x.device)
    rows, flat_codes = check.as_rows(x, dtype), codes.reshape(-1).long().contiguous()
    counts, sums = impl.code_statistics(rows.detach(), flat_codes, codebook_size)
    if _wants_grad(x):
        sums = rows.new_zeros(codebook_size, rows.shape[1]).index_add(0, flat_codes, rows)
    return counts, sums


def ema_update_(
    codebook: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    x: torch.Tensor,
    codes: torch.Tensor,
    *,
    decay: float,
    eps: float = 1e-5,
    backend: str = "auto",
) -> None:
    """Exponential-moving-average codebook update, in place (VQ-VAE appendix, with Laplace smoothing).

    With ``count_k`` and ``sum_k`` the number and the sum of the rows of x assigned to code k::

        cluster_size ← decay·cluster_size + (1 − decay)·count
        embed_sum    ← decay·embed_sum    + (1 − decay)·sum
        n = Σ_k cluster_size;  smoothed = (cluster_size + eps) / (n + K·eps) · n
        codebook     ← embed_sum / smoothed[:, None]

    Args:
        codebook ``[K, D]``, cluster_size ``[K]``, embed_sum ``[K, D]``: floating state, updated in place.
        x ``[..., D]``; codes integer ``[...]`` in ``[0, K)``; decay in ``[0, 1]``; eps > 0.

    Everything is checked and computed before the first write, so bad input (wrong shapes, out-of-range codes,
    a decay outside [0, 1], NaN or infinity in x) raises and leaves all three buffers untouched. No gradient flows
    through the update (tensors that require grad, e.g. a codebook ``nn.Parameter``, are updated in place under
    ``no_grad``).
    """
    check.check_codebook(codebook)
    num_codes, dim = codebook.shape
    check._check_floating("cluster_size", cluster_size)
    check._check_floating("embed_sum", embed_sum)
    if cluster_size.shape != (num_codes,):
        raise check.ShapeError(f"cluster_size must have shape [K] = [{num_codes}], got {tuple(cluster_size.shape)}")
    if embed_sum.shape != codebook.shape:
        raise check.ShapeError(f"embed_sum must have the codebook's shape {tuple(codebook.shape)}, got {tuple(embed_sum.shape)}")
    check.check_vectors(x, dim)
    if not 0.0 <= float(decay) <= 1.0:
        raise InvalidArgumentError(f"decay must be in [0, 1], got {decay}")
    if not float(eps) > 0.0:
        raise InvalidArgumentError(f"eps must be > 0, got {eps}")
    check.check_same_device(("codebook", codebook), ("cluster_size", cluster_size), ("embed_sum", embed_sum), ("x", x))
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError("x holds NaN or infinity: the EMA update would corrupt the codebook; nothing was changed")
    with torch.no_grad():
        counts, sums = code_statistics(x.detach(), codes, num_codes, backend=backend)
        new_cluster_size, new_embed_sum, new_codebook = ema_step(
            codebook.to(counts.dtype), cluster_size.to(counts.dtype), embed_sum.to(counts.dtype), counts, sums,
            decay=decay, eps=eps,
        )
        cluster_size.copy_(new_cluster_size)
        embed_sum.copy_(new_embed_sum)
        codebook.copy_(new_codebook)


def ema_step(
    codebook: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    *,
    decay: float,
    eps: float,
    num_codes: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pure EMA formula of :func:`ema_update_`: new (cluster_size [..., K], embed_sum [..., K, D], codebook
    [..., K, D]), for one codebook or a stack of them (the sums over K per codebook).

    ``num_codes``: the K in the smoothing term K·eps (default the last dimension of cluster_size; a stack of
    codebooks padded to a common K passes each one's own size, int or ``[..., 1]`` tensor). Padding rows (zero
    state and statistics) stay zero. When the total mass n is 0 (no data has ever been seen, e.g. decay = 0 on an
    empty batch) the formula is 0/0; the codebook is then kept as it is instead of becoming NaN. No host sync.
    """
    new_cluster_size = cluster_size * decay + counts * (1.0 - decay)
    new_embed_sum = embed_sum * decay + sums * (1.0 - decay)
    total = new_cluster_size.sum(dim=-1, keepdim=True)
    size = new_cluster_size.shape[-1] if num_codes is None else num_codes
    smoothed = (new_cluster_size + eps) / (total + size * eps) * total
    tiny = torch.finfo(smoothed.dtype).tiny
    new_codebook = torch.where(total[..., None] > 0, new_embed_sum / smoothed.clamp_min(tiny)[..., None], codebook)
    return new_cluster_size, new_embed_sum, new_codebook
