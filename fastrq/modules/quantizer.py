"""Drop-in VQ / RVQ layers: ``quantized, codes, loss = rq(x)``.

Layering: this module validates input and holds state; the work is done by the ops layer (:mod:`fastrq.ops`:
the training pass, search, k-means init, codebook update, dropout levels), reached through the straight-through
autograd Function (:mod:`fastrq.autograd`) and, under ``torch.compile``, through the registered ``fastrq::*`` ops
(:mod:`fastrq.library`). The forward never builds an N×K matrix, computes the codebook math in float32 with
autocast off, and has no host sync on a GPU except the non-finite check of ``on_nonfinite="raise"`` (which must
know before changing state); ``"skip"`` decides on the device.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Sequence

import torch
from torch import nn

from .. import library, ops
from ..autograd import ResidualStraightThrough
from ..errors import InvalidArgumentError, ShapeError, StateDictError
from ..ops import codebook_state, distributed, levels, recycled, search, training
from ..ops import validation as check
from ..ops.codebook_state import DEAD_STATS_FLOOR

__all__ = ["ResidualQuantizer", "VectorQuantizer", "VQP_ARGUMENT_HINTS"]

# vector-quantize-pytorch keyword → what to use here (raised as an error that names the fastrq equivalent)
VQP_ARGUMENT_HINTS = {
    "threshold_ema_dead_code": "dead_code_threshold=",
    "channel_last": "channel_first= (the opposite flag: channel_last=False is channel_first=True)",
    "accept_image_fmap": "channel_first=True (x of shape [B, C, H, W])",
    "accept_3d_fmap": "channel_first=True (x of shape [B, C, D, H, W])",
    "sync_codebook": "sync_distributed= ('auto', True or False)",
    "sync_kmeans": "sync_distributed= (k-means init is synchronised with the rest of the state)",
    "ema_update": "ema= (ema=False learns the codebook by gradient), or freeze_codebook=True to stop all updates",
    "learnable_codebook": "ema=False",
    "heads": "fastrq.GroupedResidualQuantizer(groups=...) for separate codebooks per head, or a VectorQuantizer on "
             "x.unflatten(-1, (heads, dim // heads)) for one shared codebook",
    "separate_codebook_per_head": "fastrq.GroupedResidualQuantizer (one codebook per group)",
    "stochastic_sample_codes": "nothing: fastrq searches the nearest code deterministically",
    "sample_codebook_temp": "nothing: fastrq searches the nearest code deterministically",
    "orthogonal_reg_weight": "nothing: no orthogonal regulariser (add one to your loss on rq.codebook)",
    "commitment_use_cross_entropy_loss": "nothing: the commitment loss is the squared error",
    "straight_through": "nothing: VQP's straight_through is the Gumbel estimator of stochastic sampling; fastrq "
                        "searches the nearest code (its default gradient estimator is straight-through)",
    "in_place_codebook_optimizer": "ema=False with your own optimizer on rq.codebook",
    "affine_param": "nothing: no affine reparameterisation",
    "implicit_neural_codebook": "nothing: no implicit neural codebook",
    "directional_reparam": "nothing: use rotation_trick=True",
    "codebook_diversity_loss_weight": "nothing: no diversity loss",
    "quantize_dropout_cutoff_index": None,  # same name here
}


def _reject_unknown_arguments(cls_name: str, unknown: dict) -> None:
    if not unknown:
        return
    name = next(iter(unknown))
    hint = VQP_ARGUMENT_HINTS.get(name)
    if hint:
        raise InvalidArgumentError(
            f"{cls_name} has no argument {name!r} (a vector-quantize-pytorch name); the fastrq equivalent: {hint}. "
            "See docs/migrating-from-vector-quantize-pytorch.md"
        )
    raise TypeError(f"{cls_name}.__init__() got an unexpected keyword argument {name!r}")


def _autocast_off(x):
    """A context in which autocast is off for x's device when it is on (codebook math runs in float32), else a
    no-op (entering an autocast context costs more than checking)."""
    on = isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type)
    return torch.autocast(device_type=x.device.type, enabled=False) if on else contextlib.nullcontext()


class ResidualQuantizer(nn.Module):
    """Residual vector quantizer with EMA or gradient-learned codebooks.

    ``quantized, codes, loss = rq(x)`` (``rq(x, return_stats=True)`` adds a fourth output, a dict of statistics).

    Args:
        dim: vector dimension D of x.
        codebook_size: K, or a list of K_l, one per level (storage is padded to max K_l; level l never picks a
            padded row).
        num_quantizers: number of levels L.
        ema: True: codebooks follow the EMA of the per-code means (``fastrq.ops.ema_step`` formula, decay
            ``decay``, Laplace smoothing ``eps``), stored as buffers. False: the codebook is an ``nn.Parameter``
            learned by gradient through the codebook loss.
        decay, eps: the EMA's decay (0.99; vector-quantize-pytorch uses 0.8) and smoothing.
        commitment_weight: β of the commitment loss ``β Σ_l mean((r_l − sg(q_l))²)`` (0.25, the VQ-VAE value;
            vector-quantize-pytorch uses 1.0).
        kmeans_init: initialise the codebooks by k-means (k-means++ seeds, then ``kmeans_iters`` Lloyd iterations)
            on the first training batch, level after level on that level's residuals. Otherwise codebooks start
            uniform in ±√(3/D) (unit expected squared norm per code) with ``cluster_size = 1``,
            ``embed_sum = codebook``.
        dead_code_threshold: codes whose EMA cluster size falls below this are restarted from random residuals of
            the current batch at their level (0: never, the VQ-VAE default; the reference models use 4, and the
            README's codebook-health section measures what it does).
        shared_codebook: one codebook for all levels (statistics of all levels accumulated, decay applied once).
        quantize_dropout: in training, a random number of leading levels runs (uniform in
            ``[quantize_dropout_cutoff_index + 1, L]``, rounded up to a multiple of ``quantize_dropout_multiple_of``),
            with probability ``quantize_dropout_prob``, per batch or, with ``quantize_dropout_per_sample``, per sample
            (index of x's first dimension, as DAC does). Skipped levels get code −1, no loss and no update, so any
            prefix decodes.
        beam_size: >1 enables beam search over code paths (train and eval, any batch size; never worse than greedy).
        channel_first: x is ``[B, D, *spatial]`` instead of ``[..., D]`` (codes ``[B, *spatial, L]``).
        rotation_trick: the rotation-trick gradient estimator (Fifty et al. 2024) instead of straight-through, per
            level along the residual chain (:func:`fastrq.ops.training.rotate_onto`).
        use_cosine_sim: codes are unit vectors (renormalised after every EMA step, restart and k-means init; a
            learned codebook is normalised in the forward) and the commitment compares the level's normalised
            input with its code, as in vector-quantize-pytorch. The search is then exactly a cosine search.
        codebook_dim: learned projections ``D → d`` before the quantizer and ``d → D`` after (``nn.Linear``); the
            search, the codebooks and the loss work at d (DAC uses d = 8).
        freeze_codebook: a training step changes no state at all (no EMA, no restart, no k-means init, no
            collective); the commitment loss still trains the encoder.
        loss_per_level: return the loss per level ``[L]`` (as vector-quantize-pytorch does) instead of its sum.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"reference"`` (see :mod:`fastrq.ops.backends`).
        sync_distributed: ``"auto"`` (sync when torch.distributed is initialised with world size > 1, decided at
            every step), True or False. One all-reduce per training step; none in eval or under ``no_grad``.
        on_nonfinite: ``"raise"`` (:class:`fastrq.NonFiniteError` before any state change) or ``"skip"`` (the state
            update of that batch is skipped, with a warning where the host can tell for free).

    State (all in ``state_dict``): ``codebook`` ``[S, K, d]`` (S = 1 shared, else L), ``cluster_size`` ``[S, K]``,
    ``embed_sum`` ``[S, K, d]`` (EMA only), ``initted`` (bool), ``rng_state`` ``[2]`` int64 (seed, step of the
    counter-based random choices: identical on every rank that was constructed with the same torch seed), and the
    projections ``project_in`` / ``project_out`` with ``codebook_dim``.

    State changes (k-means init, EMA, usage tracking, dead-code restarts) happen only in training mode with autograd
    enabled; eval and ``no_grad`` forwards change nothing and run no collective.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int | Sequence[int],
        num_quantizers: int = 1,
        *,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_weight: float = 0.25,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        shared_codebook: bool = False,
        quantize_dropout: bool = False,
        quantize_dropout_prob: float = 1.0,
        quantize_dropout_per_sample: bool = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        beam_size: int = 1,
        channel_first: bool = False,
        rotation_trick: bool = False,
        use_cosine_sim: bool = False,
        codebook_dim: int | None = None,
        freeze_codebook: bool = False,
        loss_per_level: bool = False,
        backend: str = "auto",
        sync_distributed: str | bool = "auto",
        on_nonfinite: str = "raise",
        **unknown,
    ):
        _reject_unknown_arguments(type(self).__name__, unknown)
        super().__init__()
        if int(dim) < 1:
            raise InvalidArgumentError(f"dim must be ≥ 1, got {dim}")
        if int(num_quantizers) < 1:
            raise InvalidArgumentError(f"num_quantizers must be ≥ 1, got {num_quantizers}")
        sizes = [int(codebook_size)] * num_quantizers if isinstance(codebook_size, int) else [int(k) for k in codebook_size]
        if len(sizes) != num_quantizers:
            raise InvalidArgumentError(f"codebook_size lists {len(sizes)} sizes for {num_quantizers} levels")
        if min(sizes) < 1:
            raise InvalidArgumentError(f"every codebook size must be ≥ 1, got {sizes}")
        if shared_codebook and len(set(sizes)) > 1:
            raise InvalidArgumentError("a shared codebook needs one codebook_size for all levels")
        if not 0.0 <= float(decay) <= 1.0:
            raise InvalidArgumentError(f"decay must be in [0, 1], got {decay}")
        if not float(eps) > 0.0:
            raise InvalidArgumentError(f"eps must be > 0, got {eps}")
        if float(commitment_weight) < 0.0:
            raise InvalidArgumentError(f"commitment_weight must be ≥ 0, got {commitment_weight}")
        if float(dead_code_threshold) < 0.0:
            raise InvalidArgumentError(f"dead_code_threshold must be ≥ 0, got {dead_code_threshold}")
        if int(beam_size) < 1:
            raise InvalidArgumentError(f"beam_size must be ≥ 1, got {beam_size}")
        if int(kmeans_iters) < 0:
            raise InvalidArgumentError(f"kmeans_iters must be ≥ 0, got {kmeans_iters}")
        if not 0.0 <= float(quantize_dropout_prob) <= 1.0:
            raise InvalidArgumentError(f"quantize_dropout_prob must be in [0, 1], got {quantize_dropout_prob}")
        if not 0 <= int(quantize_dropout_cutoff_index) < num_quantizers:
            raise InvalidArgumentError(
                f"quantize_dropout_cutoff_index must be in [0, {num_quantizers - 1}] (levels below it are never "
                f"dropped), got {quantize_dropout_cutoff_index}"
            )
        if int(quantize_dropout_multiple_of) < 1:
            raise InvalidArgumentError(f"quantize_dropout_multiple_of must be ≥ 1, got {quantize_dropout_multiple_of}")
        if codebook_dim is not None and int(codebook_dim) < 1:
            raise InvalidArgumentError(f"codebook_dim must be ≥ 1 or None, got {codebook_dim}")
        if on_nonfinite not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if sync_distributed not in ("auto", True, False):
            raise InvalidArgumentError(f"sync_distributed must be 'auto', True or False, got {sync_distributed!r}")
        self.dim = int(dim)
        self.codebook_dim = self.dim if codebook_dim is None else int(codebook_dim)
        self.num_quantizers = int(num_quantizers)
        self.level_sizes = sizes
        self.codebook_size = max(sizes)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.eps = float(eps)
        self.commitment_weight = float(commitment_weight)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iters = int(kmeans_iters)
        self.dead_code_threshold = float(dead_code_threshold)
        self.shared_codebook = bool(shared_codebook)
        self.quantize_dropout = bool(quantize_dropout)
        self.dropout = levels.DropoutSettings(
            self.quantize_dropout, float(quantize_dropout_prob), bool(quantize_dropout_per_sample),
            int(quantize_dropout_cutoff_index), int(quantize_dropout_multiple_of),
        )
        self.beam_size = int(beam_size)
        self.channel_first = bool(channel_first)
        self.rotation_trick = bool(rotation_trick)
        self.use_cosine_sim = bool(use_cosine_sim)
        self.freeze_codebook = bool(freeze_codebook)
        self.loss_per_level = bool(loss_per_level)
        self.backend = backend
        self.sync_distributed = sync_distributed
        self.on_nonfinite = on_nonfinite

        if codebook_dim is not None:
            self.project_in = nn.Linear(self.dim, self.codebook_dim)
            self.project_out = nn.Linear(self.codebook_dim, self.dim)
        else:
            self.project_in = self.project_out = None
        stored = 1 if self.shared_codebook else self.num_quantizers
        width = self.codebook_dim
        bound = (3.0 / width) ** 0.5
        init = torch.empty(stored, self.codebook_size, width).uniform_(-bound, bound)
        cluster_size = torch.zeros(stored, self.codebook_size)
        for s in range(stored):
            init[s, sizes[s]:] = 0.0  # padding rows are never chosen
            cluster_size[s, : sizes[s]] = 1.0
        if self.use_cosine_sim:
            codebook_state.renormalize_(init, sizes)
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init * cluster_size[..., None])
        else:
            self.codebook = nn.Parameter(init)
            self.register_buffer("embed_sum", torch.zeros(0))
        self.register_buffer("cluster_size", cluster_size)
        self.register_buffer("initted", torch.tensor(not self.kmeans_init))
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.register_buffer("rng_state", torch.tensor([seed, 0], dtype=torch.long))
        self._initted_known = not self.kmeans_init  # Python-side cache: no sync to read `initted` every step
        self._warned_layout = False
        # the training step's large statistics buffers, reused step after step (they die in the step's own EMA
        # update): no page faults a step (fastrq.ops.recycled)
        self._workspace = recycled.Workspace()

    # ---------------------------------------------------------------- views of the state

    @property
    def codebooks(self) -> torch.Tensor:
        """``[L, K, d]`` (a view; for a shared codebook the same rows at every level; with ``use_cosine_sim`` and a
        learned codebook, normalised rows). Rows ≥ K_l of level l are padding and never chosen."""
        book = self.codebook
        if self.use_cosine_sim and not self.ema:
            # normalised from a copy: the graph must not hold the parameter itself, which a dead-code restart
            # changes in place after the forward
            book = book.clone()
            book = book / book.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return book.expand(self.num_quantizers, -1, -1)

    def extra_repr(self) -> str:
        options = [
            f"dim={self.dim}",
            f"codebook_size={self.level_sizes if len(set(self.level_sizes)) > 1 else self.codebook_size}",
            f"num_quantizers={self.num_quantizers}", f"ema={self.ema}", f"decay={self.decay}",
            f"shared_codebook={self.shared_codebook}", f"beam_size={self.beam_size}", f"backend={self.backend!r}",
        ]
        for name in ("rotation_trick", "use_cosine_sim", "freeze_codebook", "loss_per_level"):
            if getattr(self, name):
                options.append(f"{name}=True")
        if self.codebook_dim != self.dim:
            options.append(f"codebook_dim={self.codebook_dim}")
        return ", ".join(options)

    # ---------------------------------------------------------------- layout helpers

    def _to_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise check.DTypeError(f"x must be a floating-point tensor, got {got}")
        if self.channel_first:
            if x.dim() < 2 or x.shape[1] != self.dim:
                raise ShapeError(f"channel_first: x must be [B, {self.dim}, *spatial], got {tuple(x.shape)}")
            x = x.movedim(1, -1)
        elif x.dim() < 1 or x.shape[-1] != self.dim:
            hint = ""
            if x.dim() >= 3 and x.shape[1] == self.dim:
                hint = f"; it looks channel-first ([B, {self.dim}, ...]): pass channel_first=True"
            raise ShapeError(f"x must be [..., {self.dim}], got {tuple(x.shape)}{hint}")
        elif x.dim() >= 4 and x.shape[1] == self.dim and not self._warned_layout:
            self._warned_layout = True
            warnings.warn(
                f"fastrq: x of shape {tuple(x.shape)} is quantized along its last dimension; if it is a channel-first "
                f"feature map [B, {self.dim}, ...] pass channel_first=True",
                UserWarning,
                stacklevel=4,
            )
        return check.as_rows(x, self.codebook.dtype), tuple(x.shape[:-1])

    def _from_rows(self, rows: torch.Tensor, lead: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = rows if len(lead) == 1 else rows.reshape(*lead, self.dim)
        if out.dtype != dtype:
            out = out.to(dtype)
        return out.movedim(-1, 1) if self.channel_first else out

    def _row_mask(self, mask, lead: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
        """The padding mask as bool ``[N]`` (True = valid), checked against x's leading shape."""
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise check.DTypeError(f"mask must be a bool tensor (True = valid), got {got}")
        if tuple(mask.shape) != lead:
            raise ShapeError(
                f"mask must have x's leading shape {lead} (one flag per vector; channel_first: [B, *spatial]), "
                f"got {tuple(mask.shape)}"
            )
        return mask.reshape(-1).to(device)

    def _levels(self, n_quantizers) -> int:
        if n_quantizers is None:
            return self.num_quantizers
        if not 1 <= int(n_quantizers) <= self.num_quantizers:
            raise InvalidArgumentError(f"n_quantizers must be in [1, {self.num_quantizers}], got {n_quantizers}")
        return int(n_quantizers)

    def _updated_codebook(self) -> torch.Tensor:
        """What the update op may write: the EMA buffer; a learned codebook only for dead-code restarts (through
        a detached alias, outside autograd); else an empty placeholder, so that the parameter is not declared
        mutated (a compiled backward may read it)."""
        if self.ema:
            return self.codebook
        if self.dead_code_threshold > 0:
            return self.codebook.detach()
        return self.cluster_size.new_empty(0)

    def _search_codebooks(self) -> torch.Tensor:
        return self.codebooks.detach()

    # ---------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, n_quantizers: int | None = None,
                return_stats: bool = False):
        """x ``[..., D]`` (or ``[B, D, *spatial]`` with channel_first), any float dtype.

        Args:
            mask: bool, x's leading shape (channel_first: ``[B, *spatial]``), True = valid. Masked vectors take no
                part in the statistics, EMA, k-means, dead-code candidates, losses or the distributed sums; their
                output is x itself and their codes are −1 at every level.
            n_quantizers: use only the first n levels (codes −1 after them), in training and in eval.

        Returns ``quantized`` (x's shape and dtype; value = decoded codes; gradient straight through, or by the
        rotation trick), ``codes`` int64 ``[..., L]`` (−1 for skipped levels), ``loss`` (0-d float32, or ``[L]``
        with ``loss_per_level``), and with ``return_stats`` a dict of ``[L]`` float32 tensors: ``mse`` (mean
        squared residual after each level), ``usage`` (fraction of the level's codes used in this batch),
        ``perplexity`` (of the level's code distribution in this batch), ``dead_codes`` (codes whose EMA cluster
        size is below the restart threshold, or below 1 when no threshold is set). No host sync for the statistics.
        """
        with _autocast_off(x):
            return self._forward(x, mask, n_quantizers, return_stats)

    def _step_setup(self, x: torch.Tensor, mask):
        """What a forward decides before quantizing: the rows ``[N, D]`` and leading shape of x, the row mask,
        whether this is a training step, whether it updates the state (not frozen), whether it is being compiled,
        and whether it syncs across ranks."""
        rows, lead = self._to_rows(x)
        valid = self._row_mask(mask, lead, rows.device)
        training_step = self.training and torch.is_grad_enabled()
        update = training_step and not self.freeze_codebook
        compiling = torch.compiler.is_compiling()
        sync = distributed.should_sync(self.sync_distributed) if update else False
        return rows, lead, valid, training_step, update, compiling, sync

    def _forward(self, x: torch.Tensor, mask, n_quantizers, return_stats: bool):
        in_dtype = x.dtype
        rows, lead, valid, training_step, update, compiling, sync = self._step_setup(x, mask)
        z = rows if self.project_in is None else self.project_in(rows)
        if update and not self._initted_known:
            self._kmeans_init(z, valid, sync)
        active, row_levels = levels.draw_levels(
            self.dropout, self.num_quantizers, self._levels(n_quantizers), lead, training_step
        )
        row_levels = levels.apply_mask(row_levels, valid, self.num_quantizers, rows.device)
        num_valid = rows.shape[0] if valid is None else valid.sum()
        codes = None
        if self.beam_size > 1:
            codes = self._search(z.detach(), active)
        learn = not self.ema and training_step and not self.freeze_codebook
        # this step's statistics die in its own EMA update below: they may reuse the last step's memory
        scope = self._workspace.active() if update and not compiling else contextlib.nullcontext()
        done = None  # the training pass and the state update, when one native call ran both
        with scope:
            if self.rotation_trick or self.use_cosine_sim:
                if codes is None:
                    codes = self._search(z.detach(), active)
                codes = self._limit_codes(codes, row_levels)
                books = self.codebooks if learn else self.codebooks.detach()
                if compiling and not learn:  # the EMA step below changes the buffer in place; the backward needs these
                    books = torch.ops.fastrq.snapshot(books)
                quantized, loss, level_sqerr, counts, sums = training.differentiable_walk(
                    z, books, codes, num_valid,
                    commitment_weight=self.commitment_weight, learn_codebook=learn, rotation_trick=self.rotation_trick,
                    cosine=self.use_cosine_sim, per_level_loss=self.loss_per_level,
                )
            else:
                if update and codes is None and not compiling:
                    done = self._fused_step(z, active, row_levels, sync)
                # codebooks [L, K, D] as they are where they hold one codebook a level: the expand of the
                # `codebooks` view is a dispatched op (~1-3 µs) that changes nothing there
                books = self.codebook if self.codebook.shape[0] == self.num_quantizers else self.codebooks
                quantized, loss, codes, level_sqerr, counts, sums = ResidualStraightThrough.apply(
                    z, books, codes, self.level_sizes, active, row_levels, num_valid, self.commitment_weight,
                    learn, self.loss_per_level, self.backend, done,
                )
            if update and done is None:
                self._update(z, codes, counts, sums, level_sqerr, active, sync, compiling)
        out = quantized if self.project_out is None else self.project_out(quantized)
        if valid is not None:
            out = torch.where(valid[:, None], out, rows)
        out = self._from_rows(out, lead, in_dtype)
        if len(lead) != 1:
            codes = codes.reshape(*lead, self.num_quantizers)
        if not return_stats:
            return out, codes, loss
        return out, codes, loss, self._stats(num_valid, level_sqerr, counts)

    def _limit_codes(self, codes: torch.Tensor, row_levels: torch.Tensor | None) -> torch.Tensor:
        if row_levels is None:
            return codes
        skipped = torch.arange(self.num_quantizers, device=codes.device)[None, :] >= row_levels[:, None]
        return codes.masked_fill(skipped, -1)

    def _fused_step(self, z: torch.Tensor, active, row_levels, sync: bool):
        """The training pass and this step's state update in one native call
        (:func:`fastrq.ops.training.quantize_and_update_`), for EMA codebooks of their own at every level without a
        distributed sync, where the backend runs it: its six forward outputs, else None (the caller then runs the
        pass and :meth:`_update`). A step skipped for non-finite input follows the non-finite policy."""
        if not self.ema or self.shared_codebook or sync or self.loss_per_level:
            return None
        done = training.quantize_and_update_(
            z, self.codebook, self.cluster_size, self.embed_sum, self.rng_state, self.level_sizes,
            library.num_active(active, self.num_quantizers), row_levels, self.backend,
            decay=self.decay, eps=self.eps, dead_code_threshold=self.dead_code_threshold,
        )
        if done is None:
            return None
        if not done[6]:
            self._report_nonfinite(z)  # raises under on_nonfinite="raise": the state is as it was
            codebook_state.advance_step_(self.rng_state)  # a skipped step counts, as in codebook_update_
        return done[:6]

    def _update(self, z, codes, counts, sums, level_sqerr, active, sync: bool, compiling: bool) -> None:
        """This step's state update (EMA, restarts), skipped for non-finite input by the policy."""
        finite = self._finite(level_sqerr, z, compiling)
        update_ = torch.ops.fastrq.codebook_update_ if compiling else codebook_state.codebook_update_
        active_arg = active if compiling else library.num_active(active, self.num_quantizers)
        update_(
            self._updated_codebook(),
            self.cluster_size, self.embed_sum, self.rng_state, z.detach(),
            codes if codes.dim() == 2 else codes.reshape(-1, self.num_quantizers),
            counts, sums, finite, active_arg, self.level_sizes, self.decay, self.eps, self.dead_code_threshold,
            self.ema, sync,
        )
        if self.use_cosine_sim and self.ema:
            codebook_state.renormalize_(self.codebook, self.level_sizes)

    def _kmeans_init(self, rows: torch.Tensor, valid: torch.Tensor | None, sync: bool) -> None:
        compiling = torch.compiler.is_compiling()
        if not compiling and bool(self.initted):  # e.g. a loaded state: nothing to do
            self._initted_known = True
            return
        finite = torch.ops.fastrq.check_finite(rows.detach(), self.on_nonfinite)
        torch.ops.fastrq.kmeans_init_(
            self.codebook if self.ema else self.codebook.detach(),
            self.cluster_size, self.embed_sum, self.initted, self.rng_state, rows.detach(), valid, finite,
            self.level_sizes, self.kmeans_iters, sync, self.backend,
        )
        # one read (a sync) per step until the init has happened; a compiled graph cannot read it and
        # assumes success (under torch.compile an init skipped for non-finite input is not retried)
        self._initted_known = True if compiling else bool(self.initted)
        if self.use_cosine_sim and self._initted_known:  # the k-means centroids onto the unit sphere
            codebook_state.renormalize_(self.codebook.detach() if not self.ema else self.codebook, self.level_sizes)

    def _finite(self, level_sqerr: torch.Tensor, rows: torch.Tensor, compiling: bool):
        """Whether this batch may update the state: a Python bool where the host knows it for free (the CPU) or
        must know it (``on_nonfinite="raise"``), else a device flag (no host sync). Non-finite input shows as a
        non-finite level error (NaN and inf propagate through every residual)."""
        if compiling:
            return torch.ops.fastrq.check_finite(rows.detach(), self.on_nonfinite)
        if rows.device.type == "cpu":  # [L] values read on the host: cheaper than a tensor reduction and a read
            if all(map(math.isfinite, level_sqerr.tolist())):
                return True
        else:
            finite = torch.isfinite(level_sqerr).all()
            if self.on_nonfinite != "raise":
                return finite
            if bool(finite):
                return True
        self._report_nonfinite(rows)
        return False

    def _report_nonfinite(self, rows: torch.Tensor) -> None:
        """Raise or warn (``on_nonfinite``) about a batch whose squared residuals are not finite, naming the cause."""
        if bool(torch.isfinite(rows).all()):
            library.raise_or_warn_nonfinite(
                self.on_nonfinite, "the squared residuals of the quantizer input overflowed to infinity"
            )
        else:
            library.raise_or_warn_nonfinite(self.on_nonfinite)

    def _search(self, rows: torch.Tensor, active) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return torch.ops.fastrq.search_codes(
                rows, self._search_codebooks(), self.level_sizes, active, self.beam_size, self.backend
            )
        num = library.num_active(active, self.num_quantizers)
        return search.search_codes(rows, self._search_codebooks(), self.level_sizes, num, self.beam_size, self.backend)

    def _stats(self, num_valid, level_sqerr: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """mse, usage, perplexity and dead codes per level ``[L]`` (``forward``'s docstring; the trainer asks for
        them at every step): :func:`fastrq.ops.training.level_statistics`."""
        threshold = self.dead_code_threshold if self.dead_code_threshold > 0 else DEAD_STATS_FLOOR
        return training.level_statistics(
            level_sqerr, counts, self.cluster_size, self.level_sizes, num_valid, self.codebook_dim, threshold
        )

    # ---------------------------------------------------------------- encode / decode

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, n_quantizers: int | None = None) -> torch.Tensor:
        """Codes int64 ``[..., L]`` (channel_first: ``[B, *spatial, L]``) of x; changes no state. ``mask``: masked
        vectors get −1 at every level; ``n_quantizers``: −1 after the first n levels."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            rows, lead = self._to_rows(x)
            valid = self._row_mask(mask, lead, rows.device)
            top = self._levels(n_quantizers)
            z = rows if self.project_in is None else self.project_in(rows)
            codes = self._search(z, None if top == self.num_quantizers else torch.tensor(top))
            if valid is not None:
                codes = codes.masked_fill(~valid[:, None], -1)
        return codes.reshape(*lead, self.num_quantizers)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if isinstance(codes, torch.Tensor) and codes.dim() >= 1 and len(set(self.level_sizes)) > 1:
            for level in range(min(codes.shape[-1], self.num_quantizers)):
                check.check_codes(codes[..., level], self.level_sizes[level], allow_skip=True, name=f"codes of level {level}")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``Σ_l C_l[c_l]`` over a prefix of levels ``[..., L']`` (L' ≤ L; −1 = skipped) → ``[..., D]`` float32
        (channel_first: ``[B, D, *spatial]``; with ``codebook_dim`` projected back to D). Codes outside a level's
        own size raise :class:`CodeRangeError`."""
        self._check_codes(codes)
        out = ops.residual_decode(codes, self.codebooks, backend=self.backend)
        if self.project_out is not None:
            out = self.project_out(out)
        return out.movedim(-1, 1) if self.channel_first else out

    def get_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The per-level code vectors ``[..., L', d]`` of codes ``[..., L']`` (zeros where a code is −1), in the
        codebook space (before ``project_out``); their sum over levels is what :meth:`decode` projects."""
        self._check_codes(codes)
        check.check_codes(codes, self.codebook_size, allow_skip=True)
        if codes.shape[-1] > self.num_quantizers:
            raise ShapeError(f"codes have {codes.shape[-1]} levels but the quantizer has {self.num_quantizers}")
        books = self.codebooks[: codes.shape[-1]]
        safe = codes.clamp(min=0)
        level_index = torch.arange(codes.shape[-1], device=codes.device).expand_as(codes)
        return books[level_index, safe] * (codes >= 0)[..., None]

    # ---------------------------------------------------------------- interop

    @classmethod
    def from_vector_quantize_pytorch(cls, module, **overrides):
        """A quantizer with the state and options of a vector-quantize-pytorch ``ResidualVQ`` (EMA codebooks);
        see :mod:`fastrq.interop.vector_quantize_pytorch`, which says what cannot be carried over."""
        from ..interop import vector_quantize_pytorch

        return vector_quantize_pytorch.residual_quantizer_from(cls, module, **overrides)

    # ---------------------------------------------------------------- state dict

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_workspace" not in self.__dict__:  # a module pickled by a fastrq without the step workspace
            self._workspace = recycled.Workspace()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        own = dict(self.named_parameters(recurse=False))
        own.update(self.named_buffers(recurse=False))
        for name, tensor in own.items():
            key = prefix + name
            if key in state_dict and tuple(state_dict[key].shape) != tuple(tensor.shape):
                raise StateDictError(
                    f"{key}: the state has shape {tuple(state_dict[key].shape)} but this {type(self).__name__} "
                    f"({self.extra_repr()}) needs {tuple(tensor.shape)}; nothing was loaded"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._initted_known = False  # read `initted` again at the next training step


class VectorQuantizer(ResidualQuantizer):
    """One-level quantizer: ``quantized, codes, loss = vq(x)`` with codes int64 ``[...]`` (not ``[..., 1]``).

    Same options as :class:`ResidualQuantizer` except ``num_quantizers`` / ``shared_codebook`` / the quantizer
    dropout options (meaningless for one level) and ``beam_size`` (greedy is exact for one level).
    Statistics are 0-d tensors; ``codebook`` is ``[1, K, D]`` (vector-quantize-pytorch's ``codebook`` is
    ``[K, D]``: use ``vq.codebook[0]``), ``codebooks`` ``[1, K, D]``.
    """

    def __init__(self, dim: int, codebook_size: int, **kwargs):
        for name in ("num_quantizers", "shared_codebook", "quantize_dropout", "beam_size", "quantize_dropout_prob",
                     "quantize_dropout_per_sample", "quantize_dropout_cutoff_index", "quantize_dropout_multiple_of"):
            if name in kwargs:
                raise InvalidArgumentError(f"VectorQuantizer has one level; {name} is a ResidualQuantizer option")
        super().__init__(dim, codebook_size, 1, **kwargs)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, return_stats: bool = False):
        out = super().forward(x, mask=mask, return_stats=return_stats)
        codes = out[1].squeeze(-1)
        loss = out[2]
        if return_stats:
            return out[0], codes, loss, {k: v.squeeze(0) for k, v in out[3].items()}
        return out[0], codes, loss

    def encode(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().encode(x, mask=mask).squeeze(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise check.DTypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        return super().decode(codes.unsqueeze(-1))

    def get_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The code vectors ``[..., d]`` of codes ``[...]`` (zeros where a code is −1)."""
        if not isinstance(codes, torch.Tensor):
            raise check.DTypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        return super().get_codes(codes.unsqueeze(-1)).squeeze(-2)

    @classmethod
    def from_vector_quantize_pytorch(cls, module, **overrides):
        """A VectorQuantizer with the state and options of a vector-quantize-pytorch ``VectorQuantize`` (EMA);
        see :mod:`fastrq.interop.vector_quantize_pytorch`."""
        from ..interop import vector_quantize_pytorch

        return vector_quantize_pytorch.vector_quantizer_from(cls, module, **overrides)
