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

from fastrq.ops.codebook_prep import centring_shift, first_equal_row

from . import _alloc
from .precision import resolve_precision, round_operand
from .search_kernels import rq_chunked_kernel, rq_registers_kernel

__all__ = [
    "PreparedCodebooks",
    "SearchConfig",
    "prepare_codebooks",
    "choose_config",
    "device_arch",
    "TUNED",
    "nearest_code",
    "residual_quantize",
    "residual_quantize_with_errors",
]

# Up to this padded D the scores use a broadcast multiply-add on CUDA cores instead of tensor cores.
SMALL_D = 16


@dataclass(frozen=True)
class SearchConfig:
    """Tile sizes and kernel choice of one launch (all compile-time constants)."""

    kernel: str  # "registers" or "chunked"
    block_n: int  # rows per program
    block_k: int  # codes per tile
    block_d: int  # D_PAD for "registers", the chunk width for "chunked"
    use_dot: bool  # tl.dot (tensor cores unless ieee) or the broadcast multiply-add (registers kernel only)
    num_warps: int = 4
    num_stages: int = 2


# Default tiles per (kernel, dtype, padded-D class, precision) and target, found by compiling candidates from the
# largest tile down for sm_80 and sm_90 and keeping the first with no register spills (stack frame and local memory
# 0, read from the cubin; see fastrq.kernels.static_check and benchmarks/kernel_report.py). Entry:
# (block_n, block_k, block_d, num_warps, num_stages). A class missing for a target falls back to the chunked kernel
# (e.g. float64 with D > 16, and D = 128 in tf32x3: no register-resident tile there was spill-free).
TUNED: dict[tuple[str, str, int, str], dict[str, tuple[int, int, int, int, int]]] = {
    ("registers", "fp32", 4, "any"): {"sm_80": (128, 32, 4, 8, 2), "sm_90": (128, 32, 4, 8, 2)},
    ("registers", "fp32", 8, "any"): {"sm_80": (128, 32, 8, 8, 2), "sm_90": (128, 32, 8, 8, 2)},
    ("registers", "fp32", 16, "any"): {"sm_80": (128, 32, 16, 8, 2), "sm_90": (128, 32, 16, 8, 2)},
    ("registers", "fp32", 32, "ieee"): {"sm_80": (64, 32, 32, 8, 2), "sm_90": (128, 64, 32, 8, 2)},
    ("registers", "fp32", 32, "tf32x3"): {"sm_80": (128, 32, 32, 8, 2), "sm_90": (128, 64, 32, 8, 2)},
    ("registers", "fp32", 32, "tf32"): {"sm_80": (128, 64, 32, 8, 2), "sm_90": (128, 64, 32, 8, 2)},
    ("registers", "fp32", 32, "bf16"): {"sm_80": (128, 64, 32, 8, 2), "sm_90": (128, 64, 32, 8, 2)},
    ("registers", "fp32", 64, "ieee"): {"sm_80": (32, 32, 64, 8, 2), "sm_90": (32, 32, 64, 8, 2)},
    ("registers", "fp32", 64, "tf32x3"): {"sm_80": (32, 32, 64, 8, 2), "sm_90": (128, 64, 64, 8, 2)},
    ("registers", "fp32", 64, "tf32"): {"sm_80": (128, 64, 64, 8, 2), "sm_90": (128, 64, 64, 8, 2)},
    ("registers", "fp32", 64, "bf16"): {"sm_80": (128, 64, 64, 8, 2), "sm_90": (128, 32, 64, 8, 2)},
    ("registers", "fp32", 128, "ieee"): {"sm_80": (64, 32, 128, 8, 2), "sm_90": (32, 32, 128, 8, 2)},
    ("registers", "fp32", 128, "tf32"): {"sm_80": (32, 32, 128, 4, 2), "sm_90": (64, 32, 128, 8, 2)},
    ("registers", "fp32", 128, "bf16"): {"sm_80": (64, 64, 128, 8, 2), "sm_90": (64, 64, 128, 8, 1)},
    ("registers", "fp64", 4, "any"): {"sm_80": (128, 32, 4, 8, 2), "sm_90": (128, 32, 4, 8, 2)},
    ("registers", "fp64", 8, "any"): {"sm_80": (32, 32, 8, 8, 2), "sm_90": (32, 32, 8, 8, 2)},
    ("registers", "fp64", 16, "any"): {"sm_80": (16, 16, 16, 4, 2), "sm_90": (16, 16, 16, 4, 2)},
    ("chunked", "fp32", 0, "ieee"): {"sm_80": (64, 32, 16, 8, 2), "sm_90": (64, 32, 32, 8, 2)},
    ("chunked", "fp32", 0, "tf32x3"): {"sm_80": (32, 64, 32, 8, 2), "sm_90": (64, 32, 32, 8, 2)},
    ("chunked", "fp32", 0, "tf32"): {"sm_80": (64, 32, 32, 8, 2), "sm_90": (64, 32, 32, 8, 2)},
    ("chunked", "fp32", 0, "bf16"): {"sm_80": (64, 32, 32, 8, 2), "sm_90": (64, 32, 64, 8, 2)},
    ("chunked", "fp64", 0, "ieee"): {"sm_80": (64, 32, 32, 8, 2), "sm_90": (64, 32, 32, 8, 2)},
}
ARCHS = ("sm_80", "sm_90")


def device_arch(device: torch.device) -> str:
    """The tuning target for a device: "sm_90" for compute capability ≥ 9, else "sm_80" (also for the CPU
    interpreter, where tile sizes only change speed)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9:
        return "sm_90"
    return "sm_80"


def choose_config(dim: int, dtype: torch.dtype, precision: str = "ieee", arch: str = "sm_80", **overrides) -> SearchConfig:
    """Default tiles for vectors of dimension ``dim`` searched in ``precision`` on ``arch`` (overridable field by
    field, e.g. ``block_k=16`` in tests)."""
    d_pad = triton.next_power_of_2(max(dim, 1))
    dt = "fp64" if dtype == torch.float64 else "fp32"
    if d_pad <= SMALL_D:
        key = ("registers", dt, max(d_pad, 4), "any")  # classes 4 (D ≤ 4), 8 and 16
        use_dot = False
    else:
        key = ("registers", dt, d_pad, precision)
        use_dot = True
    tiles = TUNED.get(key, {}).get(arch)
    if tiles is not None:
        block_n, block_k, _, warps, stages = tiles
        cfg = SearchConfig("registers", block_n, block_k, d_pad, use_dot, warps, stages)
    else:
        block_n, block_k, block_d, warps, stages = TUNED[("chunked", dt, 0, precision)][arch]
        cfg = SearchConfig("chunked", block_n, block_k, block_d, True, warps, stages)
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
    cfg = config or choose_config(dim, x.dtype, prep.precision, device_arch(x.device))
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
