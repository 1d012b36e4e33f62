"""Per-call codebook preparation for the search kernel (torch only, no host sync, a fixed number of ops for any L).

For codebooks ``[L, K, D]`` of which level l uses its first ``level_sizes[l]`` rows:

- ``shifts [L, DP]``: the centring shift μ_l of the valid rows (:func:`centring_shifts`, the batched form of
  :func:`fastrq.ops.codebook_prep.centring_shift`), zero-padded to DP columns;
- the dot operand(s) of the mode: the centred rows ``C_l[k] − μ_l``, zero for padding rows and columns, padded to
  ``KP`` codes (a multiple of the tile) and ``DP`` columns; rounded / split / stored as bf16 per mode;
- ``nh [L, KP]``: ``−½‖ê_k‖²`` of the operand rows (``−inf`` for padding codes, so they are never chosen);
- ``canon [L, KP]`` int32: the first row equal to row k (:func:`first_equal_rows`, sync-free);
- certified mode: ``cert [L, 3]``, the per-level (k_c, k_α, k_0) of :func:`fastrq.kernels.precision.certified_coefficients`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .precision import certified_coefficients, round_to_tf32, split_tf32

__all__ = ["PreparedCodebooks", "prepare_codebooks", "centring_shifts", "first_equal_rows", "FMA_MAX_D"]

# Up to this D, in ieee mode and float64, the scores are a broadcast multiply-add on CUDA cores (exact).
FMA_MAX_D = 4

_HASH_GENERATOR = torch.Generator().manual_seed(0x5EED)
_HASH_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


@dataclass(frozen=True)
class PreparedCodebooks:
    """What the search kernel reads besides the codebooks; valid for one codebook version, mode and tile."""

    codebooks: torch.Tensor  # [L, K, D] as given (gathered for the walk)
    mode: str  # kernel mode: fma / ieee / tf32 / tf32x3 / bf16 / certified (see search_kernels)
    operands: tuple  # up to 4 tensors, per mode (see prepare_codebooks)
    nh: torch.Tensor  # [L, KP] −½‖ê‖², −inf for padding codes
    shifts: torch.Tensor  # [L, DP]
    canon: torch.Tensor  # [L, KP] int32
    cert: torch.Tensor | None  # [L, 3] certified constants (k_c, k_α, k_0)
    padded_codes: int  # KP
    padded_dim: int  # DP

    @property
    def num_levels(self) -> int:
        return self.codebooks.shape[0]


def centring_shifts(codebooks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """μ [L, D] of codebooks [L, K, D] over the rows with ``valid [L, K]``: the mean rounded to a multiple of the
    largest power of two not above the spread max |e − mean| (exactly the rule of ``centring_shift``; rows that are
    not valid, whatever they hold, take no part). No host sync."""
    v = valid[..., None]
    count = valid.sum(dim=1, keepdim=True).clamp_min(1).to(codebooks.dtype)
    mean = torch.where(v, codebooks, 0.0).sum(dim=1) / count
    spread = torch.where(v, (codebooks - mean[:, None, :]).abs(), 0.0).amax(dim=(1, 2))
    step = torch.exp2(torch.floor(torch.log2(spread.clamp_min(torch.finfo(codebooks.dtype).tiny))))[:, None]
    return torch.where(spread[:, None] > 0, torch.round(mean / step) * step, codebooks[:, 0, :])


def first_equal_rows(codebooks: torch.Tensor) -> torch.Tensor:
    """For each row k of each level of codebooks [L, K, D], the smallest j with codebooks[l, j] == codebooks[l, k]
    bit for bit (int64 [L, K]). No host sync: rows are hashed (random 64-bit weights on their bits, wrapping
    arithmetic), stably sorted by hash, mapped to the first row of their run of equal hashes, and the mapping is
    kept only where the rows are really equal (a hash collision between different rows maps a row to itself)."""
    num_levels, num_codes, dim = codebooks.shape
    bits = codebooks.contiguous().view(torch.int64 if codebooks.element_size() == 8 else torch.int32).to(torch.int64)
    key = (dim, str(codebooks.device))
    weights = _HASH_WEIGHTS.get(key)
    if weights is None:
        weights = torch.randint(-(2**62), 2**62, (dim,), generator=_HASH_GENERATOR, dtype=torch.int64)
        weights = _HASH_WEIGHTS.setdefault(key, weights.to(codebooks.device))
    row_hash = (bits * weights).sum(dim=2)  # [L, K]; equal rows hash equal
    sorted_hash, order = torch.sort(row_hash, dim=1, stable=True)
    position = torch.arange(num_codes, device=codebooks.device).expand(num_levels, num_codes)
    run_start = torch.ones_like(sorted_hash, dtype=torch.bool)
    run_start[:, 1:] = sorted_hash[:, 1:] != sorted_hash[:, :-1]
    first_position = torch.where(run_start, position, 0).cummax(dim=1).values
    first_sorted = order.gather(1, first_position)  # the smallest index of the run (stable sort)
    first = torch.empty_like(order).scatter_(1, order, first_sorted)
    same = (bits.gather(1, first[..., None].expand(-1, -1, dim)) == bits).all(dim=2)
    return torch.where(same, first, position)


_SIZES: dict[tuple, torch.Tensor] = {}


def _sizes_tensor(sizes: tuple, device: torch.device) -> torch.Tensor:
    """The level sizes on the device, cached: a host-to-device copy (a sync on CUDA) only on first use."""
    key = (sizes, str(device))
    if key not in _SIZES:
        if len(_SIZES) > 256:
            _SIZES.clear()
        _SIZES[key] = torch.tensor(sizes, device=device)
    return _SIZES[key]


def _pad(t: torch.Tensor, codes: int, dim: int) -> torch.Tensor:
    """[L, K, D] -> [L, codes, dim] zero-padded (a fresh contiguous tensor)."""
    out = t.new_zeros(t.shape[0], codes, dim)
    out[:, : t.shape[1], : t.shape[2]] = t
    return out


def prepare_codebooks(codebooks: torch.Tensor, level_sizes: list[int] | None, mode: str, block_k: int,
                      padded_dim: int, fallback: str = "tf32x3") -> PreparedCodebooks:
    """The kernel inputs for codebooks ``[L, K, D]`` (contiguous float32 / float64) searched in kernel ``mode``
    with code tiles of ``block_k`` and a register tile of ``padded_dim`` columns.

    Operands: ``fma``: (centred rows transposed ``[L, D, KP]``,); ``ieee``: (centred,); ``tf32``: (tf32(centred),);
    ``tf32x3``: (big, small); ``bf16``: (bf16(centred),); ``certified``: (bf16(centred), centred fp32, fallback
    big or centred, fallback small or centred). Half norms come from the rounded operand in tf32 / bf16, from the
    float32 rows otherwise."""
    num_levels, num_codes, dim = codebooks.shape
    device = codebooks.device
    kp = -(-num_codes // block_k) * block_k
    sizes = _sizes_tensor(tuple(level_sizes) if level_sizes is not None else (num_codes,) * num_levels, device)
    valid = torch.arange(num_codes, device=device)[None, :] < sizes[:, None]  # [L, K]
    shifts = centring_shifts(codebooks, valid)
    centred = torch.where(valid[..., None], codebooks - shifts[:, None, :], 0.0)
    if mode == "tf32":
        centred = round_to_tf32(centred)
    elif mode == "bf16":
        centred = centred.to(torch.bfloat16)
    norm_rows = centred.to(codebooks.dtype) if mode == "bf16" else centred
    half = 0.5 * norm_rows.square().sum(dim=2)
    nh = torch.full((num_levels, kp), float("-inf"), dtype=codebooks.dtype, device=device)
    nh[:, :num_codes] = torch.where(valid, -half, float("-inf"))
    canon = torch.arange(kp, device=device, dtype=torch.int32).repeat(num_levels, 1)
    canon[:, :num_codes] = first_equal_rows(codebooks).to(torch.int32)
    cert = None
    if mode == "fma":
        operands = (_pad(centred, kp, dim).transpose(1, 2).contiguous(),)
    elif mode == "tf32x3":
        big, small = split_tf32(centred)
        operands = (_pad(big, kp, padded_dim), _pad(small, kp, padded_dim))
    elif mode == "certified":
        exact = _pad(centred, kp, padded_dim)
        if fallback == "tf32x3":
            big, small = split_tf32(centred)
            fb = (_pad(big, kp, padded_dim), _pad(small, kp, padded_dim))
        else:
            fb = (exact, exact)
        operands = (_pad(centred.to(torch.bfloat16), kp, padded_dim), exact, *fb)
        rounded = centred.to(torch.bfloat16).to(centred.dtype)
        norm_max = lambda t: torch.where(valid, t.square().sum(dim=2), 0.0).amax(dim=1).double().sqrt()  # noqa: E731
        k_c, k_alpha, k_0 = certified_coefficients(norm_max(rounded - centred), norm_max(rounded), norm_max(centred),
                                                   torch.where(valid, half, 0.0).amax(dim=1).double(), dim)
        # margin = k_c·‖c‖ + k_α·‖α‖ + k_0 (precision.certified_margin), inflated by a relative (D + 16)·2⁻²² for the
        # kernel's float32 evaluation of ‖c‖, ‖α‖, the margin and the comparison, and by 2⁻²⁰ for the cast here
        slack = (1 + (dim + 16) * 2.0**-22) * (1 + 2.0**-20)
        cert = (torch.stack([k_c, k_alpha, k_0], dim=1) * slack).to(torch.float32).contiguous()
    else:  # ieee, tf32, bf16
        operands = (_pad(centred, kp, padded_dim),)
    shifts_padded = shifts.new_zeros(num_levels, padded_dim)
    shifts_padded[:, :dim] = shifts
    return PreparedCodebooks(codebooks, mode, operands, nh.contiguous(), shifts_padded, canon, cert, kp, padded_dim)
