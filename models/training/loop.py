"""The one training loop of the reference models: epochs of index batches, exact resume, stop requests, NaN guard.

The three trainers (:mod:`.autoencoder`, :mod:`.prior`, :mod:`.classifier`) each describe their training as a
:class:`TrainingTask` (the batches of an epoch, the loss of a batch, the update, the records, the evaluation, the
task's own checkpoint state) and hand it to :class:`TrainingLoop`, which does the rest the same way for all three:

- **resume** (``resume=True``): the newest complete checkpoint in ``<out>/checkpoints`` restores the weights, the
  optimizer, every RNG state (one per rank), the position (step, epoch, batch in the epoch), the training time and
  the task's state; ``metrics.jsonl`` loses the records the interrupted process wrote after that checkpoint. Batches
  are a pure function of (seed, epoch) (:func:`~.data.epoch_order`), so the resumed run goes on exactly as an
  uninterrupted one. Without a checkpoint the run starts from scratch (and says so); a fresh run starts a fresh
  ``metrics.jsonl``.
- ``run.json``: the run's configuration and ``resumed_from``.
- **each step**, in this order: the loss; the **NaN guard** (a non-finite loss raises
  :class:`TrainingDivergedError` *before* the update, so the weights, and every checkpoint, stay as they were); the
  update; a "train" record every ``log_every`` steps; a mid-epoch evaluation every ``eval_every`` steps; the **stop
  request** (SIGINT/SIGTERM: a checkpoint, then :class:`~.interrupt.TrainingInterrupted`, which the CLI turns into
  exit status 130); the training-time budget (``max_minutes``); a checkpoint every ``checkpoint_every`` steps.
- **each epoch end**: the task's epoch records and evaluation, then a checkpoint.
- **the end** (all epochs, ``max_steps`` or the time budget): a checkpoint unless the last step already has one.

Under DDP every rank runs the loop on its share of each batch; rank 0 writes the log, run.json and the checkpoints
(holding every rank's RNG state and the task state of every rank), and the stop request and the NaN guard are
agreed across ranks, so all ranks leave at the same step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import FastRQError

from .checkpoint import (
    Checkpoint,
    atomic_write_text,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from .distributed import Distributed
from .interrupt import StopRequest, TrainingInterrupted
from .metrics_log import MetricsLog

__all__ = ["LoopState", "TrainingTask", "TrainingLoop", "TrainingDivergedError"]


class TrainingDivergedError(FastRQError):
    """The loss became NaN or infinite; nothing was updated with it."""


@dataclass
class LoopState:
    """Where training stands: optimizer ``step`` (global), ``epoch`` (index of the current epoch),
    ``batch_in_epoch`` (batches of it done), ``train_seconds`` (time spent in steps, over every resumed part)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_seconds: float = 0.0


class TrainingTask:
    """What a trainer tells :class:`TrainingLoop`. Subclasses set ``name`` (progress bars), ``model`` and
    ``optimizer`` (both checkpointed by the loop) and override the hooks they need; every hook runs on every rank."""

    name: str = "model"
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's batches of ``epoch`` (index tensors)."""
        raise NotImplementedError

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The 0-d loss of one batch (the forward pass; no update yet)."""
        raise NotImplementedError

    def update(self, loss: torch.Tensor) -> None:
        """Backward and optimizer (and scheduler) step for ``loss``."""
        raise NotImplementedError

    def after_step(self, loss: float) -> None:
        """Bookkeeping after an update (running sums)."""

    def train_record(self, state: LoopState, loss: float) -> dict[str, Any]:
        """Fields of the "train" record written every ``log_every`` steps (beside kind, step, epoch)."""
        return {"loss": loss}

    def progress_postfix(self, loss: float) -> dict[str, str]:
        return {"loss": f"{loss:.4f}"}

    def evaluate(self, state: LoopState) -> None:
        """The evaluation every ``eval_every`` steps (mid-epoch)."""

    def end_epoch(self, state: LoopState) -> None:
        """Records and evaluation of the epoch ``state.epoch``, which has just ended (before the checkpoint)."""

    def fresh_start(self) -> None:
        """Called instead of a resume (e.g. to seed per-rank noise)."""

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        """Raise :class:`fastrq.InvalidArgumentError` when ``checkpoint`` belongs to a different run."""

    def state(self) -> dict[str, Any]:
        """The task's own checkpoint state (``torch.save``-able), beside the loop's counters."""
        return {}

    def load_state(self, extra: dict[str, Any]) -> None:
        """Inverse of :meth:`state` (``extra`` is the checkpoint's whole extra state)."""


class TrainingLoop:
    """Runs a :class:`TrainingTask` (see the module docstring for what happens when).

    ``out``: the run folder (``run.json``, ``metrics.jsonl``, ``checkpoints/``); ``run_config``: JSON-able
    configuration stored in run.json and in every checkpoint's config.json; ``epochs``; ``max_steps`` (0: none);
    ``max_minutes`` (of training time, 0: none); ``log_every`` / ``eval_every`` / ``checkpoint_every`` (steps, 0:
    never); ``keep_checkpoints``; ``resume``; ``progress`` (a tqdm bar on rank 0); ``metrics``: the run's log, which
    the task writes its own records to as well (default: ``<out>/metrics.jsonl``, written by rank 0); ``dist``
    (default: one process).
    """

    def __init__(self, task: TrainingTask, *, out: str | Path, run_config: dict[str, Any], epochs: int,
                 max_steps: int = 0, max_minutes: float = 0.0, log_every: int = 0, eval_every: int = 0,
                 checkpoint_every: int = 0, keep_checkpoints: int = 2, resume: bool = False, progress: bool = True,
                 metrics: MetricsLog | None = None, dist: Distributed | None = None):
        self.task = task
        self.out = Path(out)
        self.checkpoint_dir = self.out / "checkpoints"
        self.run_config = json.loads(json.dumps(run_config, default=str))
        self.epochs, self.max_steps = epochs, max_steps or math.inf
        self.max_seconds = max_minutes * 60 if max_minutes > 0 else math.inf
        self.log_every, self.eval_every, self.checkpoint_every = log_every, eval_every, checkpoint_every
        self.keep_checkpoints, self.resume, self.progress = keep_checkpoints, resume, progress
        self.dist = dist or Distributed()
        self.metrics = metrics or MetricsLog(self.out / "metrics.jsonl", enabled=self.dist.main)
        self.state = LoopState()
        self.resumed_from: str | None = None
        self._last_saved = -1

    # ------------------------------------------------------------------------------------------ start and state

    def start(self) -> str | None:
        """Resume (or start afresh) and write run.json; returns the checkpoint resumed from. :meth:`run` calls it."""
        newest = latest_checkpoint(self.checkpoint_dir) if self.resume else None
        if newest is None:
            if self.resume and self.dist.main:
                print(f"fastrq train: --resume: no checkpoint in {self.checkpoint_dir}; starting from scratch",
                      file=sys.stderr)
            self.task.fresh_start()
            if self.dist.main and self.metrics.path.exists():
                self.metrics.path.unlink()  # a fresh run starts a fresh log
        else:
            self._restore(load_checkpoint(newest))
            self.resumed_from = str(newest)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "run.json",
                              json.dumps({**self.run_config, "resumed_from": self.resumed_from}, indent=2))
        return self.resumed_from

    def _restore(self, ckpt: Checkpoint) -> None:
        self.task.check_resumable(ckpt)
        load_model_weights(self.task.model, ckpt)
        self.task.optimizer.load_state_dict(ckpt.state["optimizer"])
        extra = ckpt.state["extra"]
        s = self.state
        s.step, s.epoch = int(extra["step"]), int(extra["epoch"])
        s.batch_in_epoch = int(extra.get("batch_in_epoch", 0))  # checkpoints of epoch-level trainers lack them
        s.train_seconds = float(extra.get("train_seconds", 0.0))
        self.task.load_state(extra)
        rng = ckpt.state["rng"]
        restore_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        # records the interrupted process wrote after this checkpoint are written again by this one
        self.metrics.truncate_after(s.step, drop_at_step=("final",))
        self._last_saved = s.step

    def checkpoint(self) -> None:
        """Save the current state (every rank takes part; rank 0 writes)."""
        s = self.state
        self._last_saved = s.step
        rng_states = self.dist.gather_objects(capture_rng_state())
        extra = {"step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch,
                 "train_seconds": s.train_seconds, **self.task.state()}
        if self.dist.main:
            save_checkpoint(self.checkpoint_dir, step=s.step, model=self.task.model, optimizer=self.task.optimizer,
                            config={**self.run_config, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch},
                            rng_states=rng_states, extra=extra, keep=self.keep_checkpoints)
        self.dist.barrier()

    # ------------------------------------------------------------------------------------------------ the loop

    def run(self) -> str:
        """Train until the epochs, ``max_steps`` or the time budget are used up; returns what stopped it:
        "epochs", "max_steps" or "max_minutes". Raises :class:`TrainingInterrupted` (after a checkpoint) on a stop
        request and :class:`TrainingDivergedError` (without touching the weights) on a non-finite loss."""
        self.start()
        s = self.state
        out_of_time = False
        with StopRequest() as stop:
            while s.epoch < self.epochs and s.step < self.max_steps and not out_of_time:
                self.task.model.train()
                batches = self.task.batches(s.epoch)
                out_of_time = self._epoch(batches, stop)
                if s.batch_in_epoch >= len(batches):
                    self.task.end_epoch(s)
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    self.checkpoint()
        if self._last_saved != s.step:
            self.checkpoint()
        if out_of_time:
            return "max_minutes"
        return "max_steps" if s.step >= self.max_steps else "epochs"

    def _epoch(self, batches: list[torch.Tensor], stop: StopRequest) -> bool:
        """The rest of the current epoch (up to ``max_steps``); True when the time budget ran out."""
        s = self.state
        bar = self._progress_bar(len(batches))
        try:
            while s.batch_in_epoch < len(batches) and s.step < self.max_steps:
                self._step(batches[s.batch_in_epoch], bar)
                mid_epoch = s.batch_in_epoch < len(batches)
                if self.eval_every and s.step % self.eval_every == 0 and mid_epoch:
                    self.task.evaluate(s)
                if self.dist.any(stop.requested()):  # every rank stops at the same step
                    self.checkpoint()
                    raise TrainingInterrupted(f"interrupted at step {s.step}; checkpoint saved in "
                                              f"{self.checkpoint_dir}")
                if s.train_seconds >= self.max_seconds:
                    return True
                # (the step that ends an epoch is checkpointed after the epoch's records, in run())
                if self.checkpoint_every and s.step % self.checkpoint_every == 0 and mid_epoch:
                    self.checkpoint()
            return False
        finally:
            if bar is not None:
                bar.close()

    def _step(self, batch: torch.Tensor, bar) -> None:
        """One optimizer step on ``batch``, the NaN guard before it, and its train record."""
        s = self.state
        tick = time.perf_counter()
        loss = self.task.loss(batch)
        value = float(loss.detach())
        if self.dist.any(not math.isfinite(value)):  # before the update: the weights stay as they were
            raise TrainingDivergedError(
                f"{self.task.name} training diverged: loss {value} at step {s.step + 1} (epoch {s.epoch}); nothing "
                f"was updated with it and the last checkpoint in {self.checkpoint_dir} is intact")
        self.task.update(loss)
        s.train_seconds += time.perf_counter() - tick
        s.step += 1
        s.batch_in_epoch += 1
        self.task.after_step(value)
        logged = bool(self.log_every) and s.step % self.log_every == 0
        if logged:
            self.metrics.write({"kind": "train", "step": s.step, "epoch": s.epoch, **self.task.train_record(s, value)})
        if bar is not None:
            bar.update(1)
            if logged or s.batch_in_epoch == 1:
                bar.set_postfix(self.task.progress_postfix(value), refresh=False)

    def _progress_bar(self, total: int):
        if not (self.progress and self.dist.main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.state.batch_in_epoch, dynamic_ncols=True, leave=False, file=sys.stderr,
                    desc=f"{self.task.name} epoch {self.state.epoch + 1}/{self.epochs}")
