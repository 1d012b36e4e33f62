"""torch.distributed helpers for the quantizer's state updates.

Rules the modules keep (each is a hang or a divergence elsewhere):
- whether to synchronise is decided at every step (``sync_distributed="auto"``: the default process group is
  initialised and has more than one rank), never once at construction;
- collectives run only inside state updates, which run only in training mode with autograd enabled, so eval and
  ``no_grad`` forwards never communicate;
- one ``all_reduce`` per training step carries every level's statistics (plus the replacement candidates and flags).

At exit: a gloo worker thread may still hold the last all-reduced tensor for a moment after the collective has
returned. If it lets go while the interpreter is finalising, releasing the tensor's Python object needs the GIL and
the process aborts ("terminate called without an active exception"). So the last few all-reduced tensors are kept,
and an ``atexit`` hook (run before finalisation, while other threads can still take the GIL) waits up to a second
for the backend to let go of them.
"""

from __future__ import annotations

import atexit
import time

import torch

from ..errors import InvalidArgumentError

__all__ = ["should_sync", "rank_and_world", "all_reduce_sum_", "held_outside_python", "still_held", "hand_over_gil"]

EXIT_WAIT_S = 1.0  # the atexit hook's longest wait for the backend to let go of the last all-reduced tensors
GIL_HANDOVER_S = 0.005  # after the last release, the releasing thread may still need the GIL
RECENT_LIMIT = 8  # all-reduced tensors kept (only those a backend still holds)
_recent: list[torch.Tensor] = []
_exit_hook_registered = False


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def should_sync(mode: str | bool) -> bool:
    """Resolve ``sync_distributed`` (``"auto"``, True, False) for this step."""
    if mode == "auto":
        if not _initialized():
            return False
        import torch.distributed as dist

        return dist.get_world_size() > 1
    if mode is True:
        if not _initialized():
            raise InvalidArgumentError("sync_distributed=True but torch.distributed is not initialised")
        return True
    if mode is False:
        return False
    raise InvalidArgumentError(f"sync_distributed must be 'auto', True or False, got {mode!r}")


def rank_and_world(sync: bool) -> tuple[int, int]:
    if not sync:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def all_reduce_sum_(flat: torch.Tensor, sync: bool) -> torch.Tensor:
    """Sum ``flat`` over all ranks in place (one collective); a no-op without sync."""
    if sync:
        import torch.distributed as dist

        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        finally:
            _remember(flat)
    return flat


def held_outside_python(tensor: torch.Tensor) -> bool:
    """Whether anything besides its Python object (a backend's work, an autograd graph, a view of it) holds
    ``tensor`` itself from C++ (False where this torch has no ``Tensor._use_count``: then nothing can wait)."""
    use_count = getattr(tensor, "_use_count", None)
    return use_count is not None and use_count() > 1


def still_held(tensors: list[torch.Tensor], timeout_s: float) -> list[torch.Tensor]:
    """Wait (≤ ``timeout_s``) until C++ holds none of ``tensors``; the ones it still holds (empty: all released)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tensors = [t for t in tensors if held_outside_python(t)]
        if not tensors or time.monotonic() > deadline:
            return tensors
        time.sleep(0.001)


def hand_over_gil() -> None:
    """Sleep once with the GIL released: the thread that dropped a tensor's last C++ reference releases its Python
    object next, under the GIL, and must get it before anything can start the interpreter's shutdown."""
    time.sleep(GIL_HANDOVER_S)


def _remember(flat: torch.Tensor) -> None:
    """Keep ``flat`` for the exit hook if a backend still holds it, with the earlier ones it still holds (at most
    RECENT_LIMIT; one it has let go of is not kept, so no step's statistics outlive the step for nothing)."""
    global _recent, _exit_hook_registered
    _recent = [t for t in (*_recent, flat) if held_outside_python(t)][-RECENT_LIMIT:]
    if not _exit_hook_registered:
        atexit.register(wait_for_backend_at_exit)
        _exit_hook_registered = True


def wait_for_backend_at_exit(timeout_s: float = EXIT_WAIT_S) -> bool:
    """Wait (≤ ``timeout_s``) until no backend thread holds one of the last all-reduced tensors, then hand the GIL
    over once; True if none is held. Registered with ``atexit`` by the first synchronised step."""
    global _recent
    _recent = still_held(_recent, timeout_s)
    hand_over_gil()
    return not _recent
