"""torch.distributed helpers for the quantizer's state updates.

Rules the modules keep (each is a hang or a divergence elsewhere):
- whether to synchronise is decided at every step (``sync_distributed="auto"``: the default process group is
  initialised and has more than one rank), never once at construction;
- collectives run only inside state updates, which run only in training mode with autograd enabled, so eval and
  ``no_grad`` forwards never communicate;
- one ``all_reduce`` per training step carries every level's statistics (plus the replacement candidates and flags).
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError

__all__ = ["should_sync", "rank_and_world", "all_reduce_sum_"]


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

        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat
