"""Backend choice: which implementation runs an op, and why another one cannot.

A backend is a module-like object with four functions over validated input (rows ``[N, D]``, contiguous, on one
device, in the compute dtype float32 or float64; results in that dtype):

- ``nearest_code(x [N, D], codebook [K, D]) -> (codes int64 [N], sqdist [N])``
- ``residual_quantize(x [N, D], codebooks [L, K, D]) -> (quantized [N, D], codes int64 [N, L])``
- ``residual_decode(codes int64 [N, L'], codebooks [L, K, D]) -> quantized [N, D]``   (codes already range-checked)
- ``code_statistics(x [N, D], codes int64 [N], K) -> (counts [K], sums [K, D])``
- ``quantize_for_training(x [N, D], codebooks [L, K, D], level_sizes, num_active, row_levels=None) -> (quantized,
  codes, level_sqerr, commit_dir, counts, sums)``: the quantizer's training pass (contract in
  :mod:`fastrq.ops.training`; a backend without it gets its greedy search plus the walk written there)

plus ``unavailable_reason(device) -> str | None`` (None when it can run on tensors of that device).

Names: ``"reference"`` (naive, the oracle), ``"torch"`` (tiled, memory-bounded, runs anywhere), ``"triton"``
(``fastrq.kernels``: CUDA, or CPU under ``TRITON_INTERPRET=1``). ``"auto"`` picks triton for CUDA tensors when it is
usable, else torch; the environment variable ``FASTRQ_BACKEND`` overrides ``"auto"``.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

from ..errors import BackendUnavailableError
from . import environment

__all__ = ["BACKENDS", "resolve_backend", "backend_status", "triton_unavailable_reason"]

BACKENDS = ("reference", "torch", "triton")
_CPU = torch.device("cpu")
_MODULES = {"reference": "fastrq.ops.reference", "torch": "fastrq.ops.torch_backend", "triton": "fastrq.kernels.backend"}


def triton_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the triton backend cannot run on ``device`` (None: it can). Never initialises CUDA for a CPU device."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'fastrq[triton]')"
    interpret = environment.get("TRITON_INTERPRET", "0") == "1"
    if device is not None and device.type == "cpu":
        return None if interpret else "tensors are on the CPU and TRITON_INTERPRET=1 is not set"
    if device is not None and device.type != "cuda":
        return f"triton runs on CUDA devices (or the CPU under TRITON_INTERPRET=1), not on {device.type}"
    if interpret:
        return None
    if not torch.cuda.is_available():
        return "no CUDA device is available (and TRITON_INTERPRET=1 is not set)"
    return None


def _unavailable_reason(name: str, device: torch.device | None) -> str | None:
    if name == "triton":
        return triton_unavailable_reason(device)
    return None  # reference and torch run wherever torch runs


def _load(name: str) -> ModuleType:
    return importlib.import_module(_MODULES[name])


@functools.lru_cache(maxsize=1)
def _torch_backend() -> ModuleType:
    return _load("torch")


def resolve_backend(backend: str, device: torch.device) -> ModuleType:
    """The backend module that runs on ``device``.

    ``"auto"`` (or ``FASTRQ_BACKEND`` when set and ``backend`` is ``"auto"``) picks triton for CUDA tensors when it
    is usable and torch otherwise. An explicit name that cannot run raises :class:`BackendUnavailableError` with the
    reason; an unknown name raises it listing the known ones.
    """
    if backend == "auto":
        backend = environment.get("FASTRQ_BACKEND", "auto") or "auto"
        if backend == "auto":
            if device == _CPU or device.type == "cpu":  # the comparison first: ``device.type`` costs ~0.3 µs
                return _torch_backend()
            if device.type == "cuda" and triton_unavailable_reason(device) is None:
                return _load("triton")
            return _load("torch")
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'")
    reason = _unavailable_reason(backend, device)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} cannot run on {device}: {reason}")
    return _load(backend)


def backend_status(device: torch.device | None = None) -> dict[str, str | None]:
    """{backend name: None if usable, else the reason} for tensors on ``device`` (default: CUDA if present)."""
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return {name: _unavailable_reason(name, device) for name in BACKENDS}
