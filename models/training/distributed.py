"""The process group of a training run: one process, or DDP under ``torchrun`` (gloo on CPU, nccl on CUDA).

:class:`Distributed` knows this process's rank and world size (from ``torchrun``'s environment variables), its
device, and the few collectives the trainers need (barrier, gather of Python objects, sum, "any rank"). With one
process every collective is a no-op, so the training code is the same in both cases.

Teardown: a gloo worker thread can still hold the last collectives' tensors for a moment after the caller has
seen them complete (a barrier also holds the works that were in flight when it was issued). If the interpreter is
already finalising when that thread drops them, releasing their Python objects needs the GIL, the thread is made
to exit inside a destructor, and the process aborts ("terminate called without an active exception": 5 of about
130 runs of the 2-process DDP test on 2 loaded cores). :meth:`Distributed.close` therefore waits until the backend
holds none of the tensors this object's collectives handed it before the process group is destroyed. The
quantizer's own per-step ``all_reduce`` is covered by :mod:`fastrq.ops.distributed`'s exit hook.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from typing import Any

import torch

from fastrq.errors import InvalidArgumentError
from fastrq.ops.distributed import hand_over_gil, held_outside_python, still_held

__all__ = ["Distributed", "resolve_device", "state_digest"]

TEARDOWN_WAIT_S = 10.0  # close(): the longest wait for the backend to let go of the tensors (normally < 2 ms)
FAILED_TEARDOWN_WAIT_S = 1.0  # the same after a failure (the exception's frames may hold the works themselves)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {name}: CUDA is not available here (use --device cpu or auto)")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, bytes): equal digests = bit-identical states."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Distributed:
    """Rank and world of this process. ``Distributed()`` is one process on the CPU;
    :meth:`from_environment` reads torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` and initialises the default
    process group when there is more than one process."""

    def __init__(self, world: int = 1, rank: int = 0, local_rank: int = 0, device: torch.device | None = None):
        self.world, self.rank, self.local_rank = world, rank, local_rank
        self.device = device if device is not None else torch.device("cpu")
        self.enabled = world > 1
        # tensors this object's collectives gave the backend and it may still hold (see close); one thread's
        # collectives, like the process group itself: no lock
        self._handed_to_backend: list[torch.Tensor] = []

    @classmethod
    def from_environment(cls, device_name: str = "auto") -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self = cls(world, rank, local_rank, resolve_device(device_name, local_rank))
        if self.enabled:
            import torch.distributed as dist

            if self.device.type == "cuda":  # first: NCCL's communicator then binds to this rank's device
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        return self

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel (gradients all-reduced), or ``model`` itself for one process.

        No buffer broadcast: the quantizer keeps its EMA buffers consistent itself (one all-reduce per step)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        with warnings.catch_warnings():  # torch ≥ 2.14 deprecates the name, but its replacement still syncs at init
            warnings.simplefilter("ignore", FutureWarning)
            return DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None, broadcast_buffers=False
            )

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` for one process). ``obj`` is pickled, as by
        ``torch.distributed.all_gather_object``: a tensor in it comes back on the sender's device (``cuda:1`` of
        rank 1 arrives on rank 0 as ``cuda:1``)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        # all_gather_object's own buffers are out of reach of close(), so the two all_gathers are done here
        payload = pickle.dumps(obj)
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        sizes = [torch.empty_like(size) for _ in range(self.world)]
        try:
            dist.all_gather(sizes, size)
        finally:
            self._track_backend_tensors(size, *sizes)
        lengths = torch.cat(sizes).tolist()  # one host sync
        padded = torch.zeros(max(lengths), dtype=torch.uint8)
        padded[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        padded = padded.to(self.device)
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        try:
            dist.all_gather(gathered, padded)
        finally:
            self._track_backend_tensors(padded, *gathered)
        return [pickle.loads(t[:n].cpu().numpy().tobytes()) for t, n in zip(gathered, lengths)]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum of ``tensor`` over the ranks. Pass a tensor nothing else references from C++ (a fresh one,
        not a view of a live tensor nor a leaf in a live autograd graph): close() waits for such references to go,
        and would wait for those until its timeout."""
        if self.enabled:
            import torch.distributed as dist

            try:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            finally:
                self._track_backend_tensors(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (one all-reduce of one number)."""
        if not self.enabled:
            return flag
        return bool(self.sum_(torch.tensor([int(flag)], dtype=torch.int32, device=self.device)).item())

    def _track_backend_tensors(self, *tensors: torch.Tensor) -> None:
        """Remember tensors a collective gave the backend, forgetting those it has let go of (for good: a backend
        never takes a tensor back)."""
        self._handed_to_backend = [t for t in (*self._handed_to_backend, *tensors) if held_outside_python(t)]

    def wait_until_backend_releases(self, timeout_s: float = TEARDOWN_WAIT_S) -> bool:
        """Wait (≤ ``timeout_s``) until no backend thread holds a tensor of this object's collectives; True if none
        does. Only a reference from C++ counts: the Python objects of this list do not."""
        self._handed_to_backend = still_held(self._handed_to_backend, timeout_s)
        return not self._handed_to_backend

    def close(self, failed: bool = False) -> None:
        """Destroy the process group, once the backend has let go of every tensor of this object's collectives
        (see the module docstring: otherwise the process can abort at exit). ``failed``: after an exception, whose
        frames may hold a collective's work themselves; the wait is then short and silent."""
        if self.enabled:
            import torch.distributed as dist

            released = self.wait_until_backend_releases(FAILED_TEARDOWN_WAIT_S if failed else TEARDOWN_WAIT_S)
            hand_over_gil()
            if not released and not failed:
                warnings.warn(f"rank {self.rank}: a collective's tensors are still referenced from C++ after "
                              f"{TEARDOWN_WAIT_S:g} s; destroying the process group anyway", RuntimeWarning,
                              stacklevel=2)
            if dist.is_initialized():
                dist.destroy_process_group()
