"""Runs the study's independent trainings, one after another or ``jobs`` at a time in worker processes.

A :class:`Task` is a picklable top-level function with its arguments, a ``section`` (what a failure is reported
under) and optionally the key of a task it needs first (the prior needs its RQ-VAE). :func:`run_tasks` returns the
result of every task that finished and the failures of the others; a task whose dependency failed is not run and
is reported as failed too.

Why processes: the study's networks are small, so on a 2-core CPU two single-threaded trainings side by side get
more done than one two-threaded training (and far more when other processes share the cores: a two-threaded
PyTorch process slows down badly when it does not get both cores). Every training is seeded and deterministic at a
fixed thread count, so the results do not depend on which worker ran it, or when.

Stop requests: SIGINT / SIGTERM to the parent (or Ctrl-C to the whole process group) stops every running training
at its next step with a checkpoint (workers receive SIGTERM), cancels the tasks not started and raises
:class:`~fastrq.models.training.interrupt.TrainingInterrupted`; running the study again resumes. Idle workers
ignore both signals, so a stop request never kills a worker between two tasks.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from ..training.interrupt import StopRequest, TrainingInterrupted

__all__ = ["Task", "TaskFailure", "run_tasks"]


@dataclass
class Task:
    """``fn(*args)`` (a module-level function: it is pickled to a worker), reported under ``section``; run only
    after the task with key ``after`` finished (None: any time). ``key`` must be unique."""

    key: str
    section: str
    fn: Callable[..., Any]
    args: tuple = ()
    after: str | None = None


@dataclass
class TaskFailure:
    key: str
    section: str
    error: str
    details: dict[str, Any] = field(default_factory=dict)


def _ignore_stop_signals() -> None:
    """Worker initializer: an idle worker survives SIGINT / SIGTERM (a training installs its own handlers and
    restores these afterwards)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_tasks(tasks: list[Task], jobs: int = 1, *,
              on_done: Callable[[Task, Any], None] | None = None) -> tuple[dict[str, Any], list[TaskFailure]]:
    """Run ``tasks`` (in list order where there is a choice); ``jobs`` ≤ 1: in this process, else in ``jobs``
    spawned worker processes. ``on_done(task, result)`` is called in this process as each task finishes. Returns
    (key → result, failures). A stop request raises :class:`TrainingInterrupted` after the running tasks saved
    their checkpoints."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    if jobs <= 1:
        return _run_here(tasks, on_done)
    return _run_in_workers(tasks, jobs, on_done)


def _blocked(task: Task, failed: dict[str, TaskFailure]) -> TaskFailure | None:
    if task.after is not None and task.after in failed:
        return TaskFailure(task.key, task.section, f"not run: it needs {task.after}, which failed")
    return None


def _report_failure(failure: TaskFailure) -> None:
    print(f"[reproduce] {failure.key}: FAILED ({failure.error})", file=sys.stderr, flush=True)


def _run_here(tasks: list[Task], on_done) -> tuple[dict[str, Any], list[TaskFailure]]:
    results: dict[str, Any] = {}
    failed: dict[str, TaskFailure] = {}
    for task in tasks:
        blocked = _blocked(task, failed)
        if blocked is not None:
            failed[task.key] = blocked
            _report_failure(blocked)
            continue
        try:
            results[task.key] = task.fn(*task.args)
        except TrainingInterrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing task is reported, the others still run
            traceback.print_exc()
            failed[task.key] = TaskFailure(task.key, task.section, _describe(exc))
            _report_failure(failed[task.key])
            continue
        if on_done is not None:
            on_done(task, results[task.key])
    return results, list(failed.values())


def _run_in_workers(tasks: list[Task], jobs: int, on_done) -> tuple[dict[str, Any], list[TaskFailure]]:
    results: dict[str, Any] = {}
    failed: dict[str, TaskFailure] = {}
    waiting = list(tasks)
    running: dict[Future, Task] = {}
    context = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP pool is running
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_ignore_stop_signals)
    interrupted = False
    try:
        with StopRequest() as stop:
            while waiting or running:
                for task in list(waiting):
                    blocked = _blocked(task, failed)
                    if blocked is not None:
                        waiting.remove(task)
                        failed[task.key] = blocked
                        _report_failure(blocked)
                    elif task.after is None or task.after in results:
                        if len(running) < jobs:  # keep the queue in this process: list order decides
                            waiting.remove(task)
                            running[pool.submit(task.fn, *task.args)] = task
                if not running:
                    if waiting:  # every waiting task needs one that has not finished: cannot happen
                        raise RuntimeError(f"tasks wait for unknown keys: {[t.after for t in waiting]}")
                    break
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                if stop.requested() and not interrupted:
                    interrupted = True
                    waiting.clear()
                    for pid in list(getattr(pool, "_processes", {}) or {}):
                        try:
                            os.kill(pid, signal.SIGTERM)  # each running training checkpoints and stops
                        except ProcessLookupError:
                            pass
                for future in done:
                    task = running.pop(future)
                    try:
                        results[task.key] = future.result()
                    except TrainingInterrupted:
                        interrupted = True
                        waiting.clear()
                        continue
                    except Exception as exc:  # noqa: BLE001 - reported, the others still run
                        failed[task.key] = TaskFailure(task.key, task.section, _describe(exc))
                        _report_failure(failed[task.key])
                        continue
                    if on_done is not None:
                        on_done(task, results[task.key])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if interrupted:
        raise TrainingInterrupted("stopped on request; every running training saved a checkpoint")
    return results, list(failed.values())
