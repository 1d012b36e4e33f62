"""Checkpoints that survive interruption: safetensors weights + JSON config + optimizer and RNG state.

Layout of a run's checkpoint folder ``<run>/checkpoints/``::

    step-00000120/            one complete checkpoint (never modified after it appears)
        model.safetensors     every parameter and buffer of the model (``state_dict``)
        config.json           the run's configuration (JSON-able dict) plus "step", "epoch", "batch_in_epoch"
        state.pt              optimizer state, RNG states (per rank), extra training state (``torch.save``)
    latest.json               {"step": 120, "path": "step-00000120"}: the newest complete checkpoint

Atomicity: a checkpoint is written into a temporary folder ``.tmp-step-…`` which is then renamed into place with
``os.replace`` (atomic on POSIX); ``latest.json`` is written to a temporary file and renamed too. A process killed
at any moment leaves either the previous checkpoint or the new one, never a half-written one; leftover ``.tmp-*``
folders are ignored and cleaned by the next save. Only the ``keep`` newest checkpoints are kept.

Reusable pieces (the training loop uses them): :func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`latest_checkpoint`, :func:`capture_rng_state` / :func:`restore_rng_state`, :func:`atomic_write_text`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fastrq.errors import StateDictError

__all__ = [
    "Checkpoint",
    "atomic_write_text",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "load_model_weights",
]

_LATEST = "latest.json"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def capture_rng_state() -> dict[str, Any]:
    """Every random state a training step may draw from: Python ``random``, NumPy, torch CPU (and CUDA if used).

    The result is ``torch.save``-able with ``weights_only=True`` loading (tensors, ints, strings, lists)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``path`` (its folder), ``config`` (config.json), ``model_state`` (tensors), ``state``
    (the dict saved as state.pt: "optimizer", "rng" (list per rank), "extra")."""

    path: Path
    config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.config["step"])


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    step: int,
    model: torch.nn.Module,
    config: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` into ``directory`` atomically and point ``latest.json`` at it.

    ``config`` must be JSON-able; ``step`` is stored in it. ``rng_states`` defaults to ``[capture_rng_state()]``
    (pass one per rank under DDP). ``extra`` is any ``torch.save``-able training state (counters, metrics).
    Returns the checkpoint's folder. Call it from one process only (rank 0)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _step_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{_step_name(step)}-", dir=directory))
    try:
        weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps({**config, "step": int(step)}, indent=2, sort_keys=True))
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "rng": rng_states if rng_states is not None else [capture_rng_state()],
                "extra": extra or {},
            },
            tmp / "state.pt",
        )
        for child in tmp.iterdir():  # data on disk before the rename makes it visible
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # re-saving the same step (e.g. SIGINT right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(directory / _LATEST, json.dumps({"step": int(step), "path": final.name}))
    _prune(directory, keep, current=final.name)
    return final


def _prune(directory: Path, keep: int, current: str) -> None:
    complete = sorted(p for p in directory.glob("step-*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in directory.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder in ``directory`` (None if there is none).

    Reads ``latest.json``; if it is missing or points at a folder that is gone, falls back to the highest
    ``step-*`` folder that holds all three files."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    try:
        pointer = json.loads((directory / _LATEST).read_text())
        candidate = directory / pointer["path"]
        if _complete(candidate):
            return candidate
    except (OSError, ValueError, KeyError):
        pass
    complete = sorted(p for p in directory.glob("step-*") if _complete(p))
    return complete[-1] if complete else None


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in ("model.safetensors", "config.json", "state.pt"))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint folder (or a run's checkpoint directory: its newest checkpoint).

    Raises :class:`fastrq.StateDictError` when there is no complete checkpoint there."""
    path = Path(path)
    if not _complete(path):
        newest = latest_checkpoint(path)
        if newest is None:
            raise StateDictError(f"no complete checkpoint in {path} (expected model.safetensors, config.json, state.pt)")
        path = newest
    config = json.loads((path / "config.json").read_text())
    model_state = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return Checkpoint(path=path, config=config, model_state=model_state, state=state)


def load_model_weights(model: torch.nn.Module, checkpoint: Checkpoint | str | os.PathLike, strict: bool = True) -> Checkpoint:
    """Load a checkpoint's weights into ``model`` (validated: shape mismatches raise StateDictError, nothing is
    half-loaded because the state is checked before copying)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    own = model.state_dict()
    missing = sorted(set(own) - set(checkpoint.model_state))
    unexpected = sorted(set(checkpoint.model_state) - set(own))
    if strict and (missing or unexpected):
        raise StateDictError(f"checkpoint {checkpoint.path} does not fit the model: missing {missing}, unexpected {unexpected}")
    for name, tensor in checkpoint.model_state.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise StateDictError(
                f"checkpoint {checkpoint.path}: {name} has shape {tuple(tensor.shape)}, the model needs {tuple(own[name].shape)}"
            )
    model.load_state_dict(checkpoint.model_state, strict=strict)
    return checkpoint
