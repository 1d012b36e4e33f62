"""Large CPU buffers that an owner reuses across its own calls, for the statistics a training step allocates and
drops.

A fresh CPU tensor of more than a few hundred KiB comes from ``mmap``: its first touch page-faults every 4 KiB page,
and freeing it unmaps the pages again (a TLB shootdown on every core that touched them). The EMA statistics
``sums [L, K, D]`` of an EnCodec-like step (L = 8, K = 1,024, D = 128: 4 MiB) cost about 1 ms of a 7 ms step that
way (2026-12-01: ~1,000 page faults a step).

Reuse is explicit, never inferred: a :class:`Workspace` belongs to one owner (a quantizer module), which activates
it around the calls whose outputs it knows to be dead before its next activation (a training step's statistics die
in its own EMA update). While a workspace is active on this thread, :func:`zeros` and :func:`empty` hand out its
buffers: the i-th request of one (shape, dtype, inference mode) in an activation gets that key's i-th buffer, so
buffers that live at the same time never alias. Outside an activation (every functional op called by a user)
they return fresh tensors. A workspace is used by one activation at a time: a nested activation on the same
thread goes on with the outer one's requests (new indices, so still no aliasing), a concurrent one on another
thread gets fresh tensors.
"""

from __future__ import annotations

import math
import threading

import torch

__all__ = ["Workspace", "zeros", "empty", "MIN_BYTES"]

MIN_BYTES = 1 << 18  # below this, a fresh tensor is as cheap (malloc reuses freed memory without new pages)

_CURRENT = threading.local()


class Workspace:
    """Buffers kept for one owner across its activations (see the module docstring). Not part of any state dict:
    it holds scratch, and it is rebuilt empty on a copy or a load."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, list[torch.Tensor]] = {}
        self._taken: dict[tuple, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread, per enter: (activated, the previous workspace)

    def active(self) -> "Workspace":
        """``with workspace.active():`` hands out this workspace's buffers on this thread for the block (fresh
        tensors on another thread while it is already active). A plain context manager, not a generator: it runs
        every step."""
        return self

    def __enter__(self) -> "Workspace":
        entered = self._lock.acquire(blocking=False)
        self._entries().append((entered, getattr(_CURRENT, "value", None)))
        if entered:
            self._taken.clear()
            _CURRENT.value = self
        return self

    def __exit__(self, *exc) -> None:
        entered, previous = self._entries().pop()
        if entered:
            _CURRENT.value = previous
            self._lock.release()

    def _entries(self) -> list:
        entries = getattr(self._local, "entries", None)
        if entries is None:
            entries = self._local.entries = []
        return entries

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
        """(buffer, whether it is new) for the next request of ``shape`` and ``dtype`` in this activation."""
        key = (shape, dtype, torch.is_inference_mode_enabled())
        index = self._taken.get(key, 0)
        self._taken[key] = index + 1
        kept = self._buffers.setdefault(key, [])
        if index < len(kept) and kept[index].shape == shape and kept[index].is_contiguous():
            return kept[index], False
        fresh = torch.zeros(shape, dtype=dtype)  # touched once here; later activations reuse its pages
        if index < len(kept):
            kept[index] = fresh
        else:
            kept.append(fresh)
        return fresh, True

    def __deepcopy__(self, memo) -> "Workspace":
        return Workspace()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def zeros(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A zero contiguous CPU tensor: the active workspace's buffer for this request, else a new one."""
    tensor, fresh = _take(tuple(shape), dtype)
    return tensor if fresh else tensor.zero_()


def empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """As :func:`zeros`, but the contents are undefined (scratch that the caller overwrites)."""
    return _take(tuple(shape), dtype, zero=False)[0]


def _take(shape: tuple[int, ...], dtype: torch.dtype, zero: bool = True) -> tuple[torch.Tensor, bool]:
    workspace = getattr(_CURRENT, "value", None)
    if workspace is None or math.prod(shape) * dtype.itemsize < MIN_BYTES:
        # sizes unpacked: faster than a tuple argument
        return (torch.zeros(*shape, dtype=dtype) if zero else torch.empty(*shape, dtype=dtype)), True
    return workspace.take(shape, dtype)
