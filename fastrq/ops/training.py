"""The quantizer's training forward pass: greedy search, residual walk, per-level errors, the commitment gradient
direction and the EMA statistics, in one pass per backend.

With ``r_0 = x``, ``e_l = C_l[c_l]`` and ``r_{l+1} = r_l − e_l`` over the levels a row takes part in (levels below
``num_active`` and, per row, below ``row_levels[n]``; ``row_levels[n] = 0`` leaves the row out entirely):

    quantized  [N, D]    = Σ_l e_l                               (0 for a row that takes no level)
    codes      [N, L]    = c_l, −1 where the (row, level) pair is skipped
    level_sqerr [L]      = Σ_n ‖r_{l+1, n}‖²                      (the commitment loss of level l is it / (N·D))
    commit_dir [N, D]    = Σ_l r_{l+1}                            (∂ commitment / ∂x = 2β / (N·D) · commit_dir)
    counts     [L, K]    = #{n : c_l(n) = k},  sums [L, K, D] = Σ_{n : c_l(n) = k} r_{l, n}

Every backend implements :func:`quantize_for_training` with exactly this contract (``fastrq.ops.reference`` is the
oracle, ``fastrq.ops.torch_backend`` one walk over row blocks, ``fastrq.kernels.backend`` fused kernels);
:func:`walk_given_codes` computes the same outputs for codes found elsewhere (beam search).
"""

from __future__ import annotations

import functools

import torch

from ..kernels.cpu import launch as cpu_kernels
from .backends import resolve_backend
from .codebook_state import _DEAD_STREAM
from .validation import detached

__all__ = [
    "quantize_for_training", "quantize_and_update_", "walk_given_codes", "straight_through_forward", "level_residuals",
    "level_statistics",
]


def quantize_for_training(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None,
    backend: str,
):
    """Rows x ``[N, D]`` and codebooks ``[L, K, D]`` in the compute dtype (contiguous, one device; level l uses its
    first ``level_sizes[l]`` rows) → ``(quantized, codes, level_sqerr, commit_dir, counts, sums)`` as in the module
    docstring. Deterministic for a given backend and thread count."""
    x, codebooks = x.detach(), codebooks.detach()  # the caller's autograd Function owns the gradients
    impl = resolve_backend(backend, x.device)
    run = getattr(impl, "quantize_for_training", None)
    if run is None:  # a backend without its own fused pass: its greedy search, then the walk here
        from .search import greedy_codes

        codes = torch.full((x.shape[0], codebooks.shape[0]), -1, dtype=torch.long, device=x.device)
        codes[:, :num_active] = greedy_codes(x, codebooks[:num_active], level_sizes, backend)
        return walk_given_codes(x, codebooks, codes, num_active, row_levels, backend)
    return run(x, codebooks, level_sizes, num_active, row_levels)


def quantize_and_update_(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    rng_state: torch.Tensor,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None,
    backend: str,
    *,
    decay: float,
    eps: float,
    dead_code_threshold: float,
):
    """:func:`quantize_for_training` followed by the state update of
    :func:`fastrq.ops.codebook_state.codebook_update_` (EMA, dead-code restarts, the step counter; no distributed
    sync, L levels each with its own stored codebook), fused where the backend has a fused step for these tensors
    (the torch backend on the CPU with the native kernel: one call, no tensor op between the pieces); else None,
    and the caller runs the two.

    codebooks / embed_sum ``[L, K, D]``, cluster_size ``[L, K]``, rng_state int64 ``[2]``: the EMA state, updated in
    place after the pass has read the codebooks. Returns ``(quantized, codes, level_sqerr, commit_dir, counts,
    sums, updated)``: the outputs of :func:`quantize_for_training` and whether the state was updated (False: a
    non-finite squared error, and then nothing changed; the caller's non-finite policy raises or advances the step
    counter as ``codebook_update_`` does for a skipped step)."""
    run = getattr(resolve_backend(backend, x.device), "quantize_and_update_", None)
    if run is None:
        return None
    return run(detached(x), detached(codebooks), cluster_size, embed_sum, rng_state, level_sizes, num_active,
               row_levels, decay, eps, dead_code_threshold, _DEAD_STREAM)


def walk_given_codes(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    codes: torch.Tensor,
    num_active: int,
    row_levels: torch.Tensor | None,
    backend: str,
):
    """The outputs of :func:`quantize_for_training` for given codes ``[N, L]`` (valid in the first ``num_active``
    levels; the rest, and the pairs ``row_levels`` skips, are ignored and come back as −1)."""
    x, codebooks = x.detach(), codebooks.detach()
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    impl = resolve_backend(backend, x.device)
    quantized = torch.zeros_like(x)
    commit_dir = torch.zeros_like(x)
    sums = x.new_zeros(num_levels, num_codes, dim)
    counts = x.new_zeros(num_levels, num_codes)
    out_codes = torch.full_like(codes, -1)
    sqerr = []
    residual = x.clone(memory_format=torch.contiguous_format)
    for level in range(num_active):
        level_codes = codes[:, level].clamp(min=0).contiguous()
        if row_levels is None:
            active = None
            out_codes[:, level] = codes[:, level]
        else:
            active = (row_levels > level)[:, None]
            out_codes[:, level] = torch.where(active[:, 0], codes[:, level], -1)
        contribution = residual if active is None else residual * active
        level_counts, sums[level] = impl.code_statistics(contribution, level_codes, num_codes)
        if active is not None:  # skipped rows add a zero row to the sums and a zero weight to the counts
            level_counts = torch.bincount(level_codes, weights=active[:, 0].to(x.dtype), minlength=num_codes)
        counts[level] = level_counts
        chosen = codebooks[level].index_select(0, level_codes)
        if active is not None:
            chosen = chosen * active
        residual.sub_(chosen)
        quantized.add_(chosen)
        left = residual if active is None else residual * active
        commit_dir.add_(left)
        flat = left.reshape(-1)
        sqerr.append(torch.dot(flat, flat))
    level_sqerr = x.new_zeros(num_levels)
    if sqerr:
        level_sqerr[:num_active] = torch.stack(sqerr)
    return quantized, out_codes, level_sqerr, commit_dir, counts, sums


def level_residuals(x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``[L, N, D]``: r_{l+1} of every row at every level it takes (0 where the code is −1)."""
    residual = x
    out = []
    for level in range(codes.shape[1]):
        taken = (codes[:, level] >= 0)[:, None]
        residual = residual - codebooks[level].index_select(0, codes[:, level].clamp(min=0)) * taken
        out.append(residual * taken)
    return torch.stack(out)


def level_statistics(
    level_sqerr: torch.Tensor,
    counts: torch.Tensor,
    cluster_size: torch.Tensor,
    level_sizes: list[int],
    num_valid,
    dim: int,
    dead_threshold: float,
) -> dict[str, torch.Tensor]:
    """The per-level statistics of a training step, each ``[L]`` float32, from its level_sqerr ``[L]`` and counts
    ``[L, K]`` (:func:`quantize_for_training`) and the updated cluster_size ``[S, K]`` (S = 1: a shared codebook):

        mse         = level_sqerr / max(N_valid · D, 1)
        usage       = #{k : counts_k > 0} / K_l
        perplexity  = exp(−Σ_k p_k log p_k),  p_k = counts_k / max(Σ_k counts_k, 1)
        dead_codes  = #{k < K_l : cluster_size_k < dead_threshold}

    num_valid: an int or a 0-d tensor. One native call for contiguous float32 CPU tensors in eager mode (the
    entropy in float64 there), else about a dozen tensor ops without a host sync."""
    if _native_statistics(level_sqerr, counts, cluster_size):
        numel = max((num_valid if isinstance(num_valid, int) else int(num_valid)) * dim, 1)
        values = cpu_kernels.level_statistics(level_sqerr, counts, cluster_size, level_sizes, numel, dead_threshold)
        return dict(zip(("mse", "usage", "perplexity", "dead_codes"), values.unbind()))
    num_levels, num_codes = counts.shape
    sizes, padding = _level_size_tensors(tuple(level_sizes), num_codes, counts.device, counts.dtype)
    entropy = torch.special.entr(counts / counts.sum(-1, keepdim=True).clamp_min(1)).sum(-1)  # −Σ p log p
    dead_mask = cluster_size < dead_threshold  # [S, K]
    if padding is not None:
        dead_mask = dead_mask & padding[: cluster_size.shape[0]]
    dead = dead_mask.sum(-1)
    if dead.shape[0] != num_levels:  # a shared codebook: the same count at every level
        dead = dead.expand(num_levels)
    numel = num_valid * dim
    numel = max(numel, 1) if isinstance(numel, int) else numel.clamp_min(1)
    return {
        "mse": level_sqerr / numel,
        "usage": (counts > 0).sum(-1) / sizes,
        "perplexity": torch.exp(entropy),
        "dead_codes": dead.to(counts.dtype),
    }


def _native_statistics(*tensors: torch.Tensor) -> bool:
    return (
        not torch.compiler.is_compiling()
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
        and cpu_kernels.library() is not None
    )


def _level_size_tensors(sizes: tuple[int, ...], num_codes: int, device: torch.device, dtype: torch.dtype):
    """(level sizes ``[L]`` in ``dtype``, the padding mask ``[L, K]`` of codes within each level's size, or None
    when every level has all K), built once per value outside torch.compile."""
    if torch.compiler.is_compiling():
        return _build_level_size_tensors(sizes, num_codes, device, dtype)
    return _cached_level_size_tensors(sizes, num_codes, device, dtype)


def _build_level_size_tensors(sizes, num_codes, device, dtype):
    values = torch.tensor(sizes, dtype=dtype, device=device)
    if all(k == num_codes for k in sizes):
        return values, None
    return values, torch.arange(num_codes, device=device)[None, :] < values[:, None]


_cached_level_size_tensors = functools.lru_cache(maxsize=64)(_build_level_size_tensors)


def straight_through_forward(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    codes: torch.Tensor | None,
    level_sizes: list[int],
    num_active: int,
    row_levels: torch.Tensor | None,
    backend: str,
    want_codebook_grad: bool,
    want_level_residuals: bool,
):
    """Everything the straight-through Function needs from its forward, in one call (one registered op under
    torch.compile, so that every tensor its backward reads is an output computed before the in-place EMA step):
    the training pass (codes None) or the walk for given codes, plus ``counts · C − sums`` ``[L, K, D]`` (the
    learned codebook's gradient up to 2/(N·D)) and the per-level residuals ``[L, N, D]`` (for a per-level loss),
    each an empty tensor when not wanted."""
    if codes is None:
        out = quantize_for_training(x, codebooks, level_sizes, num_active, row_levels, backend)
    else:
        out = walk_given_codes(x, codebooks, codes, num_active, row_levels, backend)
    quantized, codes, level_sqerr, commit_dir, counts, sums = out
    books = codebooks.detach()
    grad_base = counts[..., None] * books - sums if want_codebook_grad else sums.new_empty(0)
    residuals = level_residuals(x.detach(), books, codes) if want_level_residuals else x.new_empty(0)
    return quantized, codes, level_sqerr, commit_dir, counts, sums, grad_base, residuals


class _ValueWithGradientOf(torch.autograd.Function):
    """Forward: ``value`` (exactly); backward: the incoming gradient goes to ``carrier`` (same shape)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, carrier: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, grad


def rotate_onto(r: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick") for rows
    r, e ``[N, D]``: ``λ·R·r`` with ``u = r/‖r‖``, ``q = e/‖e‖``, ``w = (u + q)/‖u + q‖``,
    ``R·v = v − 2w(w·v) + 2q(u·v)`` (the rotation taking u to q) and ``λ = ‖e‖/‖r‖``, all treated as constants:
    the value is e (up to rounding) and the Jacobian w.r.t. r is λR. Rows where the rotation is undefined (‖r‖,
    ‖e‖ or ‖u + q‖ about 0) fall back to the straight-through Jacobian I."""
    with torch.no_grad():
        r_norm = r.norm(dim=-1, keepdim=True)
        e_norm = e.norm(dim=-1, keepdim=True)
        tiny = torch.finfo(r.dtype).tiny ** 0.5
        u = r / r_norm.clamp_min(tiny)
        q = e / e_norm.clamp_min(tiny)
        s = u + q
        s_norm = s.norm(dim=-1, keepdim=True)
        w = s / s_norm.clamp_min(tiny)
        scale = e_norm / r_norm.clamp_min(tiny)
        defined = (r_norm > tiny) & (e_norm > tiny) & (s_norm > 1e-3)
    rotated = scale * (r - 2.0 * w * (w * r).sum(-1, keepdim=True) + 2.0 * q * (u * r).sum(-1, keepdim=True))
    return torch.where(defined, rotated, r)


def differentiable_walk(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    codes: torch.Tensor,
    num_valid,
    *,
    commitment_weight: float,
    learn_codebook: bool,
    rotation_trick: bool,
    cosine: bool,
    per_level_loss: bool,
):
    """The walk for given codes written with differentiable torch ops, for the estimators the fused
    straight-through Function does not cover (the rotation trick, cosine codes).

    x ``[N, D]`` (requires grad), codebooks ``[L, K, D]`` (a learned codebook requires grad; with ``cosine`` its
    rows are unit vectors), codes ``[N, L]`` (−1: skipped). With ``r_0 = x``, ``e_l = C_l[c_l]``:

    - value of ``quantized`` = Σ_l e_l exactly;
    - its gradient: straight through (∂/∂x = I), or with ``rotation_trick`` the chain
      ``r_{l+1} = r_l − rot_l(r_l)``, ``quantized = x − r_L`` with ``rot_l`` = :func:`rotate_onto` (so
      ∂quantized/∂x = I − Π_l (I − λ_l R_l): the identity when every level quantizes exactly);
    - ``loss_l = β·Σ(ρ_l − sg(e_l))² / (N_valid·D)`` with ρ_l = r_l (``cosine``: r_l/‖r_l‖, the commitment of the
      normalised input as in vector-quantize-pytorch), plus ``Σ(sg(ρ_l) − e_l)² / (N_valid·D)`` when learned;
    - statistics of ρ_l: counts ``[L, K]`` and sums ``[L, K, D]`` (the EMA averages ρ).

    Returns ``(quantized, loss (0-d, or [L] with per_level_loss), level_sqerr [L] (Σ‖r_{l+1}‖²), counts, sums)``.
    """
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    numel = (num_valid if isinstance(num_valid, int) else num_valid.to(x.dtype)) * dim
    numel = max(numel, 1) if isinstance(numel, int) else numel.clamp_min(1)
    residual = x
    value = torch.zeros_like(x)
    losses, sqerr, count_rows, sum_rows = [], [], [], []
    for level in range(num_levels):
        level_codes = codes[:, level]
        taken = (level_codes >= 0)[:, None]
        safe = level_codes.clamp(min=0)
        chosen = codebooks[level].index_select(0, safe) * taken  # carries the codebook gradient when learned
        fixed = chosen.detach()
        rho = residual / residual.norm(dim=-1, keepdim=True).clamp_min(1e-12) if cosine else residual
        loss = commitment_weight * ((rho - fixed).square() * taken).sum() / numel
        if learn_codebook:
            loss = loss + ((rho.detach() - chosen).square() * taken).sum() / numel
        losses.append(loss)
        ones = torch.ones_like(level_codes, dtype=x.dtype)  # a static shape (bincount's is data dependent)
        count_rows.append(x.new_zeros(num_codes + 1).index_add_(0, level_codes + 1, ones)[1:])
        sum_rows.append(x.new_zeros(num_codes, dim).index_add_(0, safe, rho.detach() * taken))
        if rotation_trick:
            step = rotate_onto(residual, fixed)
            step = step + (fixed - step).detach()
            residual = residual - step * taken
        else:
            residual = residual - fixed
        value = value + fixed
        left = (residual.detach() * taken).reshape(-1)
        sqerr.append(torch.dot(left, left))
    carrier = x - residual if rotation_trick else x
    quantized = _ValueWithGradientOf.apply(value, carrier)
    loss = torch.stack(losses)
    return quantized, (loss if per_level_loss else loss.sum()), torch.stack(sqerr), torch.stack(count_rows), torch.stack(sum_rows)
