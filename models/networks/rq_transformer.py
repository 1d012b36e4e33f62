"""RQ-Transformer prior over residual-quantized codes (spatial transformer + depth transformer), with KV-cached
sampling.

Codes are int64 ``[B, T, L]`` (``T = h·w`` positions in raster order, ``L`` depths, values in ``[0, K)``); image-shaped
codes ``[B, h, w, L]`` from :meth:`RQVAE.encode_codes` are flattened with :func:`flatten_codes`.

Model (Lee et al., 2022, written from the paper's description)::

    x_t        = Σ_l E_l[c_{t,l}]                                   (sum over depth of per-depth code embeddings)
    spatial in = [s, x_0 + P_1, …, x_{T-2} + P_{T-1}]               (s = start token (+ class embedding) + P_0)
    h_t        = SpatialTransformer(spatial in)_t                    causal: h_t sees codes of positions < t
    depth in_t = [h_t + D_0, F_0[c_{t,0}] + D_1, …, F_{L-2}[c_{t,L-2}] + D_{L-1}]
    logits_t,l = Head(DepthTransformer(depth in_t)_l)                causal over depth: sees c_{t,<l}

so ``p(c) = Π_t Π_l p(c_{t,l} | c_{<t,·}, c_{t,<l}, class)``. Blocks are pre-norm (LayerNorm → causal
``F.scaled_dot_product_attention`` → residual; LayerNorm → GELU MLP → residual).

Loss: cross-entropy over *all* codes (no value is treated as padding; an all-zero target batch is an ordinary
batch). :meth:`RQTransformer.nll_per_depth` reports it per depth in bits per code.

Sampling: :meth:`RQTransformer.sample` (KV cache: the spatial cache holds keys/values of every position produced so
far, the depth cache those of the current position's earlier depths) and :meth:`RQTransformer.sample_uncached` (runs
the full model on the whole prefix for every token). Both turn logits into codes with :func:`pick_codes`, which
uses a uniform draw per token by inverse CDF; with the same draws ``u`` both give the same codes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fastrq.errors import CodeRangeError, DTypeError, InvalidArgumentError, ShapeError

__all__ = [
    "PriorConfig",
    "RQTransformer",
    "KVCache",
    "filter_logits",
    "pick_codes",
    "flatten_codes",
    "unflatten_codes",
]


@dataclass
class PriorConfig:
    """Everything needed to rebuild an :class:`RQTransformer` (stored in checkpoints as JSON).

    ``num_positions`` = T (49 for a 7×7 latent), ``depth`` = L, ``codebook_size`` = K; ``num_classes`` = 0 for an
    unconditional model. ``class_dropout``: probability of replacing the label by the "no class" token in training,
    so a conditional model also samples unconditionally (``labels=None``)."""

    codebook_size: int = 128
    depth: int = 2
    num_positions: int = 49
    dim: int = 128
    heads: int = 4
    spatial_layers: int = 4
    depth_layers: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.0
    num_classes: int = 0
    class_dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("codebook_size", "depth", "num_positions", "dim", "heads", "spatial_layers", "depth_layers", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise InvalidArgumentError(f"PriorConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise InvalidArgumentError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.num_classes < 0 or not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.class_dropout <= 1.0:
            raise InvalidArgumentError("num_classes must be ≥ 0 and dropout, class_dropout in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PriorConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def flatten_codes(codes: torch.Tensor) -> torch.Tensor:
    """``[B, h, w, L]`` → ``[B, h·w, L]`` (raster order)."""
    if codes.dim() != 4:
        raise ShapeError(f"image codes must be [B, h, w, L], got {tuple(codes.shape)}")
    return rearrange(codes, "b h w l -> b (h w) l")


def unflatten_codes(codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, h·w, L]`` → ``[B, h, w, L]``."""
    return rearrange(codes, "b (h w) l -> b h w l", h=height, w=width)


# ------------------------------------------------------------------------------------------------ blocks


class KVCache:
    """Keys and values of one transformer stack for the tokens seen so far: per layer ``[B, heads, capacity, d_head]``
    buffers filled up to ``length``. ``reset()`` empties it without reallocating (the depth cache does this at every
    position)."""

    def __init__(self, layers: int, batch: int, heads: int, capacity: int, head_dim: int, *, device, dtype):
        shape = (batch, heads, capacity, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.capacity = capacity
        self.length = 0

    def reset(self) -> None:
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` ``[B, heads, n, d]`` after the current tokens; returns all keys/values so far.
        ``length`` advances once per stack call, in :meth:`advance`."""
        n = k.shape[2]
        if self.length + n > self.capacity:
            raise InvalidArgumentError(f"KV cache overflow: {self.length} + {n} tokens > capacity {self.capacity}")
        self.keys[layer][:, :, self.length:self.length + n] = k
        self.values[layer][:, :, self.length:self.length + n] = v
        end = self.length + n
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """``x`` ``[N, n, dim]`` → ``[N, n, dim]``. Without a cache: causal over the n tokens. With a cache: the n
        new tokens follow the cached ones (n = 1 in sampling, so every cached key is visible)."""
        batch, tokens, dim = x.shape
        # [N, n, 3·dim] → q, k, v [N, heads, n, d_head] (plain views: einops' per-call cost shows at batch 1)
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        else:
            if x.shape[1] != 1:
                raise InvalidArgumentError("cached attention takes one new token at a time")
            k, v = cache.append(layer, k, v)
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    """``layers`` blocks and a final LayerNorm."""

    def __init__(self, layers: int, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.norm(x)


# ------------------------------------------------------------------------------------------------ sampling helpers


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Softmax / cross-entropy in float32 for half-precision logits; float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _per_depth(value, depth: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * depth
    if len(values) != depth:
        raise InvalidArgumentError(f"{name} has {len(values)} entries; the model has {depth} depths")
    return values


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Scaled and filtered logits ``[N, K]``: ``logits / temperature``, then everything outside the ``top_k``
    largest set to −inf, then everything outside the smallest set whose probability reaches ``top_p`` (nucleus) set to
    −inf. At least one code always stays. ``temperature == 0`` keeps only the argmax (smallest index on ties)."""
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be ≥ 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InvalidArgumentError(f"top_k must be ≥ 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        keep = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
        return logits.masked_fill(~keep, -math.inf)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # probability of the codes ranked above this one
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def pick_codes(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None) -> torch.Tensor:
    """One code per row of ``logits`` ``[N, K]`` from the uniform draws ``u`` ``[N]`` in [0, 1): the first code whose
    cumulative (filtered) probability exceeds ``u`` (inverse CDF). Deterministic given ``u``: two samplers that
    compute the same logits and share ``u`` pick the same codes."""
    probs = filter_logits(_at_least_float32(logits), temperature, top_k, top_p).softmax(-1)
    cdf = probs.cumsum(-1)
    target = (u.to(cdf.dtype) * cdf[..., -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # never land on a filtered-out code through rounding at the top of the CDF
    index = index.clamp_max(logits.shape[-1] - 1)
    last_kept = (probs > 0).long().cumsum(-1).argmax(-1)
    return torch.minimum(index, last_kept)


# ------------------------------------------------------------------------------------------------ model


class RQTransformer(nn.Module):
    """Autoregressive prior over RQ codes ``[B, T, L]``; see the module docstring for the factorization."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        c = config
        self.code_embed = nn.Embedding(c.depth * c.codebook_size, c.dim)  # E_l: rows l·K … l·K+K-1
        self.depth_code_embed = nn.Embedding(max(c.depth - 1, 1) * c.codebook_size, c.dim)  # F_l, l < L-1
        self.spatial_pos = nn.Parameter(torch.zeros(c.num_positions, c.dim))
        self.depth_pos = nn.Parameter(torch.zeros(c.depth, c.dim))
        self.start = nn.Parameter(torch.zeros(c.dim))
        self.class_embed = nn.Embedding(c.num_classes + 1, c.dim) if c.num_classes else None  # last row: no class
        self.spatial = Stack(c.spatial_layers, c.dim, c.heads, c.mlp_ratio, c.dropout)
        self.depth_stack = Stack(c.depth_layers, c.dim, c.heads, c.mlp_ratio, c.dropout)
        self.head = nn.Linear(c.dim, c.codebook_size)
        self.register_buffer("_level_offsets", torch.arange(c.depth) * c.codebook_size, persistent=False)
        self.apply(self._init)
        for p in (self.spatial_pos, self.depth_pos, self.start):
            nn.init.normal_(p, std=0.02)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    # --------------------------------------------------------------------------------------- validation

    def check_codes(self, codes: torch.Tensor, allow_prefix: bool = True) -> None:
        c = self.config
        if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int64, torch.int32):
            raise DTypeError(f"codes must be an int64/int32 tensor, got {getattr(codes, 'dtype', type(codes))}")
        if codes.dim() != 3 or codes.shape[2] != c.depth or not 1 <= codes.shape[1] <= c.num_positions:
            raise ShapeError(f"codes must be [B, T ≤ {c.num_positions}, {c.depth}], got {tuple(codes.shape)}")
        if not allow_prefix and codes.shape[1] != c.num_positions:
            raise ShapeError(f"codes must cover all {c.num_positions} positions, got {codes.shape[1]}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= c.codebook_size):
            raise CodeRangeError(f"codes must lie in [0, {c.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")

    def _labels(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        c = self.config
        if self.class_embed is None:
            if labels is not None:
                raise InvalidArgumentError("this prior is unconditional (num_classes=0); do not pass labels")
            return None
        if labels is None:
            return torch.full((batch,), c.num_classes, dtype=torch.long, device=device)  # the "no class" token
        labels = torch.as_tensor(labels, device=device)
        if labels.dtype not in (torch.int64, torch.int32) or labels.shape != (batch,):
            raise ShapeError(f"labels must be int64 [{batch}], got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c.num_classes):
            raise CodeRangeError(f"labels must lie in [0, {c.num_classes})")
        return labels.long()

    # --------------------------------------------------------------------------------------- pieces

    def _start_token(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``[B, 1, dim]``: start embedding (+ class embedding) + P_0."""
        start = (self.start + self.spatial_pos[0]).expand(batch, 1, -1)
        if labels is not None:
            start = start + self.class_embed(labels).unsqueeze(1)
        return start

    def _position_input(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, n, L]`` → ``[B, n, dim]``: Σ_l E_l[c_l]."""
        return self.code_embed(codes.long() + self._level_offsets).sum(-2)

    def _depth_inputs(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``h`` ``[N, dim]``, codes ``[N, L]`` → depth sequence ``[N, L, dim]``."""
        L = self.config.depth
        first = (h + self.depth_pos[0]).unsqueeze(1)
        if L == 1:
            return first
        rest = self.depth_code_embed(codes[:, :-1].long() + self._level_offsets[:-1]) + self.depth_pos[1:]
        return torch.cat([first, rest], 1)

    # --------------------------------------------------------------------------------------- training

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, L, K]`` for codes ``[B, T, L]`` (T may be a prefix of the positions):
        ``logits[:, t, l]`` is the distribution of ``c_{t,l}`` given every code before it (and the class)."""
        self.check_codes(codes)
        return self._logits(codes, self._labels(labels, codes.shape[0], codes.device))

    def _logits(self, codes: torch.Tensor, label_index: torch.Tensor | None) -> torch.Tensor:
        """:meth:`forward` on validated input; ``label_index`` may hold the "no class" index ``num_classes``."""
        B, T, _ = codes.shape
        inputs = self._position_input(codes[:, :-1]) + self.spatial_pos[1:T]
        h = self.spatial(torch.cat([self._start_token(label_index, B), inputs], 1))  # [B, T, dim]
        depth_in = self._depth_inputs(rearrange(h, "b t d -> (b t) d"), rearrange(codes, "b t l -> (b t) l"))
        return rearrange(self.head(self.depth_stack(depth_in)), "(b t) l k -> b t l k", b=B)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats per code) over every code, code 0 included. In training mode a conditional
        model replaces each label by the "no class" token with probability ``class_dropout``."""
        self.check_codes(codes)
        label_index = self._labels(labels, codes.shape[0], codes.device)
        if label_index is not None and labels is not None and self.training and self.config.class_dropout > 0:
            drop = torch.rand(label_index.shape, device=label_index.device) < self.config.class_dropout
            label_index = label_index.masked_fill(drop, self.config.num_classes)
        logits = self._logits(codes, label_index)
        return F.cross_entropy(_at_least_float32(logits.flatten(0, 2)), codes.flatten().long())

    @torch.no_grad()
    def nll_per_depth(self, codes: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
        """Mean negative log-likelihood per depth in **bits per code**, float64 ``[L]`` (eval mode, no dropout)."""
        was_training = self.training
        self.eval()
        total = torch.zeros(self.config.depth, dtype=torch.float64)
        try:
            for start in range(0, codes.shape[0], batch_size):
                chunk = codes[start:start + batch_size]
                lab = None if labels is None else labels[start:start + batch_size]
                logits = _at_least_float32(self(chunk, lab))
                nll = F.cross_entropy(rearrange(logits, "b t l k -> b k t l"), chunk.long(), reduction="none")
                total += nll.sum((0, 1)).double().cpu()
        finally:
            self.train(was_training)
        return total / (max(codes.shape[0], 1) * codes.shape[1] * math.log(2))

    # --------------------------------------------------------------------------------------- sampling

    def _draws(self, batch: int, u: torch.Tensor | None, generator: torch.Generator | None, device) -> torch.Tensor:
        shape = (batch, self.config.num_positions, self.config.depth)
        if u is None:
            return torch.rand(shape, generator=generator).to(device)
        if tuple(u.shape) != shape:
            raise ShapeError(f"u must be {list(shape)}, got {tuple(u.shape)}")
        return u.to(device)

    @torch.inference_mode()
    def sample(self, batch: int, labels: torch.Tensor | None = None, *, temperature: float | Sequence[float] = 1.0,
               top_k: int | None | Sequence[int | None] = None, top_p: float | None | Sequence[float | None] = None,
               u: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes ``[batch, T, L]`` sampled with KV caches: one spatial step per position (its new token is the
        previous position's summed code embedding) and L depth steps per position.

        ``temperature``, ``top_k``, ``top_p``: one value or one per depth. ``u`` ``[batch, T, L]``: the uniform draws
        (default: ``torch.rand`` from ``generator``). ``labels`` ``[batch]`` for a conditional model (None = the
        "no class" token)."""
        c = self.config
        temps, ks, ps = (_per_depth(temperature, c.depth, "temperature"), _per_depth(top_k, c.depth, "top_k"),
                         _per_depth(top_p, c.depth, "top_p"))
        device, dtype = self.start.device, self.start.dtype
        draws = self._draws(batch, u, generator, device)
        labels = self._labels(labels, batch, device)
        was_training = self.training
        self.eval()
        head_dim = c.dim // c.heads
        spatial_cache = KVCache(c.spatial_layers, batch, c.heads, c.num_positions, head_dim, device=device, dtype=dtype)
        depth_cache = KVCache(c.depth_layers, batch, c.heads, c.depth, head_dim, device=device, dtype=dtype)
        codes = torch.zeros(batch, c.num_positions, c.depth, dtype=torch.long, device=device)
        try:
            token = self._start_token(labels, batch)
            for t in range(c.num_positions):
                if t > 0:
                    token = (self._position_input(codes[:, t - 1:t]) + self.spatial_pos[t]).to(dtype)
                h = self.spatial(token, spatial_cache)[:, 0]  # [B, dim]
                depth_cache.reset()
                depth_token = (h + self.depth_pos[0]).unsqueeze(1)
                for level in range(c.depth):
                    logits = self.head(self.depth_stack(depth_token, depth_cache))[:, 0]
                    codes[:, t, level] = pick_codes(logits, draws[:, t, level], temps[level], ks[level], ps[level])
                    if level + 1 < c.depth:
                        index = codes[:, t, level] + level * c.codebook_size
                        depth_token = (self.depth_code_embed(index) + self.depth_pos[level + 1]).unsqueeze(1)
        finally:
            self.train(was_training)
        return codes

    @torch.inference_mode()
    def sample_uncached(self, batch: int, labels: torch.Tensor | None = None, *, temperature: float | Sequence[float] = 1.0,
                        top_k: int | None | Sequence[int | None] = None, top_p: float | None | Sequence[float | None] = None,
                        u: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The same sampler without caches: for every token it runs :meth:`forward` on the whole prefix (positions
        ``0…t``; not-yet-sampled codes are zeros, which causality hides). Same arguments and result as
        :meth:`sample`; T·L full forward passes, the baseline of ``benchmarks/sampling.py``."""
        c = self.config
        temps, ks, ps = (_per_depth(temperature, c.depth, "temperature"), _per_depth(top_k, c.depth, "top_k"),
                         _per_depth(top_p, c.depth, "top_p"))
        device = self.start.device
        draws = self._draws(batch, u, generator, device)
        labels = self._labels(labels, batch, device)
        was_training = self.training
        self.eval()
        codes = torch.zeros(batch, c.num_positions, c.depth, dtype=torch.long, device=device)
        try:
            for t in range(c.num_positions):
                for level in range(c.depth):
                    logits = self._logits(codes[:, :t + 1], labels)[:, t, level]
                    codes[:, t, level] = pick_codes(logits, draws[:, t, level], temps[level], ks[level], ps[level])
        finally:
            self.train(was_training)
        return codes
