"""``python -m fastrq.info`` / ``fastrq info``: versions and which backends are usable here, and why not.

Paste its output into bug reports.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch

from .ops.backends import backend_status

ENVIRONMENT_VARIABLES = (
    "FASTRQ_BACKEND",
    "FASTRQ_CPU_KERNEL",
    "FASTRQ_CACHE_DIR",
    "FASTRQ_FAISS",
    "FASTRQ_BF16_SEARCH",
    "FASTRQ_TRITON_PRECISION",
    "FASTRQ_TRITON_SELFCHECK",
    "TRITON_INTERPRET",
    "FASTRQ_DATA",
)


def _native_threads(cpu_build) -> str:
    """The native kernel's vector width here and how it splits rows across threads."""
    lib = cpu_build.library()
    lanes = lib.fastrq_lanes()
    width = f"{lanes}-float vectors ({'AVX-512' if lanes == 16 else 'AVX2 or narrower'}), "
    bf16 = "certified bf16 first pass built (AVX512-BF16), " if lib.fastrq_bf16_search() else ""
    return width + bf16 + ("rows split on torch's OpenMP threads" if lib.fastrq_openmp()
                           else "built without OpenMP: rows split on Python threads")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    """The report as text. Does not initialise CUDA unless torch already sees a device."""
    from . import __version__

    lines = [
        f"fastrq {__version__}",
        f"python {sys.version.split()[0]} on {platform.platform()}",
        f"torch {torch.__version__} (threads: {torch.get_num_threads()}, CPU capability: "
        f"{torch.backends.cpu.get_cpu_capability()})",
        f"cuda available: {torch.cuda.is_available()}",
    ]
    for dist in ("triton", "numpy", "faiss-cpu", "vector-quantize-pytorch", "torchvision", "safetensors"):
        lines.append(f"{dist}: {_version(dist)}")
    from .kernels.cpu import build as cpu_build
    from .ops import torch_backend

    native = cpu_build.unavailable_reason()
    lines.append(
        "torch backend on the CPU, float32, D ≤ 32 (D ≤ 64 with K ≤ 1,024): "
        + (f"native kernel (kernels/cpu, {_native_threads(cpu_build)})" if native is None
           else f"native kernel unavailable ({native}); ")
        + ("" if native is None else ("faiss' fused kernel" if torch_backend._faiss() is not None else "tiled torch GEMM"))
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        lines.append(f"backends for {device.type} tensors:")
        for name, reason in backend_status(device).items():
            lines.append(f"  {name:<10} {'usable' if reason is None else 'unavailable: ' + reason}")
    lines.append("environment:")
    for var in ENVIRONMENT_VARIABLES:
        lines.append(f"  {var}={os.environ.get(var, '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
