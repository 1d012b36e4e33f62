"""Grouped residual quantization: ``GroupedResidualQuantizer`` (vector-quantize-pytorch's ``GroupedResidualVQ``,
HiFi-Codec style)."""

from __future__ import annotations

from typing import Sequence

import torch

from .. import library, ops
from ..autograd import ResidualStraightThrough
from ..errors import InvalidArgumentError, ShapeError
from ..ops import codebook_state, levels, search, training
from ..ops import validation as check
from .quantizer import ResidualQuantizer, _autocast_off

__all__ = ["GroupedResidualQuantizer"]


class GroupedResidualQuantizer(ResidualQuantizer):
    """G independent residual quantizers over the G slices of D: ``quantized, codes, loss = grq(x)``.

    x ``[..., D]`` is cut into ``groups`` slices of ``D / G`` columns; slice g is quantized by its own L levels of
    ``codebook_size`` codes. codes are ``[..., G, L]``; the loss is summed over groups and levels (``[G, L]`` with
    ``loss_per_level``). Every option of :class:`ResidualQuantizer` applies to each group (quantizer dropout draws
    one count per step for all groups), except ``shared_codebook`` and ``codebook_dim``. State: ``codebook``
    ``[G·L, K, D/G]`` (group g's levels at rows ``g·L … g·L + L − 1``), ``cluster_size`` ``[G·L, K]``,
    ``embed_sum``; one state update, and under DDP one all-reduce, per training step for all groups.
    """

    def __init__(self, dim: int, codebook_size: int | Sequence[int], num_quantizers: int = 1, *, groups: int = 1, **kwargs):
        groups = int(groups)
        if groups < 1 or int(dim) % groups:
            raise InvalidArgumentError(f"groups must be ≥ 1 and divide dim = {dim}, got {groups}")
        for name in ("shared_codebook", "codebook_dim"):
            if kwargs.get(name):
                raise InvalidArgumentError(f"GroupedResidualQuantizer does not offer {name}")
        if not 0 <= int(kwargs.get("quantize_dropout_cutoff_index", 0)) < int(num_quantizers):
            raise InvalidArgumentError(f"quantize_dropout_cutoff_index must be in [0, {int(num_quantizers) - 1}]")
        sizes = [int(codebook_size)] * int(num_quantizers) if isinstance(codebook_size, int) else [int(k) for k in codebook_size]
        if len(sizes) != int(num_quantizers):
            raise InvalidArgumentError(f"codebook_size lists {len(sizes)} sizes for {num_quantizers} levels")
        super().__init__(int(dim) // groups, sizes * groups, int(num_quantizers) * groups, **kwargs)
        self.groups = groups
        self.group_dim = int(dim) // groups
        self.dim = int(dim)
        self.codebook_dim = self.group_dim
        self.num_quantizers = int(num_quantizers)  # levels per group
        self.group_level_sizes = sizes

    def extra_repr(self) -> str:
        return f"groups={self.groups}, " + super().extra_repr()

    @property
    def codebooks(self) -> torch.Tensor:
        """``[G, L, K, D/G]``: a view of ``codebook`` per group (cosine + learned: normalised rows)."""
        return torch.stack([self._group_codebooks(g) for g in range(self.groups)])

    def _group_codebooks(self, group: int) -> torch.Tensor:
        levels_ = self.num_quantizers
        book = self.codebook[group * levels_ : (group + 1) * levels_]
        if self.use_cosine_sim and not self.ema:
            book = book.clone()
            book = book / book.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return book

    def _slice(self, rows: torch.Tensor, group: int) -> torch.Tensor:
        return rows[:, group * self.group_dim : (group + 1) * self.group_dim].contiguous()

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, n_quantizers: int | None = None,
                return_stats: bool = False):
        """As :meth:`ResidualQuantizer.forward`, with codes ``[..., G, L]`` and statistics ``[G, L]``."""
        with _autocast_off(x):
            return self._grouped_forward(x, mask, n_quantizers, return_stats)

    def _grouped_forward(self, x, mask, n_quantizers, return_stats):
        in_dtype = x.dtype
        rows, lead, valid, training_step, update, compiling, sync = self._step_setup(x, mask)
        if update and not self._initted_known:
            self._grouped_kmeans_init(rows, valid, sync)
        active, row_levels = levels.draw_levels(
            self.dropout, self.num_quantizers, self._levels(n_quantizers), lead, training_step
        )
        row_levels = levels.apply_mask(row_levels, valid, self.num_quantizers, rows.device)
        num_valid = rows.shape[0] if valid is None else valid.sum()
        learn = not self.ema and update
        outputs = []
        for group in range(self.groups):
            z, books = self._slice(rows, group), self._group_codebooks(group)
            codes = self._group_search(z.detach(), books, active) if self.beam_size > 1 else None
            if self.rotation_trick or self.use_cosine_sim:
                if codes is None:
                    codes = self._group_search(z.detach(), books, active)
                codes = self._limit_codes(codes, row_levels)
                walk_books = books if learn else books.detach()
                if compiling and not learn:
                    walk_books = torch.ops.fastrq.snapshot(walk_books)
                q, loss, sqerr, counts, sums = training.differentiable_walk(
                    z, walk_books, codes, num_valid, commitment_weight=self.commitment_weight, learn_codebook=learn,
                    rotation_trick=self.rotation_trick, cosine=self.use_cosine_sim, per_level_loss=self.loss_per_level,
                )
            else:
                q, loss, codes, sqerr, counts, sums = ResidualStraightThrough.apply(
                    z, books, codes, self.group_level_sizes, active, row_levels, num_valid, self.commitment_weight,
                    learn, self.loss_per_level, self.backend,
                )
            outputs.append((q, loss, codes, sqerr, counts, sums))
        quantized = torch.cat([o[0] for o in outputs], dim=1)
        loss = torch.stack([o[1] for o in outputs])
        loss = loss if self.loss_per_level else loss.sum()
        codes = torch.cat([o[2] for o in outputs], dim=1)  # [N, G·L], group after group
        level_sqerr = torch.cat([o[3] for o in outputs])
        counts = torch.cat([o[4] for o in outputs])
        sums = torch.cat([o[5] for o in outputs])
        if update:
            finite = self._finite(level_sqerr, rows, compiling)
            update_ = torch.ops.fastrq.codebook_update_ if compiling else codebook_state.codebook_update_
            active_arg = active if compiling else library.num_active(active, self.num_quantizers)
            update_(
                self._updated_codebook(), self.cluster_size, self.embed_sum, self.rng_state, rows.detach(), codes,
                counts, sums, finite, active_arg, self.level_sizes, self.decay, self.eps, self.dead_code_threshold,
                self.ema, sync, self.groups,
            )
            if self.use_cosine_sim and self.ema:
                codebook_state.renormalize_(self.codebook, self.level_sizes)
        if valid is not None:
            quantized = torch.where(valid[:, None], quantized, rows)
        out = self._from_rows(quantized, lead, in_dtype)
        codes = codes.reshape(*lead, self.groups, self.num_quantizers)
        if not return_stats:
            return out, codes, loss
        stats = self._stats(num_valid, level_sqerr, counts)
        return out, codes, loss, {k: v.view(self.groups, self.num_quantizers) for k, v in stats.items()}

    def _stats(self, num_valid, level_sqerr, counts):
        levels_ = self.num_quantizers
        self.num_quantizers = self.groups * levels_  # the statistics run over every stored level
        try:
            return super()._stats(num_valid, level_sqerr, counts)
        finally:
            self.num_quantizers = levels_

    def _grouped_kmeans_init(self, rows: torch.Tensor, valid, sync: bool) -> None:
        """k-means++ then Lloyd on each group's slice, level after level (one flag for all groups)."""
        if bool(self.initted):
            self._initted_known = True
            return
        data = rows.detach() if valid is None else rows.detach()[valid]
        finite = torch.ops.fastrq.check_finite(data, self.on_nonfinite)
        levels_ = self.num_quantizers
        done = []
        book = self.codebook if self.ema else self.codebook.detach()
        with torch.no_grad():
            for group in range(self.groups):
                flag = torch.tensor(False)
                part = slice(group * levels_, (group + 1) * levels_)
                codebook_state.kmeans_init_(
                    book[part], self.cluster_size[part], self.embed_sum[part] if self.ema else self.embed_sum, flag,
                    self.rng_state + group, self._slice(data, group), finite, self.group_level_sizes,
                    self.kmeans_iters, sync, self.backend,
                )
                done.append(bool(flag))
        if all(done):
            self.initted.fill_(True)
            if self.use_cosine_sim:
                codebook_state.renormalize_(book, self.level_sizes)
        self._initted_known = bool(self.initted)

    def _group_search(self, rows: torch.Tensor, books: torch.Tensor, active) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return torch.ops.fastrq.search_codes(rows, books.detach(), self.group_level_sizes, active, self.beam_size, self.backend)
        num = library.num_active(active, self.num_quantizers)
        return search.search_codes(rows, books.detach(), self.group_level_sizes, num, self.beam_size, self.backend)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, n_quantizers: int | None = None) -> torch.Tensor:
        """Codes int64 ``[..., G, L]``; changes no state."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            rows, lead = self._to_rows(x)
            valid = self._row_mask(mask, lead, rows.device)
            top = self._levels(n_quantizers)
            active = None if top == self.num_quantizers else torch.tensor(top)
            codes = torch.stack(
                [self._group_search(self._slice(rows, g), self._group_codebooks(g), active) for g in range(self.groups)],
                dim=1,
            )
            if valid is not None:
                codes = codes.masked_fill(~valid[:, None, None], -1)
        return codes.reshape(*lead, self.groups, self.num_quantizers)

    def _check_grouped(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dim() < 2 or codes.shape[-2] != self.groups:
            got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ShapeError(f"codes must be [..., G={self.groups}, L'], got {got}")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[..., G, L']`` → ``[..., D]`` (channel_first: ``[B, D, *spatial]``)."""
        self._check_grouped(codes)
        parts = [
            ops.residual_decode(codes[..., g, :], self._group_codebooks(g), backend=self.backend) for g in range(self.groups)
        ]
        out = torch.cat(parts, dim=-1)
        return out.movedim(-1, 1) if self.channel_first else out

    def get_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The per-level code vectors ``[..., G, L', D/G]`` of codes ``[..., G, L']`` (zeros where −1)."""
        self._check_grouped(codes)
        check.check_codes(codes, self.codebook_size, allow_skip=True)
        parts = []
        for g in range(self.groups):
            level_codes = codes[..., g, :]
            books = self._group_codebooks(g)[: level_codes.shape[-1]]
            index = torch.arange(level_codes.shape[-1], device=codes.device).expand_as(level_codes)
            parts.append(books[index, level_codes.clamp(min=0)] * (level_codes >= 0)[..., None])
        return torch.stack(parts, dim=-3)

    @classmethod
    def from_vector_quantize_pytorch(cls, module, **overrides):
        raise InvalidArgumentError("converting a GroupedResidualVQ is not supported yet; convert each group's ResidualVQ")
