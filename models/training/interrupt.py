"""SIGINT/SIGTERM as a request to stop at the next step boundary (so the trainer can save a checkpoint first).

Usage (what :class:`fastrq.models.training.loop.TrainingLoop` does)::

    with StopRequest() as stop:
        for batch in ...:
            step(batch)
            if stop.requested():        # under DDP: stop.requested(sync=True) agrees across ranks
                save_checkpoint(...)
                raise TrainingInterrupted(...)

A second Ctrl-C while stopping raises KeyboardInterrupt as usual. Handlers are restored on exit.
:class:`TrainingInterrupted` is a ``KeyboardInterrupt``: code that does not catch it stops as after Ctrl-C, and the
CLI turns it into exit status 130.
"""

from __future__ import annotations

import signal
import sys

import torch

__all__ = ["StopRequest", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request after saving a checkpoint; ``--resume`` continues exactly."""


class StopRequest:
    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.signal_received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.signal_received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_received = signum
        print(f"\nfastrq: received {signal.Signals(signum).name}; stopping after this step and saving a checkpoint",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, sync: bool = False) -> bool:
        """True once a signal arrived. ``sync=True`` (DDP): true on every rank if any rank got one (one all_reduce),
        so all ranks leave the loop at the same step and no collective is left waiting."""
        local = self.signal_received is not None
        if not sync:
            return local
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces CUDA tensors only
        flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
