"""The quantizer's state transitions, as plain functions over tensors (the ops in :mod:`fastrq.library` wrap them).

State of a quantizer with ``L`` levels of ``K_l`` codes of dimension ``D`` (stored padded to ``K = max K_l``; a
shared codebook is stored once, ``S = 1``, else ``S = L``):

- ``codebooks [S, K, D]``: the codes (a buffer with EMA, an ``nn.Parameter`` when learned by gradient);
- ``cluster_size [S, K]``: EMA of the per-code counts; ``embed_sum [S, K, D]``: EMA of the per-code sums (EMA only);
- ``initted`` (bool): k-means init done; ``rng_state [2]`` int64: (seed, step) of the counter-based random choices.

Two transitions, each all-or-nothing (the forward pass that produces their statistics is
:mod:`fastrq.ops.training`):

- :func:`kmeans_init_`: k-means on the first training batch, level after level on that level's residuals.
- :func:`codebook_update_`: the EMA step (exactly :func:`fastrq.ops.ema_step`) on every active level at once,
  then the dead-code restart. Skipping (non-finite input, dropped levels) is decided in Python where that is free
  (a flag the host already knows) and by device-side ``torch.where`` otherwise, so it never needs a host sync.
"""

from __future__ import annotations

import functools

import torch

from ..kernels.cpu import launch as cpu_kernels
from . import functional as ops
from .backends import resolve_backend
from .counter_random import hash_uniform_float, hash_uniform_int
from .distributed import all_reduce_sum_, rank_and_world

__all__ = [
    "kmeans_init_", "kmeans_plus_plus_seeds", "codebook_update_", "advance_step_", "renormalize_", "DEAD_STATS_FLOOR",
]

# Codes whose EMA cluster size is below this count as dead in the statistics when no restart threshold is set
# (fewer than one assignment per batch on average over the EMA window).
DEAD_STATS_FLOOR = 1.0

_KMEANS_STREAM = 1 << 20
_DEAD_STREAM = 2 << 20
# k-means++ seeding costs K sequential passes over the rows; above this many multiply-adds (N·K·D) it runs on an
# evenly spaced subsample of the rows (at least 4K of them): a few seconds on a 2-core CPU at most.
KMEANS_PLUS_PLUS_MAX_WORK = 1 << 31


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
    clusters x). Seeds come from k-means++ (:func:`kmeans_plus_plus_seeds`); each iteration assigns every row
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
        centroids = kmeans_plus_plus_seeds(residual, k, rng_state[0], _KMEANS_STREAM + level, sync)
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


def kmeans_plus_plus_seeds(x: torch.Tensor, k: int, key: torch.Tensor, stream: int, sync: bool) -> torch.Tensor:
    """k-means++ seeds ``[k, D]`` (Arthur & Vassilvitskii 2007) from the rows x ``[N, D]`` of every rank.

    The first seed is a uniform random row, each next one a row drawn with probability ∝ its squared distance to
    the nearest seed so far (a uniform random row when every row is already a seed). The draws come from the
    counter RNG (``key``, ``stream``): the same seeds for the same rows, on every rank. Under ``sync`` the rows of
    all ranks take part: each draw all-reduces the ranks' total masses, the owner of the drawn row contributes it
    to a second all-reduce (two collectives per seed). Above ``KMEANS_PLUS_PLUS_MAX_WORK`` the rows are subsampled
    evenly. No host sync.
    """
    rank, world = rank_and_world(sync)
    n, dim = x.shape
    if n * k * dim > KMEANS_PLUS_PLUS_MAX_WORK and n > 4 * k:
        keep = max(4 * k, KMEANS_PLUS_PLUS_MAX_WORK // (k * dim))
        x = x[torch.linspace(0, n - 1, keep, device=x.device).long()]
        n = x.shape[0]
    uniforms = hash_uniform_float(key.to(x.device), stream, k, dtype=torch.float64)
    seeds = x.new_zeros(k, dim)
    nearest = torch.ones(n, dtype=torch.float64, device=x.device)  # before the first seed every row weighs 1
    for i in range(k):
        cumulative = torch.cumsum(nearest, 0)
        local_total = cumulative[-1] if n else nearest.new_zeros(())
        if sync:
            totals = torch.zeros(world, dtype=torch.float64, device=x.device)
            totals[rank] = local_total
            ends = torch.cumsum(all_reduce_sum_(totals, True), 0)  # each rank's interval of the total mass
            grand = ends[-1]
            target = uniforms[i] * grand
            owner = torch.searchsorted(ends, target.reshape(1), right=True).clamp(max=world - 1)[0]
            offset = ends[owner] - totals[owner]
        else:
            grand = local_total
            target = uniforms[i] * grand
            owner, offset = None, 0.0
        if n:
            index = torch.searchsorted(cumulative, (target - offset).reshape(1), right=True).clamp(max=n - 1)
            fallback = (uniforms[i] * n).long().clamp(max=n - 1).reshape(1)  # every row is a seed already: uniform
            row = x.index_select(0, torch.where(grand > 0, index, fallback))[0]
            contribution = row if owner is None else row * (owner == rank).to(x.dtype)
        else:
            contribution = x.new_zeros(dim)
        seed = all_reduce_sum_(contribution.contiguous(), True) if sync else contribution
        seeds[i] = seed
        if n:
            nearest = torch.minimum(nearest if i else torch.full_like(nearest, float("inf")), (x - seed).square().sum(1).to(torch.float64))
    return seeds


def renormalize_(codebooks: torch.Tensor, level_sizes: list[int]) -> None:
    """Scale every code of codebooks ``[S, K, D]`` to unit L2 norm, in place (cosine codes; padding rows and zero
    rows stay zero)."""
    with torch.no_grad():
        norms = codebooks.norm(dim=-1, keepdim=True)
        codebooks.copy_(torch.where(norms > 0, codebooks / norms.clamp_min(torch.finfo(codebooks.dtype).tiny), codebooks))


def _dead_code_candidates(
    x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor, num_active: int, key: torch.Tensor, shared: bool,
    stream: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replacement candidates ``[S, K, D]``: for each code, the residual of a random row of this batch at its
    level (shared codebook: at a random active level), computed with the pre-update codebooks, and whether any row
    could be drawn (0-d bool).

    Only rows that took part (code ≥ 0 at level 0: not masked out) are drawn: the j-th such row for a draw j in
    [0, N_valid), so a batch with masked rows draws exactly what the batch of its valid rows alone would. No host
    sync."""
    n, dim = x.shape
    num_stored, num_codes, _ = codebooks.shape
    if n == 0:
        return x.new_zeros(num_stored, num_codes, dim), torch.zeros((), dtype=torch.bool, device=x.device)
    took_part = codes[:, 0] >= 0
    valid_before = torch.cumsum(took_part.to(torch.long), 0)  # valid rows up to and including each row
    num_valid = valid_before[-1]
    safe_codes = codes.clamp(min=0)
    cands = []
    for stored in range(num_stored):
        draws = hash_uniform_int(key, _DEAD_STREAM + stream + 2 * stored, num_codes, num_valid.clamp_min(1))
        rows = torch.searchsorted(valid_before, draws + 1).clamp(max=n - 1)  # the (draw + 1)-th valid row
        residual = x.index_select(0, rows)
        if shared:
            level_of = hash_uniform_int(key, _DEAD_STREAM + stream + 2 * stored + 1, num_codes, max(num_active, 1))
            for level in range(num_active - 1):
                chosen = codebooks[0].index_select(0, safe_codes[rows, level])
                residual = residual - torch.where((level < level_of)[:, None], chosen, torch.zeros_like(chosen))
        else:
            for level in range(min(stored, num_active)):
                residual = residual - codebooks[level].index_select(0, safe_codes[rows, level])
        cands.append(residual)
    return torch.stack(cands), num_valid > 0


def _restart_key(rng_state: torch.Tensor) -> torch.Tensor:
    """The counter-based key of this step's restart draws: ``seed · 7919 + step`` (0-d int64, wrapping)."""
    return rng_state[0] * 7919 + rng_state[1]


def _native_restart_available(x, codebooks, codes, cluster_size) -> bool:
    """Whether the dead-code candidates can come from one native call per group (float32 CPU state and rows, eager
    mode, a non-empty batch): :func:`fastrq.kernels.cpu.launch.dead_code_candidates` computes exactly what
    :func:`_dead_code_candidates` does."""
    return (
        _host_reads_are_free(cluster_size) and x.shape[0] > 0 and x.dtype == cluster_size.dtype == torch.float32
        and cpu_kernels.restart_available(x, codebooks.detach(), codes)
    )


def _native_candidates(x, codebooks, codes, rng_state, num_active: int, shared: bool, groups: int):
    """:func:`_dead_code_candidates` of every group through the native kernel: (candidates ``[S, K, D]``, whether any
    row took part, a Python bool). The key (:func:`_restart_key`) is read on the host, free on the CPU."""
    key = int(_restart_key(rng_state))
    num_stored, num_codes, dim = codebooks.shape
    per_group = num_stored // groups  # stored codebooks of a group
    group_levels = codes.shape[1] // groups  # its levels (a shared codebook: one stored, every level's codes read)
    width = x.shape[1] // groups
    cands = torch.empty(num_stored, num_codes, dim, dtype=torch.float32)
    took_part = [
        cpu_kernels.dead_code_candidates(
            x[:, g * width : (g + 1) * width], codebooks[g * per_group : (g + 1) * per_group],
            codes[:, g * group_levels : (g + 1) * group_levels], num_active, shared, key, _DEAD_STREAM + 4096 * g,
            cands[g * per_group : (g + 1) * per_group],
        )
        for g in range(groups)
    ]
    return cands, took_part[0] > 0  # the rows that took part are those of group 0's first level, as in the tensor version


@functools.lru_cache(maxsize=16)
def _step_increment(device: torch.device) -> torch.Tensor:
    return torch.tensor([0, 1], dtype=torch.int64, device=device)


def advance_step_(rng_state: torch.Tensor) -> None:
    """``rng_state[1] += 1`` in one op (an indexed ``+=`` is three: a view, the add and a copy back)."""
    rng_state.add_(_step_increment(rng_state.device))


def _as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _host_reads_are_free(t: torch.Tensor) -> bool:
    """Whether reading a value of ``t`` on the host costs no device sync and no graph break (CPU, eager)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _may_have_dead_codes(cluster_size, counts, level_sizes, shared: bool, decay: float, threshold: float) -> bool:
    """False when no code can fall below ``threshold`` in this step's update, so the restart (its candidates, ~50
    small ops a level) can be skipped: the cluster sizes the update will compute, ``cs·decay + counts·(1 − decay)``,
    predicted with a relative margin of 1e-4 that covers the rounding of the update's own arithmetic. Codes beyond
    a level's size never count. Only where host reads are free (:func:`_host_reads_are_free`): the skipped
    candidates are counter-based random draws, so skipping them changes no other draw."""
    num_stored, num_codes = cluster_size.shape
    step_counts = counts.to(cluster_size.dtype)
    if shared:
        step_counts = step_counts.sum(dim=0, keepdim=True)
    predicted = cluster_size * decay + step_counts * (1.0 - decay)
    low = predicted < threshold * (1.0 + 1e-4)
    sizes = level_sizes[:num_stored]
    if any(k != num_codes for k in sizes):
        low &= torch.arange(num_codes) < torch.tensor(sizes)[:, None]
    return bool(low.any())


def _levels_kept(ok, level_active, device: torch.device):
    """Which stored levels take this step's update: True / False / a list of S bools when the host knows (ok a
    Python bool and level_active a list), else a bool tensor [S]."""
    if isinstance(ok, bool) and isinstance(level_active, list):
        if not ok:
            return False
        return True if all(level_active) else list(level_active)
    return torch.as_tensor(ok, device=device) & torch.as_tensor(level_active, device=device)


def _select(keep_new, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``keep_new`` else ``old``: keep_new is a Python bool (decided on the host, no tensor op) or a
    bool tensor broadcast from the left over new's trailing dimensions (decided on the device, no host sync)."""
    if keep_new is True:
        return new
    if keep_new is False:
        return old
    return torch.where(keep_new.reshape(keep_new.shape + (1,) * (new.dim() - keep_new.dim())), new, old)


def codebook_update_(
    codebooks: torch.Tensor,
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    rng_state: torch.Tensor,
    x: torch.Tensor,
    codes: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    finite: bool | torch.Tensor,
    num_active: int,
    level_sizes: list[int],
    decay: float,
    eps: float,
    dead_code_threshold: float,
    ema: bool,
    sync: bool,
    groups: int = 1,
) -> None:
    """One training step's state update, in place; all-or-nothing, no host sync.

    Args:
        codebooks ``[S, K, D]``, cluster_size ``[S, K]``, embed_sum ``[S, K, D]`` (empty when ``ema`` is False),
        rng_state ``[2]``: the state (codebooks may be an empty placeholder when neither ``ema`` nor restarts
        need it: a learned codebook is then left to its optimizer). x ``[N, D]`` and codes ``[N, L]``: this batch
        (codes −1 where a level is skipped). counts ``[L, K]``, sums ``[L, K, D]``: per-level statistics from
        :func:`fastrq.ops.training.quantize_for_training`. finite: False (a Python bool or a 0-d bool tensor)
        skips the update (the statistics would be NaN).

    With ``ema``, every active level l gets ``ema_step`` on its own statistics, all levels in one batched step (a
    shared codebook, S = 1: the statistics of all levels summed, the decay applied once). Without ``ema``
    (codebook learned by gradient) only ``cluster_size`` follows the EMA of the counts (for restarts and
    statistics). Then, with ``dead_code_threshold > 0``, every code whose cluster size is below the threshold is
    replaced by a residual of a random row of this batch at its level, with ``cluster_size = threshold`` and
    ``embed_sum = code · threshold`` (a stale embed_sum would undo the replacement at the next step).

    Under ``sync`` one ``all_reduce`` carries counts, sums, replacement candidates and the per-rank flags, so
    every rank computes the same new state (and skips together when any rank saw non-finite input).

    ``groups`` > 1 (grouped RVQ): x ``[N, G·d]`` is G slices of d columns, each quantized by its own L levels;
    the stored codebooks, statistics and codes list the levels group after group (``S = G·L``), and one update
    (one all-reduce) covers every group.
    """
    num_levels = len(level_sizes)
    per_group = num_levels // groups
    level_active = [level % per_group < num_active for level in range(num_levels)]
    num_stored, num_codes = cluster_size.shape
    shared = num_stored == 1 and num_levels > 1
    restart = dead_code_threshold > 0
    dtype = cluster_size.dtype
    cands = None
    # the restart in two native calls (candidates, then the replacement): cheap enough to run at every step
    native_restart = restart and _native_restart_available(x, codebooks, codes, cluster_size)
    if restart and not sync and not native_restart and _host_reads_are_free(cluster_size):
        restart = _may_have_dead_codes(cluster_size, counts, level_sizes, shared, decay, dead_code_threshold)
    if restart and native_restart:
        cands, has_rows = _native_candidates(x, codebooks.detach(), codes, rng_state, num_active, shared, groups)
    elif restart:
        key = _restart_key(rng_state)
        width = x.shape[1] // groups
        parts = [
            _dead_code_candidates(
                x[:, g * width : (g + 1) * width].to(dtype), codebooks.detach()[g * per_group : (g + 1) * per_group],
                codes[:, g * per_group : (g + 1) * per_group], num_active, key, shared, stream=4096 * g,
            )
            for g in range(groups)
        ]
        cands = parts[0][0] if groups == 1 else torch.cat([c for c, _ in parts])
        has_rows = parts[0][1]
    if sync:
        g_counts, g_sums, cands, cand_exists, ok, level_active = _all_reduce_statistics(
            counts, sums, cands, finite, level_active, has_rows if restart else None, ema, dtype
        )
    else:
        g_counts, g_sums, ok = _as_dtype(counts, dtype), _as_dtype(sums, dtype) if ema else None, finite
        cand_exists = has_rows if restart else True
    if shared:
        g_counts = g_counts.sum(dim=0, keepdim=True)
        if ema:
            g_sums = g_sums.sum(dim=0, keepdim=True)
        stored_active = ok  # level 0 always runs, so the shared codebook always has data
    else:
        stored_active = _levels_kept(ok, level_active, cluster_size.device)
    if stored_active is False:  # nothing to learn from this batch (non-finite input)
        advance_step_(rng_state)
        return

    sizes = level_sizes[:num_stored]
    uniform = all(k == num_codes for k in sizes)
    in_place = ema and not isinstance(stored_active, torch.Tensor) and cpu_kernels.can_update(codebooks, cluster_size, embed_sum)
    if isinstance(stored_active, list) and not in_place:  # the tensor-op path selects on the device: one tensor
        stored_active = torch.tensor(stored_active, device=cluster_size.device)
    if in_place:  # the native EMA step, in place (the host knows which levels update)
        active_mask = [stored_active] * num_stored if isinstance(stored_active, bool) else stored_active
        cpu_kernels.ema_update_(codebooks.detach(), cluster_size, embed_sum, g_counts, g_sums, sizes, active_mask, decay, eps)
        new_cb, new_cs, new_es = codebooks.detach(), cluster_size, embed_sum
        if restart and native_restart and isinstance(cand_exists, bool):  # and the native restart, in place
            if cand_exists:
                cpu_kernels.restart_dead_(codebooks.detach(), cluster_size, embed_sum, cands, sizes, active_mask,
                                          dead_code_threshold)
            advance_step_(rng_state)
            return
    elif ema:
        num_codes_per = num_codes if uniform else torch.tensor(sizes, dtype=dtype, device=cluster_size.device)[:, None]
        old_cb = codebooks.detach()
        cs, es, cb = ops.ema_step(
            old_cb, cluster_size, embed_sum, g_counts, g_sums, decay=decay, eps=eps, num_codes=num_codes_per
        )
        new_es = _select(stored_active, es, embed_sum)
        new_cb = _select(stored_active, cb, old_cb)
        new_cs = _select(stored_active, cs, cluster_size)
    else:
        new_cb = codebooks.detach()
        new_cs = _select(stored_active, cluster_size * decay + g_counts * (1.0 - decay), cluster_size)
    if restart:
        dead = new_cs < dead_code_threshold
        if not uniform:
            dead &= torch.arange(num_codes, device=dead.device) < torch.tensor(sizes, device=dead.device)[:, None]
        if stored_active is not True:
            dead &= torch.as_tensor(stored_active, device=dead.device).reshape(-1, 1)
        if cand_exists is not True:
            dead &= torch.as_tensor(cand_exists, device=dead.device)
        new_cb = torch.where(dead[..., None], cands, new_cb)
        new_cs = torch.where(dead, torch.full_like(new_cs, dead_code_threshold), new_cs)
        if ema:
            new_es = torch.where(dead[..., None], cands * dead_code_threshold, new_es)
    if in_place and not restart:  # the native step wrote everything already
        advance_step_(rng_state)
        return
    with torch.no_grad():
        if (ema or restart) and new_cb is not codebooks.detach() and new_cb.data_ptr() != codebooks.data_ptr():
            codebooks.copy_(new_cb)
        if new_cs is not cluster_size:
            cluster_size.copy_(new_cs)
        if ema and new_es is not embed_sum:
            embed_sum.copy_(new_es)
        advance_step_(rng_state)


def _all_reduce_statistics(counts, sums, cands, finite, level_active, has_rows, ema, dtype):
    """One all_reduce of this rank's counts, sums (EMA), replacement candidates (restarts, each with a trailing
    "exists" channel) and flags. Returns the global (counts, sums, candidates, candidate-exists, ok, level_active),
    the last three as device tensors (every rank reads the same values without a host sync)."""
    rank, world = rank_and_world(True)
    device = counts.device
    ok_local = torch.as_tensor(finite, device=device).reshape(1).to(dtype)
    num_levels = len(level_active)
    level_active = torch.tensor(level_active, dtype=dtype, device=device)
    parts = [counts.to(dtype).reshape(-1)]
    if ema:
        parts.append(sums.to(dtype).reshape(-1))
    if cands is not None:
        exists = torch.as_tensor(has_rows, device=device).to(dtype).expand(*cands.shape[:-1], 1)
        parts.append(_rank_candidates(torch.cat([cands, exists], dim=-1), rank, world).reshape(-1))
    stats = torch.cat(parts)
    stats = torch.where(ok_local.bool(), stats, torch.zeros_like(stats))  # NaN must not reach other ranks
    flat = all_reduce_sum_(torch.cat([stats, level_active, ok_local]), True)
    ok = flat[-1] == world
    level_active = flat[-1 - num_levels : -1] > 0
    num_codes = counts.shape[1]
    offset = num_levels * num_codes
    g_counts = flat[:offset].view(num_levels, num_codes)
    g_sums = g_cands = cand_exists = None
    if ema:
        g_sums = flat[offset : offset + sums.numel()].view(sums.shape)
        offset += sums.numel()
    if cands is not None:
        dim = cands.shape[-1]
        g_cands = flat[offset : offset + cands.numel() // dim * (dim + 1)].view(*cands.shape[:-1], dim + 1)
        cand_exists = g_cands[..., dim] > 0
        g_cands = g_cands[..., :dim]
    return g_counts, g_sums, g_cands, cand_exists, ok, level_active
