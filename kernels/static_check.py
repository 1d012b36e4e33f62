"""Compile every kernel for NVIDIA targets without a GPU and read its resource usage.

``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32))`` runs the whole
NVIDIA pipeline (TTIR → TTGIR → LLVM → PTX → cubin through the bundled ptxas) on a machine with no GPU or driver.
The bundled ``cuobjdump --dump-resource-usage`` then reads registers, stack frame, local memory and shared memory
from the cubin, and the PTX shows which multiply instructions were emitted (``mma`` on sm_80, ``wgmma`` on sm_90).

:func:`kernel_configs` lists the kernels at the configurations the launchers pick by default (from
:func:`fastrq.kernels.search.choose_config`), for each precision mode; :func:`compile_report` compiles one for one
target. ``python -m benchmarks.kernel_report`` prints the table; ``tests/test_kernel_report.py`` asserts that all
compile for sm_80 and sm_90 with no spills (stack frame and local memory zero).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import commitment, decode, search_kernels, statistics
from .search import choose_config

__all__ = ["KernelConfig", "CompileReport", "kernel_configs", "compile_report", "TARGETS", "cuobjdump_path"]

TARGETS = {"sm_80": GPUTarget("cuda", 80, 32), "sm_90": GPUTarget("cuda", 90, 32)}

_TYPE = {torch.float32: "fp32", torch.float64: "fp64"}


@dataclass(frozen=True)
class KernelConfig:
    """One kernel at one compile-time configuration."""

    name: str  # kernel name
    label: str  # what the configuration is (shape class, precision)
    fn: object  # the @triton.jit function
    signature: dict  # argument -> Triton type ("*fp32", "i32", "constexpr")
    constexprs: dict  # constexpr argument -> value
    num_warps: int = 4
    num_stages: int = 2
    uses_dot: bool = False  # tl.dot on tensor-core-eligible operands: mma/wgmma expected in the PTX


@dataclass
class CompileReport:
    config: KernelConfig
    target: str
    ok: bool
    error: str = ""
    registers: int = -1
    stack: int = -1
    local: int = -1
    shared: int = -1  # static shared memory from cuobjdump
    shared_launch: int = -1  # shared memory Triton requests at launch (metadata.shared)
    mma: bool = False
    wgmma: bool = False
    ptx_ops: dict = field(default_factory=dict)

    @property
    def spills(self) -> bool:
        return self.stack != 0 or self.local != 0


def _search_signature(dtype: torch.dtype, chunked: bool) -> dict:
    fp = "*" + _TYPE[dtype]
    sig = {
        "x_ptr": fp, "codebooks_ptr": fp, "centred_ptr": fp, "half_norms_ptr": fp, "shifts_ptr": fp,
        "canon_ptr": "*i32",
    }
    if chunked:
        sig["residual_ptr"] = fp
    sig.update({"codes_ptr": "*i64", "quantized_ptr": fp, "sqdist_ptr": fp, "level_err_ptr": fp,
                "N": "i32", "K": "i32", "D": "i32", "L": "i32"})
    return sig


# (dtype, D, precision modes) compiled per target: every D class of choose_config's table
SEARCH_CLASSES = [
    (torch.float32, 1, ["ieee"]),
    (torch.float32, 4, ["ieee"]),
    (torch.float32, 8, ["ieee"]),
    (torch.float32, 16, ["ieee"]),
    (torch.float32, 32, ["ieee", "tf32x3", "tf32", "bf16"]),
    (torch.float32, 64, ["ieee", "tf32x3", "tf32", "bf16"]),
    (torch.float32, 128, ["ieee", "tf32x3", "tf32", "bf16"]),
    (torch.float32, 256, ["ieee", "tf32x3", "tf32", "bf16"]),
    (torch.float64, 1, ["ieee"]),
    (torch.float64, 4, ["ieee"]),
    (torch.float64, 8, ["ieee"]),
    (torch.float64, 16, ["ieee"]),
    (torch.float64, 32, ["ieee"]),
    (torch.float64, 64, ["ieee"]),
    (torch.float64, 256, ["ieee"]),
]


def kernel_configs(target: str = "sm_80") -> list[KernelConfig]:
    """The kernels at the configurations the launchers pick on ``target`` (per D class and precision mode)."""
    configs: list[KernelConfig] = []
    flags = dict(HAS_CANON=True, WRITE_SQDIST=True, WRITE_LEVEL_ERR=True)  # the largest variant
    for dtype, dim, precisions in SEARCH_CLASSES:
        for precision in precisions:
            cfg = choose_config(dim, dtype, precision, target)
            label = f"{_TYPE[dtype]} D={dim} {precision}"
            if cfg.kernel == "registers":
                fn = search_kernels.rq_registers_kernel
                sig = _search_signature(dtype, chunked=False)
                const = dict(BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, D_PAD=cfg.block_d, PRECISION=precision,
                             USE_DOT=cfg.use_dot, WRITE_QUANTIZED=True, **flags)
            else:
                fn = search_kernels.rq_chunked_kernel
                sig = _search_signature(dtype, chunked=True)
                const = dict(BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, BLOCK_D=cfg.block_d, PRECISION=precision,
                             **flags)
            sig.update({k: "constexpr" for k in const})
            label += f" [{cfg.block_n}x{cfg.block_k}x{cfg.block_d}, {cfg.num_warps}w{cfg.num_stages}s]"
            tensor_cores = cfg.use_dot and dtype == torch.float32 and precision != "ieee"
            configs.append(KernelConfig(fn.__name__, label, fn, sig, const, cfg.num_warps, cfg.num_stages,
                                        uses_dot=tensor_cores))
    for dtype in (torch.float32, torch.float64):
        fp = "*" + _TYPE[dtype]
        const = dict(BLOCK_N=decode.DECODE_BLOCK_N, BLOCK_D=decode.DECODE_BLOCK_D)
        configs.append(KernelConfig(
            "decode_kernel", f"{_TYPE[dtype]} [{decode.DECODE_BLOCK_N}x{decode.DECODE_BLOCK_D}]", decode.decode_kernel,
            {"codes_ptr": "*i64", "codebooks_ptr": fp, "out_ptr": fp, "N": "i32", "K": "i32", "D": "i32",
             "LC": "i32", "BLOCK_N": "constexpr", "BLOCK_D": "constexpr"}, const))
        const = dict(BLOCK_N=commitment.COMMITMENT_BLOCK_N, BLOCK_D=commitment.COMMITMENT_BLOCK_D)
        configs.append(KernelConfig(
            "commitment_backward_kernel", f"{_TYPE[dtype]} [{const['BLOCK_N']}x{const['BLOCK_D']}]",
            commitment.commitment_backward_kernel,
            {"x_ptr": fp, "codes_ptr": "*i64", "codebooks_ptr": fp, "level_grad_ptr": fp, "out_ptr": fp,
             "N": "i32", "K": "i32", "D": "i32", "L": "i32", "BLOCK_N": "constexpr", "BLOCK_D": "constexpr"}, const))
        configs.append(KernelConfig(
            "segment_sum_kernel", f"{_TYPE[dtype]} [{statistics.SEGMENT_BLOCK_R}x{statistics.STAT_BLOCK_D}]",
            statistics.segment_sum_kernel,
            {"x_ptr": fp, "order_ptr": "*i64", "starts_ptr": "*i64", "counts_ptr": "*i64", "sums_ptr": fp,
             "D": "i32", "BLOCK_R": "constexpr", "BLOCK_D": "constexpr"},
            dict(BLOCK_R=statistics.SEGMENT_BLOCK_R, BLOCK_D=statistics.STAT_BLOCK_D)))
    configs.append(KernelConfig(
        "atomic_sums_kernel", f"fp32 [{statistics.ATOMIC_BLOCK_N}x{statistics.STAT_BLOCK_D}] (opt-in)",
        statistics.atomic_sums_kernel,
        {"x_ptr": "*fp32", "codes_ptr": "*i64", "sums_ptr": "*fp32", "N": "i32", "D": "i32",
         "BLOCK_N": "constexpr", "BLOCK_D": "constexpr"},
        dict(BLOCK_N=statistics.ATOMIC_BLOCK_N, BLOCK_D=statistics.STAT_BLOCK_D)))
    return configs


def cuobjdump_path() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def compile_report(config: KernelConfig, target: str) -> CompileReport:
    """Compile ``config`` for ``target`` ("sm_80" / "sm_90") and read its resources. Never raises for a
    compile failure: the report carries ``ok=False`` and the error text."""
    report = CompileReport(config, target, ok=False)
    try:
        source = ASTSource(config.fn, config.signature, constexprs=config.constexprs)
        compiled = triton.compile(source, target=TARGETS[target],
                                  options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    except Exception as exc:  # report, do not hide: the table and the test show the message
        report.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        return report
    ptx = compiled.asm["ptx"]
    report.shared_launch = int(compiled.metadata.shared)
    report.mma = bool(re.search(r"\bmma\.sync", ptx))
    report.wgmma = "wgmma.mma_async" in ptx
    report.ptx_ops = {op: len(re.findall(pat, ptx)) for op, pat in
                      [("mma", r"\bmma\.sync"), ("wgmma", r"wgmma\.mma_async"), ("fma.f32", r"fma\.rn\.f32"),
                       ("fma.f64", r"fma\.rn\.f64"), ("atom", r"\batom\.")]}
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(compiled.asm["cubin"])
        cubin = handle.name
    try:
        out = subprocess.run([cuobjdump_path(), "--dump-resource-usage", cubin], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        report.error = f"cuobjdump failed: {exc}"
        return report
    finally:
        os.unlink(cubin)
    match = _USAGE.search(out)
    if match is None:
        report.error = f"cuobjdump printed no resource line: {out.strip()[:200]}"
        return report
    report.registers, report.stack, report.shared, report.local = (int(g) for g in match.groups())
    report.ok = True
    return report
