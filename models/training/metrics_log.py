"""Metrics as JSON Lines: one JSON object per line, appended and flushed as training goes.

Each record carries ``"step"`` (global optimizer step). On resume from a checkpoint at step S, records written
after S by the interrupted process are dropped (:meth:`MetricsLog.truncate_after`) so the file of a resumed run
equals the file of an uninterrupted one (apart from wall-clock fields, whose names start with ``time_`` or end with
``_per_s``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from .checkpoint import atomic_write_text

__all__ = ["MetricsLog", "read_jsonl", "timing_free"]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it visible instead of writing invalid JSON
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSONL writer. ``enabled=False`` (non-zero ranks) makes every call a no-op."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def truncate_after(self, step: int, drop_at_step: tuple[str, ...] = ()) -> None:
        """Drop records with ``"step" > step``, records at ``step`` whose ``"kind"`` is in ``drop_at_step``, and a
        torn last line; atomically."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            r for r in read_jsonl(self.path)
            if int(r.get("step", 0)) < step or (int(r.get("step", 0)) == step and r.get("kind") not in drop_at_step)
        ]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (a torn last line from a killed writer is skipped)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def timing_free(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without their wall-clock fields (``time_*``, ``*_per_s``): what must match between runs."""
    return [{k: v for k, v in r.items() if not (k.startswith("time_") or k.endswith("_per_s"))} for r in records]
