"""Drop-in VQ / RVQ layers: ``quantized, codes, loss = rq(x)``.

Layering: this module validates input and holds state; the work is done by the ops layer (:mod:`fastrq.ops`:
the training pass, search, k-means init, codebook update), reached through the straight-through autograd Function
(:mod:`fastrq.autograd`) and, under ``torch.compile``, through the registered ``fastrq::*`` ops
(:mod:`fastrq.library`). The forward never builds an N×K matrix, computes the codebook math in float32 with
autocast off, and has no host sync on a GPU except the non-finite check of ``on_nonfinite="raise"`` (which must
know before changing state); ``"skip"`` decides on the device.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

from .. import library, ops
from ..autograd import ResidualStraightThrough
from ..errors import InvalidArgumentError, ShapeError, StateDictError
from ..ops import codebook_state, distributed, search
from ..ops import validation as check
from ..ops.codebook_state import DEAD_STATS_FLOOR

__all__ = ["ResidualQuantizer", "VectorQuantizer"]


class ResidualQuantizer(nn.Module):
    """Residual vector quantizer with EMA or gradient-learned codebooks.

    ``quantized, codes, loss = rq(x)`` (``rq(x, return_stats=True)`` adds a fourth output, a dict of statistics).

    Args:
        dim: vector dimension D.
        codebook_size: K, or a list of K_l, one per level (storage is padded to max K_l; level l never picks a
            padded row).
        num_quantizers: number of levels L.
        ema: True: codebooks follow the EMA of the per-code means (``fastrq.ops.ema_step`` formula, decay
            ``decay``, Laplace smoothing ``eps``), stored as buffers. False: the codebook is an ``nn.Parameter``
            learned by gradient through the codebook loss.
        commitment_weight: β of the commitment loss ``β Σ_l mean((r_l − sg(q_l))²)``.
        kmeans_init: initialise the codebooks by k-means (``kmeans_iters`` Lloyd iterations) on the first training
            batch, level after level on that level's residuals. Otherwise codebooks start uniform in
            ±1/√D·√3 (the ``kaiming_uniform`` scale) with ``cluster_size = 1``, ``embed_sum = codebook``.
        dead_code_threshold: codes whose EMA cluster size falls below this are restarted from random residuals of
            the current batch at their level (0: never).
        shared_codebook: one codebook for all levels (statistics of all levels accumulated, decay applied once).
        quantize_dropout: in training, a random number (uniform in 1..L) of leading levels runs per batch; the
            trailing levels are skipped (codes −1, no loss, no update), so any prefix decodes.
        beam_size: >1 enables beam search over code paths (train and eval, any batch size; never worse than greedy).
        channel_first: x is ``[B, D, *spatial]`` instead of ``[..., D]`` (codes ``[B, *spatial, L]``).
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"reference"`` (see :mod:`fastrq.ops.backends`).
        sync_distributed: ``"auto"`` (sync when torch.distributed is initialised with world size > 1, decided at
            every step), True or False. One all-reduce per training step; none in eval or under ``no_grad``.
        on_nonfinite: ``"raise"`` (:class:`fastrq.NonFiniteError` before any state change) or ``"skip"`` (the state
            update of that batch is skipped, with a warning).

    State (all in ``state_dict``): ``codebook`` ``[S, K, D]`` (S = 1 shared, else L), ``cluster_size`` ``[S, K]``,
    ``embed_sum`` ``[S, K, D]`` (EMA only), ``initted`` (bool), ``rng_state`` ``[2]`` int64 (seed, step of the
    counter-based random choices: identical on every rank that was constructed with the same torch seed).

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
        beam_size: int = 1,
        channel_first: bool = False,
        backend: str = "auto",
        sync_distributed: str | bool = "auto",
        on_nonfinite: str = "raise",
    ):
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
        if on_nonfinite not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if sync_distributed not in ("auto", True, False):
            raise InvalidArgumentError(f"sync_distributed must be 'auto', True or False, got {sync_distributed!r}")
        self.dim = int(dim)
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
        self.beam_size = int(beam_size)
        self.channel_first = bool(channel_first)
        self.backend = backend
        self.sync_distributed = sync_distributed
        self.on_nonfinite = on_nonfinite

        stored = 1 if self.shared_codebook else self.num_quantizers
        bound = (3.0 / self.dim) ** 0.5
        init = torch.empty(stored, self.codebook_size, self.dim).uniform_(-bound, bound)
        cluster_size = torch.zeros(stored, self.codebook_size)
        for s in range(stored):
            init[s, sizes[s]:] = 0.0  # padding rows are never chosen
            cluster_size[s, : sizes[s]] = 1.0
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

    # ---------------------------------------------------------------- views of the state

    @property
    def codebooks(self) -> torch.Tensor:
        """``[L, K, D]`` (a view; for a shared codebook the same rows at every level). Rows ≥ K_l of level l are
        padding and never chosen."""
        return self.codebook.expand(self.num_quantizers, -1, -1)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.level_sizes if len(set(self.level_sizes)) > 1 else self.codebook_size}, "
            f"num_quantizers={self.num_quantizers}, ema={self.ema}, decay={self.decay}, "
            f"shared_codebook={self.shared_codebook}, beam_size={self.beam_size}, backend={self.backend!r}"
        )

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
            raise ShapeError(f"x must be [..., {self.dim}], got {tuple(x.shape)}")
        lead = tuple(x.shape[:-1])
        return x.reshape(-1, self.dim).to(self.codebook.dtype).contiguous(), lead

    def _from_rows(self, rows: torch.Tensor, lead: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = rows.reshape(*lead, self.dim).to(dtype)
        return out.movedim(-1, 1) if self.channel_first else out

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

    def forward(self, x: torch.Tensor, *, return_stats: bool = False):
        """x ``[..., D]`` (or ``[B, D, *spatial]`` with channel_first), any float dtype.

        Returns ``quantized`` (x's shape and dtype; value = decoded codes; gradient straight through),
        ``codes`` int64 ``[..., L]`` (−1 for levels skipped by quantizer dropout), ``loss`` (0-d float32), and
        with ``return_stats`` a dict of ``[L]`` float32 tensors: ``mse`` (mean squared residual after each level),
        ``usage`` (fraction of the level's codes used in this batch), ``perplexity`` (of the level's code
        distribution in this batch), ``dead_codes`` (codes whose EMA cluster size is below the restart threshold,
        or below 1 when no threshold is set). No host sync for the statistics.
        """
        autocast = torch.is_autocast_enabled(x.device.type) if isinstance(x, torch.Tensor) else False
        with torch.autocast(device_type=x.device.type, enabled=False) if autocast else contextlib.nullcontext():
            return self._forward(x, return_stats)

    def _forward(self, x: torch.Tensor, return_stats: bool):
        in_dtype = x.dtype
        rows, lead = self._to_rows(x)
        update = self.training and torch.is_grad_enabled()
        compiling = torch.compiler.is_compiling()
        sync = distributed.should_sync(self.sync_distributed) if update else False
        if update and not self._initted_known:
            self._kmeans_init(rows, sync)
        active = None
        if update and self.quantize_dropout and self.num_quantizers > 1:
            active = torch.randint(1, self.num_quantizers + 1, ())
        codes = None
        if self.beam_size > 1:
            codes = self._search(rows.detach(), active)
        learn = not self.ema and update
        quantized, loss, codes, level_sqerr, counts, sums = ResidualStraightThrough.apply(
            rows, self.codebooks, codes, self.level_sizes, active, None, rows.shape[0], self.commitment_weight,
            learn, False, self.backend,
        )
        if update:
            finite = self._finite(level_sqerr, rows, compiling)
            update_ = torch.ops.fastrq.codebook_update_ if compiling else codebook_state.codebook_update_
            if compiling:
                active_arg = active
            else:
                active_arg = library.num_active(active, self.num_quantizers)
            update_(
                self._updated_codebook(),
                self.cluster_size, self.embed_sum, self.rng_state, rows.detach(), codes, counts, sums, finite,
                active_arg, self.level_sizes, self.decay, self.eps, self.dead_code_threshold, self.ema, sync,
            )
        out = self._from_rows(quantized, lead, in_dtype)
        codes = codes.reshape(*lead, self.num_quantizers)
        if not return_stats:
            return out, codes, loss
        return out, codes, loss, self._stats(rows.shape[0], level_sqerr, counts)

    def _kmeans_init(self, rows: torch.Tensor, sync: bool) -> None:
        finite = torch.ops.fastrq.check_finite(rows.detach(), self.on_nonfinite)
        torch.ops.fastrq.kmeans_init_(
            self.codebook if self.ema else self.codebook.detach(),
            self.cluster_size, self.embed_sum, self.initted, self.rng_state, rows.detach(), finite,
            self.level_sizes, self.kmeans_iters, sync, self.backend,
        )
        # one read (a sync) per step until the init has happened; a compiled graph cannot read it and
        # assumes success (under torch.compile an init skipped for non-finite input is not retried)
        self._initted_known = True if torch.compiler.is_compiling() else bool(self.initted)

    def _finite(self, level_sqerr: torch.Tensor, rows: torch.Tensor, compiling: bool):
        """Whether this batch may update the state: a Python bool where the host knows it for free (the CPU) or
        must know it (``on_nonfinite="raise"``), else a device flag (no host sync). Non-finite input shows as a
        non-finite level error (NaN and inf propagate through every residual)."""
        if compiling:
            return torch.ops.fastrq.check_finite(rows.detach(), self.on_nonfinite)
        finite = torch.isfinite(level_sqerr).all()
        if rows.device.type != "cpu" and self.on_nonfinite != "raise":
            return finite
        if bool(finite):
            return True
        if bool(torch.isfinite(rows).all()):
            library.raise_or_warn_nonfinite(
                self.on_nonfinite, "the squared residuals of the quantizer input overflowed to infinity"
            )
        else:
            library.raise_or_warn_nonfinite(self.on_nonfinite)
        return False

    def _search(self, rows: torch.Tensor, active) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return torch.ops.fastrq.search_codes(
                rows, self._search_codebooks(), self.level_sizes, active, self.beam_size, self.backend
            )
        num = library.num_active(active, self.num_quantizers)
        return search.search_codes(rows, self._search_codebooks(), self.level_sizes, num, self.beam_size, self.backend)

    def _stats(self, n: int, level_sqerr: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = torch.tensor(self.level_sizes, dtype=counts.dtype, device=counts.device)
        probs = counts / max(n, 1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)
        threshold = self.dead_code_threshold if self.dead_code_threshold > 0 else DEAD_STATS_FLOOR
        valid = torch.arange(self.codebook_size, device=counts.device)[None, :] < sizes[:, None]
        dead = ((self.cluster_size.expand(self.num_quantizers, -1) < threshold) & valid).sum(-1)
        return {
            "mse": level_sqerr / max(n * self.dim, 1),
            "usage": (counts > 0).sum(-1).to(counts.dtype) / sizes,
            "perplexity": torch.exp(entropy),
            "dead_codes": dead.to(counts.dtype),
        }

    # ---------------------------------------------------------------- encode / decode

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes int64 ``[..., L]`` (channel_first: ``[B, *spatial, L]``) of x, all levels; changes no state."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            rows, lead = self._to_rows(x)
            codes = self._search(rows, None)
        return codes.reshape(*lead, self.num_quantizers)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``Σ_l C_l[c_l]`` over a prefix of levels ``[..., L']`` (L' ≤ L; −1 = skipped) → ``[..., D]`` float32
        (channel_first: ``[B, D, *spatial]``). Codes outside a level's own size raise :class:`CodeRangeError`."""
        if isinstance(codes, torch.Tensor) and codes.dim() >= 1 and len(set(self.level_sizes)) > 1:
            for level in range(min(codes.shape[-1], self.num_quantizers)):
                check.check_codes(codes[..., level], self.level_sizes[level], allow_skip=True, name=f"codes of level {level}")
        out = ops.residual_decode(codes, self.codebooks, backend=self.backend)
        return out.movedim(-1, 1) if self.channel_first else out

    # ---------------------------------------------------------------- state dict

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

    Same options as :class:`ResidualQuantizer` except ``num_quantizers`` / ``shared_codebook`` /
    ``quantize_dropout`` (meaningless for one level) and ``beam_size`` (greedy is exact for one level).
    Statistics are 0-d tensors; ``codebook`` is ``[1, K, D]``, ``codebooks`` ``[1, K, D]``.
    """

    def __init__(self, dim: int, codebook_size: int, **kwargs):
        for name in ("num_quantizers", "shared_codebook", "quantize_dropout", "beam_size"):
            if name in kwargs:
                raise InvalidArgumentError(f"VectorQuantizer has one level; {name} is a ResidualQuantizer option")
        super().__init__(dim, codebook_size, 1, **kwargs)

    def forward(self, x: torch.Tensor, *, return_stats: bool = False):
        out = super().forward(x, return_stats=return_stats)
        codes = out[1].squeeze(-1)
        if return_stats:
            return out[0], codes, out[2], {k: v.squeeze(0) for k, v in out[3].items()}
        return out[0], codes, out[2]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return super().encode(x).squeeze(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise check.DTypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        return super().decode(codes.unsqueeze(-1))
