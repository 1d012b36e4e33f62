"""Host launchers of the search kernel: nearest code, greedy residual quantization, and the search + walk + level
errors of the training step, each one launch for all levels.

All functions take validated input: rows ``x [N, D]`` contiguous, codebooks ``[L, K, D]`` contiguous, same device,
dtype float32 or float64 (results in that dtype).

Configuration (:func:`choose_config`): the kernel mode follows from (D, dtype, precision) (:func:`kernel_mode`); the
tiles come from a table keyed on (D class, precision class, arch) (:data:`TILES`, every entry compiled spill-free by
``benchmarks/kernel_report.py`` under the run-time specialization), then adjusted deterministically for K (no code
tile wider than the padded K) and N (smaller row tiles until the grid has a program for every SM, down to the
smallest tile the MMA shape allows). A timed table (:data:`TIMED`, filled from a JSON file that
``benchmarks/gpu_validate.sh`` writes on a GPU, keyed on (D class, K bucket, N bucket, precision, arch)) takes
precedence when present. Shared memory is checked against the target's per-block limit (:data:`SHARED_LIMIT`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

import torch
import triton

from fastrq.errors import InvalidArgumentError
from fastrq.ops import environment

from . import _alloc
from .precision import resolve_precision
from .prepare import FMA_MAX_D, PreparedCodebooks, prepare_codebooks
from .search_kernels import rq_large_kernel, rq_search_kernel

__all__ = [
    "SearchConfig",
    "SearchLaunch",
    "TILES",
    "TIMED",
    "SHARED_LIMIT",
    "SM_COUNT",
    "ARCHS",
    "device_arch",
    "kernel_mode",
    "padded_dim",
    "choose_config",
    "search_launch",
    "nearest_code",
    "residual_quantize",
    "search_walk",
    "level_errors",
    "resolve_config",
    "fallback_mode",
    "CERTIFIED_CANDIDATES",
]

ARCHS = ("sm_80", "sm_90", "sm_100", "sm_120")
# Largest dynamic shared memory one block may use (opt-in), per target: A100 163 KiB, H100 / B200 227 KiB,
# consumer Ampere / Ada / Blackwell (sm_86, sm_89, sm_120) 99 KiB.
SHARED_LIMIT = {"sm_80": 166912, "sm_86": 101376, "sm_90": 232448, "sm_100": 232448, "sm_120": 101376}
# Multiprocessors of the reference part of each target (the device's own count is used at run time).
SM_COUNT = {"sm_80": 108, "sm_86": 84, "sm_90": 132, "sm_100": 148, "sm_120": 170}
CERTIFIED_CANDIDATES = 2
# From this padded D on, the row tile does not fit in registers: the "large" kernel (scratch, D in chunks of 64).
LARGE_MIN_DP = 256
# The certified mode (a bf16 pass and an exact re-search in one program) up to this padded D; tf32x3 above.
CERTIFIED_MAX_DP = 64
LARGE_BLOCK_D = 64


@dataclass(frozen=True)
class SearchConfig:
    """Tile sizes of one launch (compile-time constants)."""

    block_n: int  # rows per program
    block_k: int  # codes per tile
    num_warps: int = 4
    num_stages: int = 2
    kernel: str = "registers"  # "registers" (the row tile in registers) or "large" (scratch, D in chunks)
    block_d: int = 0  # the D chunk of the "large" kernel
    hoist_a: bool = True  # "large": the residual operand loaded once per level (shared memory) or per code tile


# (mode class, padded D) -> target -> tile fields, generated from the tile sweep (kernels/tiles.py, written by
# ``python -m benchmarks.kernel_report --sweep benchmarks/results/kernels/tile_sweep.json``). Mode classes: "fma"
# (ieee D ≤ 4), "fma64" (float64 D ≤ 4), "f64" (float64 tl.dot), and the float32 modes. A padded D the sweep did not
# compile takes the entry of the next larger swept D of its class (a tile spill-free there has fewer values per
# thread here), or the largest; sm_86 / sm_120 take sm_80's entry, sm_100 sm_90's, then shrink to their shared
# memory. A class the sweep has no spill-free entry for takes _FALLBACK (the static report then shows its spills).
from .tiles import TILES  # noqa: E402

_FALLBACK = {"block_n": 64, "block_k": 64, "num_warps": 4, "num_stages": 2, "kernel": "registers", "block_d": 0,
             "hoist_a": True}
_BASE_ARCH = {"sm_80": "sm_80", "sm_86": "sm_80", "sm_90": "sm_90", "sm_100": "sm_90", "sm_120": "sm_80"}


def _tile(cls: str, dp: int, arch: str) -> dict:
    swept = sorted(d for (c, d) in TILES if c == cls)
    base = _BASE_ARCH.get(arch, "sm_80")
    if not swept:
        fields = dict(_FALLBACK)
    else:
        larger = [d for d in swept if d >= dp]
        fields = dict(TILES[(cls, larger[0] if larger else swept[-1])].get(base, _FALLBACK))
    if dp >= LARGE_MIN_DP and fields["kernel"] != "large":
        fields.update(kernel="large", block_d=LARGE_BLOCK_D, hoist_a=cls != "tf32x3")
    return fields


# Timed table: (mode class, padded D, K bucket, N bucket, arch) -> SearchConfig, from a GPU run.
TIMED: dict[tuple[str, int, int, int, str], SearchConfig] = {}
TIMED_PATH = os.path.join(os.path.dirname(__file__), "timed_configs.json")


def load_timed_table(path: str = TIMED_PATH) -> int:
    """Read a timed config table (JSON list of {mode, dp, k_bucket, n_bucket, arch, block_n, block_k, num_warps,
    num_stages}) into :data:`TIMED`; returns the number of entries (0 when the file does not exist)."""
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        entries = json.load(handle)
    for e in entries:
        TIMED[(e["mode"], e["dp"], e["k_bucket"], e["n_bucket"], e["arch"])] = SearchConfig(
            e["block_n"], e["block_k"], e["num_warps"], e["num_stages"])
    return len(entries)


load_timed_table()


def device_arch(device: torch.device) -> str:
    """The tuning target of a device: sm_80 (also sm_87 and the CPU interpreter, where tiles only change speed),
    sm_86 (sm_86 / sm_89: Ampere / Ada consumer parts with 99 KiB of shared memory), sm_90, sm_100, sm_120."""
    if device.type != "cuda":
        return "sm_80"
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 12:
        return "sm_120"
    if major >= 10:
        return "sm_100"
    if major == 9:
        return "sm_90"
    return "sm_86" if (major, minor) in ((8, 6), (8, 9)) else "sm_80"


def _interpreted() -> bool:
    return environment.get("TRITON_INTERPRET", "0") == "1"


def kernel_mode(dim: int, dtype: torch.dtype, precision: str) -> str:
    """The kernel's MODE for rows of dimension ``dim``: "fma" for D ≤ 4 in ieee and float64 (exact, CUDA cores),
    float64 "ieee" (tl.dot, DMMA), else the precision mode (tl.dot; at small D the tensor cores work on a K of 8 or
    16 padded columns, cheap beside the epilogue)."""
    if dim <= FMA_MAX_D and (dtype == torch.float64 or precision == "ieee"):
        return "fma"
    if dtype == torch.float64:
        return "ieee"
    if precision == "certified" and triton.next_power_of_2(dim) > CERTIFIED_MAX_DP:
        return "tf32x3"  # two search loops in one program spill beyond D = 64: exact tf32x3 instead
    return precision


def padded_dim(dim: int, mode: str, dtype: torch.dtype = torch.float32) -> int:
    """Columns of the register tile: the next power of two ≥ D, and at least tl.dot's smallest K where it runs
    (float32 8, bf16 operands 16, float64 4)."""
    dp = triton.next_power_of_2(max(dim, 1))
    if mode == "fma":
        return dp
    floor = 4 if dtype == torch.float64 else 16 if mode in ("bf16", "certified") else 8
    return max(floor, dp)


def _mode_class(mode: str, dtype: torch.dtype) -> str:
    if mode == "fma":
        return "fma64" if dtype == torch.float64 else "fma"
    return "f64" if dtype == torch.float64 else mode


_OPERAND_BYTES = {"tf32x3": 8, "tf32": 4, "ieee": 4, "bf16": 2, "certified": 2, "f64": 8}


def _shared_bytes(cfg: SearchConfig, mode: str, dp: int, itemsize: int, arch: str = "sm_90") -> int:
    """Shared memory the launch will ask for, as Triton lays it out (checked against the compiled metadata by
    benchmarks/kernel_report.py): the residual operand A [BLOCK_N, DP] once, plus the code tile B [BLOCK_K, DP] per
    pipeline stage (sm_90 and later: num_stages buffers; sm_80: num_stages − 1). Certified also holds its exact
    (tf32x3) re-search's operands. The FMA path uses none beyond a few scalars."""
    if mode == "fma":
        return 0
    per = _OPERAND_BYTES["f64" if itemsize == 8 else mode]
    buffers = cfg.num_stages if arch not in ("sm_80", "sm_86") else max(cfg.num_stages - 1, 1)
    if cfg.kernel == "large" and not cfg.hoist_a:  # a run-time chunk loop: one [rows + codes, BLOCK_D] chunk a stage
        return (cfg.block_n + cfg.block_k) * cfg.block_d * per * buffers
    total = (cfg.block_n + cfg.block_k * buffers) * dp * per
    if mode == "certified":
        total += (cfg.block_n + cfg.block_k * buffers) * dp * _OPERAND_BYTES["tf32x3"]
    return total


def _check_config(cfg: SearchConfig, mode: str, dp: int) -> None:
    """Clear errors for configurations the kernel cannot compile (instead of a Triton compile error)."""
    for name in ("block_n", "block_k", "num_warps"):
        value = getattr(cfg, name)
        if value < 1 or value & (value - 1):
            raise InvalidArgumentError(f"{name}={value}: must be a power of two")
    if cfg.num_stages < 1:
        raise InvalidArgumentError(f"num_stages={cfg.num_stages}: must be ≥ 1")
    if mode != "fma" and (cfg.block_n < 16 or cfg.block_k < 16):
        raise InvalidArgumentError(
            f"block_n={cfg.block_n}, block_k={cfg.block_k}: tl.dot ({mode}) needs tiles of at least 16 × 16 "
            "(D ≤ 8 runs without tl.dot and takes any power of two)")
    if mode in ("bf16", "certified") and dp < 16:
        raise InvalidArgumentError(f"bf16 operands need a padded D (block_d) of at least 16, got {dp}")


def choose_config(dim: int, dtype: torch.dtype, precision: str = "ieee", arch: str = "sm_80", *,
                  num_codes: int | None = None, num_rows: int | None = None, num_sms: int | None = None,
                  **overrides) -> SearchConfig:
    """The tiles for rows of dimension ``dim`` searched in ``precision`` on ``arch`` over ``num_codes`` codes and
    ``num_rows`` rows (either may be None: the table's tile). Overridable field by field (e.g. ``block_k=16`` in
    tests); an override the kernel cannot compile raises :class:`~fastrq.errors.InvalidArgumentError`."""
    mode = kernel_mode(dim, dtype, precision)
    dp = padded_dim(dim, mode, dtype)
    cls = _mode_class(mode, dtype)
    k_bucket = triton.next_power_of_2(max(num_codes or 1, 1))
    n_bucket = triton.next_power_of_2(max(num_rows or 1, 1))
    timed = TIMED.get((cls, dp, k_bucket, n_bucket, arch)) if num_codes and num_rows else None
    if timed is not None:
        cfg = timed
    else:
        fields = _tile(cls, dp, arch)
        block_n, block_k = fields["block_n"], fields["block_k"]
        min_tile = 1 if mode == "fma" else 16
        if num_codes is not None:
            block_k = max(min_tile, min(block_k, k_bucket))
        if num_rows is not None:
            # enough programs for the SMs: halve the row tile while the grid is short, down to 32 rows for tl.dot
            # (64 rows per warp group for wgmma: Triton falls back to mma below that) and 16 for the FMA path
            sms = num_sms or SM_COUNT.get(arch, 108)
            floor = 16 if mode == "fma" else 32
            while block_n > floor and triton.cdiv(num_rows, block_n) < sms:
                block_n //= 2
        cfg = SearchConfig(**{**fields, "block_n": block_n, "block_k": block_k})
        itemsize = 8 if dtype == torch.float64 else 4
        limit = SHARED_LIMIT.get(arch, SHARED_LIMIT["sm_80"])
        while _shared_bytes(cfg, mode, dp, itemsize, arch) > limit and cfg.num_stages > 1:
            cfg = replace(cfg, num_stages=cfg.num_stages - 1)
        while _shared_bytes(cfg, mode, dp, itemsize, arch) > limit and cfg.block_k > 16:
            cfg = replace(cfg, block_k=cfg.block_k // 2)
        while _shared_bytes(cfg, mode, dp, itemsize, arch) > limit and cfg.block_n > 16:
            cfg = replace(cfg, block_n=cfg.block_n // 2)
    cfg = replace(cfg, **overrides) if overrides else cfg
    _check_config(cfg, mode, dp)
    return cfg


@dataclass
class SearchLaunch:
    """One launch of :func:`rq_search_kernel`, built without launching (the static check compiles it)."""

    grid: tuple
    args: tuple
    constexprs: dict
    outputs: dict = field(default_factory=dict)
    kernel: object = rq_search_kernel

    def run(self):
        """Launch; returns Triton's compiled kernel (None when the grid is empty). :data:`LAUNCH_HOOKS` see it."""
        if not self.grid[0]:
            return None
        compiled = self.kernel[self.grid](*self.args, **self.constexprs)
        for hook in LAUNCH_HOOKS:
            hook(self, compiled)
        return compiled


# Callables (launch, compiled kernel) run after every search launch: the GPU kit records run-time registers.
LAUNCH_HOOKS: list = []


def search_launch(
    x: torch.Tensor,
    prep: PreparedCodebooks,
    cfg: SearchConfig,
    *,
    num_active: int | None = None,
    num_levels_out: int | None = None,
    row_levels: torch.Tensor | None = None,
    want_quantized: bool = False,
    want_commit: bool = False,
    want_sqdist: bool = False,
    want_level_err: bool = False,
    want_diag: bool = False,
    fallback: str = "tf32x3",
) -> SearchLaunch:
    """Allocate the outputs and build the launch (works on meta tensors, for the static check).

    ``outputs["level_err"]`` holds per-program partials (``[programs, L]``, or ``[programs, L, chunks]`` for the
    large kernel): :func:`level_errors` sums them in a fixed order."""
    n, dim = x.shape
    num_levels, num_codes, _ = prep.codebooks.shape
    levels_out = num_levels if num_levels_out is None else num_levels_out
    active = levels_out if num_active is None else num_active
    device, dtype = x.device, x.dtype
    programs = triton.cdiv(n, cfg.block_n)
    chunks = prep.padded_dim // cfg.block_d if cfg.kernel == "large" else 1
    out = {"codes": _alloc.empty(n, levels_out, dtype=torch.int64, device=device)}
    if want_quantized:
        out["quantized"] = _alloc.empty(n, dim, dtype=dtype, device=device)
    if want_commit:
        out["commit_dir"] = _alloc.empty(n, dim, dtype=dtype, device=device)
    if want_sqdist:
        out["sqdist"] = _alloc.empty(n, dtype=dtype, device=device)
    if want_level_err:
        shape = (programs, levels_out, chunks) if cfg.kernel == "large" else (programs, levels_out)
        out["level_err"] = _alloc.empty(*shape, dtype=dtype, device=device)
    if want_diag:
        out["diag"] = torch.zeros(programs, levels_out, dtype=torch.int32, device=device)
    mode = prep.mode
    if _interpreted() and mode in ("bf16", "certified"):
        mode = mode + "_emulated"  # see search_kernels: the interpreter's bf16 products are wrong
    ops = list(prep.operands) + [prep.operands[0]] * (4 - len(prep.operands))
    dummy = out["codes"]  # stands in for every pointer the kernel does not touch under its flags
    flags = dict(HAS_CANON=True, HAS_ROW_LEVELS=row_levels is not None, WRITE_QUANTIZED=want_quantized,
                 WRITE_COMMIT=want_commit, WRITE_SQDIST=want_sqdist, WRITE_LEVEL_ERR=want_level_err,
                 ASM=not _interpreted(), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    tail = (out["codes"], out.get("quantized", dummy), out.get("commit_dir", dummy), out.get("sqdist", dummy),
            out.get("level_err", dummy))
    sizes = (n, prep.padded_codes, num_codes, active, levels_out)
    rows_arg = row_levels if row_levels is not None else dummy
    if cfg.kernel == "large":
        dp = prep.padded_dim
        operand_dtype = ops[0].dtype if mode in ("bf16", "bf16_emulated") else dtype
        if mode == "bf16_emulated":
            operand_dtype = dtype  # the emulation keeps the rounded residual in fp32
        padded_rows = programs * cfg.block_n  # scratch rows for whole tiles: no masks on the scratch accesses
        residual = _alloc.empty(padded_rows, dp, dtype=dtype, device=device)  # scratch, filled by the kernel
        a = _alloc.empty(padded_rows, dp, dtype=operand_dtype, device=device)
        a2 = _alloc.empty(padded_rows, dp, dtype=dtype, device=device) if mode == "tf32x3" else a
        args = (x, prep.codebooks, ops[0], ops[1], prep.nh, prep.shifts, prep.canon, rows_arg, residual, a, a2,
                *tail, *sizes)
        constexprs = dict(D=dim, DP=dp, BLOCK_D=cfg.block_d, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, MODE=mode,
                          HOIST_A=cfg.hoist_a, **flags)
        return SearchLaunch((programs,), args, constexprs, out, rq_large_kernel)
    args = (
        x, prep.codebooks, ops[0], ops[1], ops[2], ops[3], prep.nh, prep.shifts, prep.canon,
        prep.cert if prep.cert is not None else prep.nh, rows_arg, *tail, out.get("diag", dummy), *sizes,
    )
    constexprs = dict(D=dim, DP=prep.padded_dim, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, MODE=mode,
                      FALLBACK=fallback, CANDIDATES=CERTIFIED_CANDIDATES, WRITE_DIAG=want_diag, **flags)
    return SearchLaunch((programs,), args, constexprs, out)


def level_errors(partials: torch.Tensor) -> torch.Tensor:
    """Σ over programs (and D chunks) of the per-program level errors, in a fixed order: ``[L]``."""
    total = partials.sum(dim=0)
    return total.sum(dim=-1) if total.dim() == 2 else total


def fallback_mode() -> str:
    """The exact mode the certified search falls back to: tf32x3 on GPUs, ieee under the interpreter."""
    return "ieee" if _interpreted() else "tf32x3"


def resolve_config(dim: int, dtype: torch.dtype, device: torch.device, num_codes: int, num_rows: int,
                   precision: str | None = None) -> tuple[str, str, SearchConfig]:
    """(precision mode, kernel mode, default configuration) of a call: what :func:`nearest_code` & co. run."""
    mode_precision = resolve_precision(precision, device, dtype)
    mode = kernel_mode(dim, dtype, mode_precision)
    cfg = choose_config(dim, dtype, mode_precision, device_arch(device), num_codes=num_codes, num_rows=num_rows,
                        num_sms=_sm_count(device))
    return mode_precision, mode, cfg


def _setup(x, codebooks, level_sizes, precision, config):
    n, dim = x.shape
    mode_precision, mode, cfg = resolve_config(dim, x.dtype, x.device, codebooks.shape[1], n, precision)
    cfg = config or cfg
    _check_config(cfg, mode, padded_dim(dim, mode, x.dtype))
    prep = prepare_codebooks(codebooks, level_sizes, mode, cfg.block_k, padded_dim(dim, mode, x.dtype), fallback_mode())
    return cfg, prep


_SMS: dict[int, int] = {}


def _sm_count(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, precision: str | None = None,
                 config: SearchConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebook [K, D] -> (codes int64 [N], sqdist [N]): codes[n] = argmin_k ‖x_n − codebook[k]‖²
    (smallest k among exact ties), sqdist[n] = Σ_d (x_n − codebook[c_n])² by the direct difference."""
    codebooks = codebook.unsqueeze(0)
    cfg, prep = _setup(x, codebooks, None, precision, config)
    launch = search_launch(x, prep, cfg, want_sqdist=True, fallback=fallback_mode())
    launch.run()
    return launch.outputs["codes"][:, 0], launch.outputs["sqdist"]


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor, *, precision: str | None = None,
                      config: SearchConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], codebooks [L, K, D] -> (quantized [N, D] = Σ_l C_l[c_l], codes int64 [N, L]), greedy, one launch:
    r_0 = x, c_l = argmin_k ‖r_l − C_l[k]‖², r_{l+1} = r_l − C_l[c_l]."""
    cfg, prep = _setup(x, codebooks, None, precision, config)
    launch = search_launch(x, prep, cfg, want_quantized=True, fallback=fallback_mode())
    launch.run()
    return launch.outputs["quantized"], launch.outputs["codes"]


def search_walk(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    level_sizes: list[int] | None,
    num_active: int,
    row_levels: torch.Tensor | None,
    *,
    precision: str | None = None,
    config: SearchConfig | None = None,
    want_diag: bool = False,
) -> dict:
    """The search part of the training step, one launch: {"codes" [N, L] (−1 skipped), "quantized" [N, D],
    "commit_dir" [N, D], "level_err" [programs, L] (per-program partials; sum over dim 0 in a fixed order),
    "diag" (certified: uncertified rows per program and level, with ``want_diag``)}."""
    cfg, prep = _setup(x, codebooks, level_sizes, precision, config)
    launch = search_launch(x, prep, cfg, num_active=num_active, row_levels=row_levels, want_quantized=True,
                           want_commit=True, want_level_err=True, want_diag=want_diag, fallback=fallback_mode())
    launch.run()
    return launch.outputs
