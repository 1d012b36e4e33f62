"""Host launchers of the search kernels: nearest code and greedy residual quantization in one launch.

All functions take validated input: rows ``x [N, D]`` contiguous, codebooks ``[L, K, D]`` (or ``[K, D]``)
contiguous, same device, dtype float32 or float64 (results in that dtype). The per-call codebook preparation
(:func:`prepare_codebooks`: centring shifts, rounded centred rows, half norms, duplicate-row table) can be done
once per codebook version by the caller and handed in as ``prepared=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

from fastrq.torch_backend import centring_shift, first_equal_row

from . import _alloc
from .precision import resolve_precision, round_operand
from .search_kernels import rq_chunked_kernel, rq_registers_kernel

__all__ = [
    "PreparedCodebooks",
    "SearchConfig",
    "prepare_codebooks",
    "choose_config",
    "nearest_code",
    "residual_quantize",
    "residual_quantize_with_errors",
]

# Largest padded D whose [BLOCK_N, D] residual and sum stay in registers (checked spill-free for sm_80 / sm_90 by
# tests/test_kernel_report.py); larger D uses the chunked kernel.
REGISTER_MAX_D = 128
# Up to this padded D the scores use a broadcast multiply-add instead of tensor cores.
SMALL_D = 16


@dataclass(frozen=True)
class SearchConfig:
    """Tile sizes and kernel choice of one launch (all compile-time constants)."""

    kernel: str  # "registers" or "chunked"
    block_n: int
    block_k: int
    block_d: int  # D_PAD for "registers", the chunk width for "chunked"
    use_dot: bool
    num_warps: int = 4
    num_stages: int = 2


def choose_config(dim: int, dtype: torch.dtype, **overrides) -> SearchConfig:
    """Default tiles for vectors of dimension ``dim`` (overridable field by field, e.g. in tests)."""
    d_pad = triton.next_power_of_2(max(dim, 1))
    if dtype == torch.float64:
        if d_pad <= 64:
            cfg = SearchConfig("registers", 32, 32, max(d_pad, 16) if d_pad > SMALL_D else d_pad, d_pad > SMALL_D)
        else:
            cfg = SearchConfig("chunked", 32, 32, 32, True)
    elif d_pad <= SMALL_D:
        cfg = SearchConfig("registers", 64, 32, d_pad, False)
    elif d_pad <= 64:
        cfg = SearchConfig("registers", 64, 64, d_pad, True)
    elif d_pad <= REGISTER_MAX_D:
        cfg = SearchConfig("registers", 64, 64, d_pad, True, num_warps=8)
    else:
        cfg = SearchConfig("chunked", 64, 64, 64, True)
    return SearchConfig(**{**cfg.__dict__, **overrides})


@dataclass(frozen=True)
class PreparedCodebooks:
    """What the kernels read besides the codebooks themselves; valid for one codebook version and precision."""

    codebooks: torch.Tensor  # [L, K, D] original rows (gathered for the residual update)
    centred: torch.Tensor  # [L, K, D] round(C − μ), the dot operand
    half_norms: torch.Tensor  # [L, K] ½‖centred‖², from the same rounded values
    shifts: torch.Tensor  # [L, D] μ_l
    canon: torch.Tensor | None  # [L, K] int32 first equal row, or None when no level has duplicate rows
    precision: str


def prepare_codebooks(codebooks: torch.Tensor, precision: str | None = None) -> PreparedCodebooks:
    """Centring shifts, rounded centred rows and their half norms, and the duplicate-row table (one host sync,
    from the duplicate check). ``codebooks``: ``[L, K, D]`` or ``[K, D]``."""
    if codebooks.dim() == 2:
        codebooks = codebooks.unsqueeze(0)
    mode = resolve_precision(precision, codebooks.device, codebooks.dtype)
    shifts = torch.stack([centring_shift(level) for level in codebooks])
    centred = round_operand(codebooks - shifts[:, None, :], mode).contiguous()
    half_norms = 0.5 * centred.square().sum(dim=2)
    firsts = [first_equal_row(level) for level in codebooks]
    canon = None
    if any(f is not None for f in firsts):
        index = torch.arange(codebooks.shape[1], device=codebooks.device)
        canon = torch.stack([index if f is None else f for f in firsts]).to(torch.int32).contiguous()
    return PreparedCodebooks(codebooks.contiguous(), centred, half_norms.contiguous(), shifts.contiguous(), canon, mode)


def _launch(
    x: torch.Tensor,
    prep: PreparedCodebooks,
    *,
    want_quantized: bool,
    want_sqdist: bool,
    want_level_err: bool,
    config: SearchConfig | None,
):
    n, dim = x.shape
    num_levels, num_codes, _ = prep.codebooks.shape
    cfg = config or choose_config(dim, x.dtype)
    device, dtype = x.device, x.dtype
    codes = _alloc.empty(n, num_levels, dtype=torch.int64, device=device)
    quantized = _alloc.empty(n, dim, dtype=dtype, device=device) if want_quantized or cfg.kernel == "chunked" else None
    sqdist = _alloc.empty(n, dtype=dtype, device=device) if want_sqdist else None
    programs = triton.cdiv(n, cfg.block_n)
    level_err = _alloc.empty(programs, num_levels, dtype=dtype, device=device) if want_level_err else None
    if n == 0:
        return codes, (quantized if want_quantized else None), sqdist, (level_err.sum(0) if want_level_err else None)
    canon = prep.canon if prep.canon is not None else codes  # any tensor: never read without HAS_CANON
    dummy = codes  # stands in for outputs that are not written
    kernel_precision = prep.precision
    if kernel_precision == "bf16" and os.environ.get("TRITON_INTERPRET", "0") == "1":
        kernel_precision = "bf16_emulated"  # see search_kernels._tile_products
    common = dict(PRECISION=kernel_precision, HAS_CANON=prep.canon is not None, WRITE_SQDIST=want_sqdist,
                  WRITE_LEVEL_ERR=want_level_err, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if cfg.kernel == "registers":
        rq_registers_kernel[(programs,)](
            x, prep.codebooks, prep.centred, prep.half_norms, prep.shifts, canon,
            codes, quantized if quantized is not None else dummy, sqdist if sqdist is not None else dummy,
            level_err if level_err is not None else dummy,
            n, num_codes, dim, num_levels,
            BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, D_PAD=cfg.block_d, USE_DOT=cfg.use_dot,
            WRITE_QUANTIZED=want_quantized, **common,
        )
    else:
        residual = _alloc.empty(n, dim, dtype=dtype, device=device)  # scratch, filled by the kernel
        rq_chunked_kernel[(programs,)](
            x, prep.codebooks, prep.centred, prep.half_norms, prep.shifts, canon, residual,
            codes, quantized, sqdist if sqdist is not None else dummy, level_err if level_err is not None else dummy,
            n, num_codes, dim, num_levels,
            BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, BLOCK_D=cfg.block_d, **common,
        )
    # per-program partials summed in a fixed order: deterministic, no float atomics
    total_err = level_err.sum(dim=0) if want_level_err else None
    return codes, (quantized if want_quantized else None), sqdist, total_err


def nearest_code(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    precision: str | None = None,
    prepared: PreparedCodebooks | None = None,
    config: SearchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N]).

    codes[n] = argmin_k ‖x_n − codebook[k]‖² (smallest k among exact ties), sqdist[n] = Σ_d (x_n − codebook[c_n])²
    by the direct difference (the residual of a one-level quantization, never the expansion).
    """
    prep = prepared or prepare_codebooks(codebook, precision)
    codes, _, sqdist, _ = _launch(x, prep, want_quantized=False, want_sqdist=True, want_level_err=False, config=config)
    return codes[:, 0], sqdist


def residual_quantize(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    *,
    precision: str | None = None,
    prepared: PreparedCodebooks | None = None,
    config: SearchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebooks [L, K, D] -> (quantized [N, D] = Σ_l C_l[c_l], codes int64 [N, L]), greedy, one launch:
    r_0 = x, c_l = argmin_k ‖r_l − C_l[k]‖², r_{l+1} = r_l − C_l[c_l]."""
    prep = prepared or prepare_codebooks(codebooks, precision)
    codes, quantized, _, _ = _launch(x, prep, want_quantized=True, want_sqdist=False, want_level_err=False, config=config)
    return quantized, codes


def residual_quantize_with_errors(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    *,
    precision: str | None = None,
    prepared: PreparedCodebooks | None = None,
    config: SearchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`residual_quantize`, plus ``level_sqerr [L]``: ``level_sqerr[l] = Σ_n ‖r_{l+1, n}‖²``, the summed
    squared error left after level l (the commitment loss of level l is ``level_sqerr[l] / (N·D)``).

    Each program writes its rows' sum per level; the ``[programs, L]`` partials are then summed by one reduction in
    a fixed order, so the result is bitwise reproducible (no float atomics)."""
    prep = prepared or prepare_codebooks(codebooks, precision)
    codes, quantized, _, level_err = _launch(
        x, prep, want_quantized=True, want_sqdist=False, want_level_err=True, config=config
    )
    return quantized, codes, level_err
