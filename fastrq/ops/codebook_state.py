"""The quantizer's state transitions, as plain functions over tensors (the ops in :mod:`fastrq.library` wrap them).

State of a quantizer with ``L`` levels of ``K_l`` codes of dimension ``D`` (stored padded to ``K = max K_l``; a
shared codebook is stored once, ``S = 1``, else ``S = L``):

- ``codebooks [S, K, D]``: the codes (a buffer with EMA, an ``nn.Parameter`` when learned by gradient);
- ``cluster_size [S, K]``: EMA of the per-code counts; ``embed_sum [S, K, D]``: EMA of the per-code sums (EMA only);
- ``initted`` (bool): k-means init done; ``rng_state [2]`` int64: (seed, step) of the counter-based random choices.

Three transitions, each all-or-nothing:

- :func:`residual_walk`: given the codes, the quantized rows, per-level squared errors, the commitment gradient
  direction and (optionally) the per-level counts and sums, in one pass over the levels. No state change.
- :func:`kmeans_init_`: k-means on the first training batch, level after level on that level's residuals.
- :func:`codebook_update_`: the EMA step (exactly :func:`fastrq.ops.ema_step`) on every active level, then the
  dead-code restart. Device-side ``torch.where`` selects old or new state, so skipping (non-finite input, dropped
  levels) needs no host sync.
"""

from __future__ import annotations

import torch

from . import functional as ops
from .backends import resolve_backend
from .counter_random import hash_permutation_prefix, hash_uniform_int
from .distributed import all_reduce_sum_, rank_and_world

__all__ = ["residual_walk", "kmeans_init_", "codebook_update_", "DEAD_STATS_FLOOR"]

# Codes whose EMA cluster size is below this count as dead in the statistics when no restart threshold is set
# (fewer than one assignment per batch on average over the EMA window).
DEAD_STATS_FLOOR = 1.0

_KMEANS_STREAM = 1 << 20
_DEAD_STREAM = 2 << 20


def residual_walk(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    codes: torch.Tensor,
    num_active: int,
    want_stats: bool,
    want_codebook_grad: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over the levels for given codes.

    Args:
        x ``[N, D]``; codebooks ``[L, K, D]`` (same dtype); codes int64 ``[N, L]``, valid in the first
        ``num_active`` levels (the rest are −1 and skipped).

    Returns, with ``r_0 = x``, ``e_l = C_l[c_l]``, ``r_{l+1} = r_l − e_l`` over active levels:
        ``quantized [N, D] = Σ_l e_l``; ``level_sqerr [L] = Σ_{n,d} r_{l+1}²`` (0 for skipped levels);
        ``commit_dir [N, D] = Σ_l r_{l+1}`` (the commitment loss gradient is 2β/(N·D) times this);
        ``counts [L, K]`` and ``sums [L, K, D]`` of the rows of r_l per code (zeros unless ``want_stats``);
        ``codebook_grad [L, K, D] = 2/(N·D) · (counts · C − sums)``, the gradient of the codebook loss
        Σ_l mean((sg(r_l) − e_l)²) (zeros unless ``want_codebook_grad``, which implies the statistics). Computed
        here so that a backward never needs the codebooks (a later in-place update may have changed them).
    """
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    impl = resolve_backend(backend, x.device)
    quantized = torch.zeros_like(x)
    commit_dir = torch.zeros_like(x)
    level_sqerr = x.new_zeros(num_levels)
    counts = x.new_zeros(num_levels, num_codes)
    sums = x.new_zeros(num_levels, num_codes, dim)
    residual = x.clone(memory_format=torch.contiguous_format)
    want_stats = want_stats or want_codebook_grad
    for level in range(num_active):
        level_codes = codes[:, level].contiguous()
        if want_stats:
            counts[level], sums[level] = impl.code_statistics(residual, level_codes, num_codes)
        chosen = codebooks[level].index_select(0, level_codes)
        residual.sub_(chosen)
        quantized.add_(chosen)
        commit_dir.add_(residual)
        flat = residual.view(-1)
        level_sqerr[level] = torch.dot(flat, flat)
    if want_codebook_grad:
        codebook_grad = (counts[..., None] * codebooks - sums) * (2.0 / max(x.numel(), 1))
    else:
        codebook_grad = torch.zeros_like(sums)
    return quantized, level_sqerr, commit_dir, counts, sums, codebook_grad


def _rank_candidates(cand: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Keep the candidates this rank contributes (codes k with k mod world == rank), zero the rest, so a sum
    all-reduce assembles one candidate per code from all ranks' batches, identical everywhere."""
    if world == 1:
        return cand
    owner = torch.arange(cand.shape[-2], device=cand.device) % world
    return torch.where((owner == rank)[:, None], cand, torch.zeros_like(cand))


def kmeans_init_(
    codebooks: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    initted: torch.Tensor,
    rng_state: torch.Tensor,
    x: torch.Tensor,
    finite: torch.Tensor,
    level_sizes: list[int],
    iters: int,
    sync: bool,
    backend: str,
) -> None:
    """k-means (Lloyd) initialisation from the batch x ``[N, D]``, level after level, in place.

    Level l clusters the residuals left by the already initialised levels 0..l−1 (a shared codebook, S = 1,
    clusters x). Seeds are distinct random rows (with replacement when N < K); each iteration assigns every row
    through :func:`fastrq.ops.nearest_code` (streaming, never N×K) and moves each code to its cluster mean; an
    empty cluster keeps its current vector. Afterwards ``cluster_size`` = the cluster counts (an empty cluster
    gets a pseudo-count of 1, so the next EMA step does not pull it to zero) and ``embed_sum = codebook ·
    cluster_size``, so the EMA continues from the k-means solution instead of collapsing.

    Under ``sync`` every rank takes part: the counts and sums are all-reduced (k-means over the union of the
    batches) and the seeds are assembled from all ranks, so every rank ends with the same codebooks. Does nothing
    when already initialised, when x is not finite (on any rank) or when no rank has any rows.
    """
    if bool(initted):
        return
    rank, world = rank_and_world(sync)
    flags = torch.stack([finite.reshape(()).to(torch.float64), torch.tensor(float(x.shape[0]), device=x.device, dtype=torch.float64)])
    flags = all_reduce_sum_(flags, sync).tolist()
    if flags[0] != world or flags[1] == 0:  # non-finite somewhere, or no data anywhere: try again next step
        return
    impl = resolve_backend(backend, x.device)
    x = x.to(codebooks.dtype)
    n = x.shape[0]
    residual = x
    new_codebooks = codebooks.detach().clone()
    new_cluster = cluster_size.detach().clone()
    new_embed = embed_sum.detach().clone() if embed_sum.numel() else embed_sum
    for level in range(codebooks.shape[0]):
        k = level_sizes[level]
        if n > 0:
            seeds = residual[hash_permutation_prefix(rng_state[0], _KMEANS_STREAM + level, n, k)]
        else:
            seeds = residual.new_zeros(k, x.shape[1])
        centroids = all_reduce_sum_(_rank_candidates(seeds, rank, world).contiguous(), sync)
        counts = residual.new_zeros(k)
        for it in range(max(iters, 1)):
            codes, _ = ops.nearest_code(residual, centroids, backend=backend)
            counts, sums = impl.code_statistics(residual, codes, k)
            flat = all_reduce_sum_(torch.cat([counts, sums.reshape(-1)]), sync)
            counts, sums = flat[:k], flat[k:].view(k, -1)
            if it < iters:
                centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        sizes = counts.clamp_min(1.0)
        new_codebooks[level, :k] = centroids
        new_cluster[level, :k] = sizes
        if new_embed.numel():
            new_embed[level, :k] = centroids * sizes[:, None]
        if level + 1 < codebooks.shape[0]:
            codes, _ = ops.nearest_code(residual, centroids, backend=backend)
            residual = residual - centroids.index_select(0, codes)
    with torch.no_grad():
        codebooks.copy_(new_codebooks)
        cluster_size.copy_(new_cluster)
        if embed_sum.numel():
            embed_sum.copy_(new_embed)
        initted.fill_(True)


def _dead_code_candidates(
    x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor, num_active: int, key: torch.Tensor, shared: bool
) -> torch.Tensor:
    """Replacement candidates ``[S, K, D]``: for each code, the residual of a random row of this batch at its
    level (shared codebook: at a random active level), computed with the pre-update codebooks."""
    n, dim = x.shape
    num_stored, num_codes, _ = codebooks.shape
    if n == 0:
        return x.new_zeros(num_stored, num_codes, dim)
    safe_codes = codes.clamp(min=0)
    cands = []
    for stored in range(num_stored):
        rows = hash_uniform_int(key, _DEAD_STREAM + 2 * stored, num_codes, n)
        residual = x.index_select(0, rows)
        if shared:
            level_of = hash_uniform_int(key, _DEAD_STREAM + 2 * stored + 1, num_codes, max(num_active, 1))
            for level in range(num_active - 1):
                chosen = codebooks[0].index_select(0, safe_codes[rows, level])
                residual = residual - torch.where((level < level_of)[:, None], chosen, torch.zeros_like(chosen))
        else:
            for level in range(min(stored, num_active)):
                residual = residual - codebooks[level].index_select(0, safe_codes[rows, level])
        cands.append(residual)
    return torch.stack(cands)


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
    num_active: int,
    level_sizes: list[int],
    decay: float,
    eps: float,
    dead_code_threshold: float,
    ema: bool,
    sync: bool,
) -> None:
    """One training step's state update, in place; all-or-nothing, no host sync.

    Args:
        codebooks ``[S, K, D]``, cluster_size ``[S, K]``, embed_sum ``[S, K, D]`` (empty when ``ema`` is False),
        rng_state ``[2]``: the state (codebooks may be an empty placeholder when neither ``ema`` nor restarts
        need it: a learned codebook is then left to its optimizer). x ``[N, D]`` and codes ``[N, L]``: this batch (codes −1 from level
        ``num_active`` on). counts ``[L, K]``, sums ``[L, K, D]``: per-level statistics from :func:`residual_walk`.
        finite: 0-d bool, False skips the update (the statistics would be NaN).

    With ``ema``, each active level l gets ``ema_step`` on its own statistics (a shared codebook, S = 1: the
    statistics of all levels summed, the decay applied once). Without ``ema`` (codebook learned by gradient) only
    ``cluster_size`` follows the EMA of the counts (for restarts and statistics). Then, with
    ``dead_code_threshold > 0``, every code whose cluster size is below the threshold is replaced by a residual of
    a random row of this batch at its level, with ``cluster_size = threshold`` and ``embed_sum = code ·
    threshold`` (a stale embed_sum would undo the replacement at the next step).

    Under ``sync`` one ``all_reduce`` carries counts, sums, replacement candidates and the per-rank flags, so
    every rank computes the same new state (and skips together when any rank saw non-finite input).
    """
    num_levels = len(level_sizes)
    num_stored, num_codes = cluster_size.shape
    dim = x.shape[1]
    shared = num_stored == 1 and num_levels > 1
    rank, world = rank_and_world(sync)
    dtype = codebooks.dtype
    ok_local = finite.reshape(1).to(dtype)
    level_active = (torch.arange(num_levels, device=x.device) < num_active).to(dtype)
    restart = dead_code_threshold > 0
    parts = [counts.to(dtype).reshape(-1)]
    if ema:
        parts.append(sums.to(dtype).reshape(-1))
    if restart:
        cands = _dead_code_candidates(x.to(dtype), codebooks.detach(), codes, num_active, rng_state[0] * 7919 + rng_state[1], shared)
        # a trailing channel says whether the candidate exists (its owner rank had rows this step)
        has_rows = torch.full((num_stored, num_codes, 1), float(x.shape[0] > 0), dtype=dtype, device=x.device)
        parts.append(_rank_candidates(torch.cat([cands, has_rows], dim=-1), rank, world).reshape(-1))
    stats = torch.cat(parts)
    stats = torch.where(ok_local.bool(), stats, torch.zeros_like(stats))  # NaN must not reach other ranks
    flat = all_reduce_sum_(torch.cat([stats, level_active, ok_local]), sync)
    ok = flat[-1] == world
    level_active = flat[-1 - num_levels : -1] > 0
    offset = 0
    g_counts = flat[offset : offset + num_levels * num_codes].view(num_levels, num_codes)
    offset += num_levels * num_codes
    if ema:
        g_sums = flat[offset : offset + num_levels * num_codes * dim].view(num_levels, num_codes, dim)
        offset += num_levels * num_codes * dim
    if restart:
        g_cands = flat[offset : offset + num_stored * num_codes * (dim + 1)].view(num_stored, num_codes, dim + 1)
        cand_exists = g_cands[..., dim] > 0
        g_cands = g_cands[..., :dim]

    if shared:
        g_counts = g_counts.sum(dim=0, keepdim=True)
        if ema:
            g_sums = g_sums.sum(dim=0, keepdim=True)
        stored_active = [ok]  # level 0 always runs, so the shared codebook always has data
    else:
        stored_active = [ok & level_active[s] for s in range(num_stored)]

    old_cb = codebooks.detach()
    new_cb = old_cb.clone() if (ema or restart) else old_cb
    new_cs = cluster_size.clone()
    new_es = embed_sum.clone()
    for s in range(num_stored):
        k = level_sizes[s]
        active = stored_active[s]
        if ema:
            cs, es, cb = ops.ema_step(
                old_cb[s, :k], cluster_size[s, :k], embed_sum[s, :k], g_counts[s, :k], g_sums[s, :k], decay=decay, eps=eps
            )
            new_es[s, :k] = torch.where(active, es, embed_sum[s, :k])
            new_cb[s, :k] = torch.where(active, cb, old_cb[s, :k])
        else:
            cs = cluster_size[s, :k] * decay + g_counts[s, :k] * (1.0 - decay)
        new_cs[s, :k] = torch.where(active, cs, cluster_size[s, :k])
        if restart:
            dead = (new_cs[s, :k] < dead_code_threshold) & active & cand_exists[s, :k]
            new_cb[s, :k] = torch.where(dead[:, None], g_cands[s, :k], new_cb[s, :k])
            new_cs[s, :k] = torch.where(dead, torch.full_like(new_cs[s, :k], dead_code_threshold), new_cs[s, :k])
            if ema:
                new_es[s, :k] = torch.where(dead[:, None], g_cands[s, :k] * dead_code_threshold, new_es[s, :k])
    with torch.no_grad():
        if ema or restart:
            codebooks.copy_(new_cb)
        cluster_size.copy_(new_cs)
        if ema:
            embed_sum.copy_(new_es)
        rng_state[1] += 1
