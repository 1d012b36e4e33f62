"""Zeroed output buffers recycled between calls, for the large statistics a training step allocates and drops.

A fresh CPU tensor of more than a few hundred KiB comes from ``mmap``: its first touch page-faults every 4 KiB page,
and freeing it unmaps the pages again (a TLB shootdown on every core that touched them). The EMA statistics
``sums [L, K, D]`` of an EnCodec-like step (L = 8, K = 1,024, D = 128: 4 MiB) cost about 1 ms of a 7 ms step that
way (2026-12-01: ~1,000 page faults a step). :func:`zeros` hands out the tensor of an earlier call again, zeroed,
when nothing but this pool refers to it any more:

- no Python reference but the pool's (``sys.getrefcount``),
- no other C++ holder of the tensor (autograd, a container: ``Tensor._use_count``),
- no view of its memory (the storage's use count).

Otherwise it allocates a new one (which the pool then keeps in its place), so a caller who keeps an output never
sees it change. Per thread, for the last :data:`SHAPES` shapes, and only from :data:`MIN_BYTES` (smaller tensors
come from malloc's free lists and cost nothing to allocate).
"""

from __future__ import annotations

import math
import sys
import threading

import torch

__all__ = ["zeros", "empty", "MIN_BYTES", "SHAPES"]

MIN_BYTES = 1 << 18  # below this, a fresh torch.zeros is as cheap (malloc reuses freed memory)
SHAPES = 8  # per-thread buffers kept (a step uses one or two shapes per quantizer)

_POOL = threading.local()


def _python_references(tensor: torch.Tensor) -> int:
    return sys.getrefcount(tensor)


def _calibrated_references() -> int:
    """What :func:`_python_references` reads for a tensor held only by a dict and one local name (the pool's case
    in :func:`zeros`), measured the same way, so that the check follows the interpreter's own counting."""
    holder = {0: torch.empty(0)}
    kept = holder[0]
    return _python_references(kept)


_EXCLUSIVE_REFERENCES = _calibrated_references()


def _no_other_holder(tensor: torch.Tensor) -> bool:
    """No C++ holder of the tensor but its Python object, and no view of its memory."""
    use_count = getattr(tensor, "_use_count", None)
    if use_count is None:  # a torch without the introspection: never reuse
        return False
    # the temporary storage object below holds one reference of its own
    return use_count() == 1 and torch._C._storage_Use_Count(tensor.untyped_storage()._cdata) == 2


def zeros(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A zero CPU tensor of ``shape`` and ``dtype``, contiguous: an earlier one of this thread's pool when no one
    else refers to it any more, else a new one."""
    return _take(tuple(shape), dtype, True)


def empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """As :func:`zeros`, but the contents are undefined (scratch that the caller overwrites)."""
    return _take(tuple(shape), dtype, False)


def _take(shape: tuple[int, ...], dtype: torch.dtype, zero: bool) -> torch.Tensor:
    if math.prod(shape) * dtype.itemsize < MIN_BYTES:
        return torch.zeros(*shape, dtype=dtype) if zero else torch.empty(*shape, dtype=dtype)  # sizes unpacked: faster
    pool = getattr(_POOL, "value", None)
    if pool is None:
        pool = _POOL.value = {}
    key = (shape, dtype)
    kept = pool.get(key)
    if kept is not None and _python_references(kept) == _EXCLUSIVE_REFERENCES and _no_other_holder(kept):
        return kept.zero_() if zero else kept
    del kept
    fresh = torch.zeros(shape, dtype=dtype)  # touched once here, reused untouched-by-the-OS afterwards
    pool.pop(key, None)
    while len(pool) >= SHAPES:
        pool.pop(next(iter(pool)))
    pool[key] = fresh
    return fresh
