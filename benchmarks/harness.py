"""The benchmark harness every script in ``benchmarks/`` runs on: a correctness gate, interleaved timing,
percentiles, per-round ratios, peak memory, metadata and the results files.

A benchmark builds one :class:`Contender` per provider and case (``call`` is the timed work, built outside the
timed region) and hands the list to :func:`run`:

1. **Gate** (untimed, provider by provider): the optional small ``warmup`` call (lazy initialisation), then one
   full call whose peak extra memory is measured (:class:`benchmarks.memory.PeakMemory`) and whose answer goes to
   ``check`` (→ ``(ok, detail)``, comparing it with the reference answer the script computed beforehand). A
   provider that fails the check is reported as ``"wrong"`` and never timed; one that raises is ``"error"``.
   ``check=None`` marks a floor or a baseline that gives no answer to check (reported as such).
2. **Timing**, interleaved: round r runs the providers in the order rotated by r (A B C, B C A, C A B, …), so a
   drifting machine hits every provider alike. Each provider runs until it has ``reps`` repetitions, or until its
   next repetition would take it past ``budget_s`` (at least ``min_reps``). ``timer(call) → seconds`` is
   pluggable: :func:`wall_timer` (CPU, default), :func:`cuda_timer`, or :func:`do_bench_timer` (Triton's
   ``do_bench`` median on CUDA).
3. **Statistics**: median and the 20th / 50th / 80th percentiles of each provider's times; :func:`ratio` is the
   median over rounds of the per-round ratio of two providers' times (both timed in the same round, so slow
   drifts cancel), not a ratio of medians. Contention is recorded beside each time: the median number of
   involuntary context switches per timed call (≈ 0 on a quiet machine; other processes took the cores when it is
   large) and the process' CPU seconds per wall second (≈ the thread count for parallel work on a quiet machine).

:func:`collect_metadata` records the date, git revision and dirty flag (from the repository root), package
versions, CPU model and the flags of interest (AVX-512, AVX512-BF16, AMX), thread counts and the environment
variables that change what runs (``FASTRQ_*``, ``OPENBLAS_CORETYPE``, …). :func:`write_results` writes
``benchmarks/results/<YYYY-MM-DD>/<name>.json`` (long format: one record per provider × case × metric, see
:func:`timing_records`, with the metadata) and the markdown table beside it; :func:`read_results` reads it back
(and the older ``{"meta", "results"}`` files of the ops benchmark).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import importlib.util
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import memory

__all__ = [
    "Contender", "Outcome", "run", "ratio", "percentile", "wall_timer", "cuda_timer", "do_bench_timer",
    "set_threads", "collect_metadata", "timing_records", "write_results", "read_results", "select", "scoped_env",
    "RESULTS_ROOT", "SCHEMA",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = ROOT / "benchmarks" / "results"
SCHEMA = "fastrq-bench/1"
QUANTILES = (0.2, 0.5, 0.8)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
ENV_PREFIXES = ("FASTRQ_",)
ENV_NAMES = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TRITON_INTERPRET",
             *memory.ALLOCATOR_ENV)
VERSIONED = ("torch", "numpy", "faiss-cpu", "vector-quantize-pytorch", "triton", "fastrq", "matplotlib")

# metadata stamped on every record, so that each record says where and with what it was measured
RECORD_META = ("date", "git_revision", "git_dirty", "hostname", "cpu", "threads", "versions")

Timer = Callable[[Callable[[], Any]], float]


# --------------------------------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    """One provider on one case. ``call()`` is the timed work; ``check(answer) → (ok, detail)`` judges the answer
    of the gate call (None: a floor or baseline with no answer, not checked); ``warmup()`` runs first, untimed.
    ``scale`` multiplies every time (≠ 1: extrapolated, e.g. timed on a row subsample); ``env`` is set around every
    call of this provider only; ``memory_device`` is ``"cpu"`` (resident-set growth), ``"cuda"`` (allocator peak)
    or None (not measured). ``skip`` (a reason) reports the provider as skipped without running it; ``error`` as
    failed to prepare. ``info`` is copied into the provider's records."""

    name: str
    call: Callable[[], Any] | None = None
    check: Callable[[Any], tuple[bool, str]] | None = None
    warmup: Callable[[], Any] | None = None
    label: str = ""
    scale: float = 1.0
    env: Mapping[str, str] = field(default_factory=dict)
    memory_device: str | None = "cpu"
    skip: str | None = None
    error: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def extrapolated(self) -> bool:
        return self.scale != 1.0


@dataclass
class Outcome:
    """What :func:`run` found for one contender: ``status`` ok | wrong | error | skipped, ``detail`` (the check's
    verdict or the reason), ``times`` in seconds (scaled) with the ``rounds`` they were taken in, ``peak_bytes``
    of the gate call (None: not measured)."""

    contender: Contender
    status: str = "ok"
    detail: str = ""
    times: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    peak_bytes: int | None = None
    done: bool = False
    preemptions: list[int] = field(default_factory=list)  # involuntary context switches during each timed call
    cpu_per_wall: list[float] = field(default_factory=list)  # process CPU seconds / wall seconds of each call

    @property
    def name(self) -> str:
        return self.contender.name

    def summary(self) -> dict[str, Any]:
        """``median_ms``, ``p20_ms`` / ``p50_ms`` / ``p80_ms``, ``reps`` and the samples (None when never timed)."""
        if not self.times:
            return {"median_ms": None, "reps": 0}
        ms = [t * 1e3 for t in self.times]
        out = {"median_ms": statistics.median(ms), "reps": len(ms), "samples_ms": ms}
        out.update({f"p{round(q * 100)}_ms": percentile(ms, q) for q in QUANTILES})
        if self.preemptions:  # contention: other processes took the cores (≈ 0 switches on a quiet machine)
            out["preemptions_per_call"] = statistics.median(self.preemptions)
            out["cpu_per_wall"] = statistics.median(self.cpu_per_wall)
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(math.floor(pos))
    hi = min(len(ordered) - 1, lo + 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ------------------------------------------------------------------------------------------------------ timers
def wall_timer(call: Callable[[], Any]) -> float:
    """Seconds of one call by ``time.perf_counter`` (the result is freed after the clock stops)."""
    start = time.perf_counter()
    out = call()
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def cuda_timer(call: Callable[[], Any]) -> float:
    """Seconds of one call of CUDA work: synchronise before starting and before stopping the clock."""
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    out = call()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def do_bench_timer(warmup_ms: float = 25, rep_ms: float = 100) -> Timer:
    """A timer for GPU kernels: ``triton.testing.do_bench`` (its own warm-up, cache flush between calls, CUDA
    events), median in seconds. One harness repetition is then one ``do_bench`` median."""

    def timer(call: Callable[[], Any]) -> float:
        import triton.testing

        return triton.testing.do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median") / 1e3

    return timer


@contextlib.contextmanager
def scoped_env(env: Mapping[str, str]):
    """Set ``env`` for the block and restore every variable (or its absence) afterwards."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------------------- run
def run(contenders: Sequence[Contender], *, reps: int = 5, budget_s: float = math.inf, min_reps: int = 1,
        timer: Timer = wall_timer, measure_memory: bool = True, log: Callable[[str], None] = print
        ) -> dict[str, Outcome]:
    """Gate, then time ``contenders`` interleaved (see the module docstring). Returns ``{name: Outcome}`` in the
    contenders' order. Names must be unique."""
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique, got {names}")
    outcomes = [Outcome(c) for c in contenders]
    gc.collect()
    gc.freeze()  # what exists now is never garbage of the timed calls: the collections before each call stay cheap
    try:
        for outcome in outcomes:
            _gate(outcome, measure_memory, log)
        _time_rounds(outcomes, reps, budget_s, min_reps, timer, log)
    finally:
        gc.unfreeze()
    return {o.name: o for o in outcomes}


def _time_rounds(outcomes: list[Outcome], reps: int, budget_s: float, min_reps: int, timer: Timer,
                 log: Callable[[str], None]) -> None:
    rounds = 0
    while not all(o.done for o in outcomes):
        shift = rounds % len(outcomes)
        for outcome in outcomes[shift:] + outcomes[:shift]:
            if outcome.done:
                continue
            c = outcome.contender
            gc.collect()
            with scoped_env(c.env):
                try:
                    before = _usage()
                    elapsed = timer(c.call) * c.scale
                    after = _usage()
                except Exception as error:  # a provider failing later must not stop the benchmark
                    outcome.status, outcome.detail, outcome.done = "error", f"{type(error).__name__}: {error}", True
                    outcome.times.clear()
                    outcome.rounds.clear()
                    log(f"  !! {c.name}: {outcome.detail}")
                    continue
            outcome.times.append(elapsed)
            outcome.rounds.append(rounds)
            if before is not None and after is not None:
                outcome.preemptions.append(after[0] - before[0])
                outcome.cpu_per_wall.append((after[1] - before[1]) / max(after[2] - before[2], 1e-9))
            spent = sum(outcome.times) / c.scale
            if len(outcome.times) >= reps or (len(outcome.times) >= min_reps and spent + elapsed / c.scale > budget_s):
                outcome.done = True
        rounds += 1


def _usage() -> tuple[int, float, float] | None:
    """(involuntary context switches, CPU seconds, wall seconds) of this process so far; None where unsupported."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nivcsw, usage.ru_utime + usage.ru_stime, time.perf_counter()


def _gate(outcome: Outcome, measure_memory: bool, log: Callable[[str], None]) -> None:
    c = outcome.contender
    if c.skip is not None or c.error is not None:
        outcome.status = "skipped" if c.skip is not None else "error"
        outcome.detail, outcome.done = c.skip if c.skip is not None else c.error, True
        return
    gc.collect()
    measured = measure_memory and c.memory_device is not None and memory.peak_supported() is None
    with scoped_env(c.env):
        try:
            if c.warmup is not None:
                c.warmup()
            with memory.PeakMemory(cuda=c.memory_device == "cuda") if measured else contextlib.nullcontext() as peak:
                answer = c.call()
        except Exception as error:
            outcome.status, outcome.detail, outcome.done = "error", f"{type(error).__name__}: {error}", True
            log(f"  !! {c.name}: {outcome.detail}")
            return
    outcome.peak_bytes = peak.extra_bytes if measured else None
    if c.check is None:
        outcome.detail = "no answer to check (a floor or baseline): not checked"
        return
    try:
        ok, outcome.detail = c.check(answer)
    except Exception as error:
        ok, outcome.detail = False, f"the check raised {type(error).__name__}: {error}"
    if not ok:
        outcome.status, outcome.done = "wrong", True
        log(f"  !! {c.name}: WRONG ANSWER, not timed: {outcome.detail}")


def ratio(outcomes: Mapping[str, Outcome], numerator: str, denominator: str) -> dict[str, Any] | None:
    """Median (and p20 / p80) over rounds of ``time(numerator) / time(denominator)``, taken on the rounds in which
    both were timed; None when there is no such round."""
    num, den = outcomes.get(numerator), outcomes.get(denominator)
    if num is None or den is None or not num.times or not den.times:
        return None
    by_round = dict(zip(den.rounds, den.times))
    pairs = [t / by_round[r] for r, t in zip(num.rounds, num.times) if r in by_round and by_round[r] > 0]
    if not pairs:
        return None
    return {"value": statistics.median(pairs), "p20": percentile(pairs, 0.2), "p80": percentile(pairs, 0.8),
            "rounds": len(pairs)}


# ------------------------------------------------------------------------------------------------------ records
def timing_records(case: Mapping[str, Any], outcomes: Mapping[str, Outcome],
                   ratios: Iterable[tuple[str, str]] = (), per_row: int | None = None) -> list[dict[str, Any]]:
    """Long-format records of one case: per provider a ``time_ms`` record (value = median; p20 / p50 / p80, reps,
    samples, status, the check's detail, ``extrapolated``; also for providers never timed, with value None and
    the reason), a ``peak_mem_bytes`` record when measured, an ``ns_per_row`` record when ``per_row`` (rows per
    call) is given; per (numerator, denominator) pair a ``time_ratio`` record (:func:`ratio`)."""
    records = []
    for name, o in outcomes.items():
        c = o.contender
        base = {**case, "provider": name, "label": c.label or name}
        summary = o.summary()
        timing = {**base, "metric": "time_ms", "unit": "ms", "value": summary.pop("median_ms"), "status": o.status,
                  "check": o.detail, "extrapolated": c.extrapolated, **summary, **c.info}
        records.append(timing)
        if o.peak_bytes is not None:
            records.append({**base, "metric": "peak_mem_bytes", "unit": "bytes", "value": o.peak_bytes,
                            "device": c.memory_device, "extrapolated": c.extrapolated, "status": o.status})
        if per_row and timing["value"] is not None:
            records.append({**base, "metric": "ns_per_row", "unit": "ns", "value": timing["value"] * 1e6 / per_row,
                            "extrapolated": c.extrapolated, "status": o.status})
    for num, den in ratios:
        found = ratio(outcomes, num, den)
        if found is not None:
            extrapolated = outcomes[num].contender.extrapolated or outcomes[den].contender.extrapolated
            records.append({**case, "provider": num, "baseline": den, "metric": "time_ratio", "unit": "x",
                            "extrapolated": extrapolated, **found})
    return records


# A timing counts as contended when, per timed call (medians), the process was preempted at least
# CONTENDED_SWITCHES times, more than CONTENDED_RATE times per second, and got less than CONTENDED_CPU CPU seconds
# per wall second per thread. Measured on the 2-core machine (2026-12-01): quiet 2-thread calls got 1.7–2.3 CPU
# s/s with up to ~150 switches/s; while another job ran they got ~1.0 CPU s/s with ~250 switches/s.
CONTENDED_SWITCHES = 10
CONTENDED_RATE = 100.0
CONTENDED_CPU = 0.6


def contended(record: Mapping[str, Any]) -> bool:
    """Whether a ``time_ms`` record was taken while other processes took the cores from this one (its time and the
    ratios it enters are unreliable); see :data:`CONTENDED_SWITCHES`. False where the counters were not recorded."""
    switches, ms, cpu = record.get("preemptions_per_call"), record.get("value"), record.get("cpu_per_wall")
    if switches is None or cpu is None or not ms:
        return False
    threads = record.get("threads") or 1
    return (switches >= CONTENDED_SWITCHES and switches / (ms / 1e3) > CONTENDED_RATE
            and cpu < CONTENDED_CPU * threads)


def select(records: Iterable[Mapping[str, Any]], **match: Any) -> list[Mapping[str, Any]]:
    """The records whose fields equal every ``match`` item (a missing field matches None)."""
    return [r for r in records if all(r.get(key) == value for key, value in match.items())]


# ----------------------------------------------------------------------------------------------------- metadata
def set_threads(threads: int) -> None:
    """Pin torch and, if importable, faiss to ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    if importlib.util.find_spec("faiss") is not None:
        import faiss

        faiss.omp_set_num_threads(threads)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=ROOT)
    except Exception:
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """Revision of the repository root and whether tracked files that can change a result differ from it (results
    files and markdown documents excluded)."""
    revision = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = None if status is None else [
        line[3:] for line in status.splitlines()
        if line[3:] and not line[3:].startswith("benchmarks/results/") and not line[3:].endswith(".md")]
    return {"git_revision": revision, "git_dirty": None if changed is None else bool(changed),
            "git_dirty_files": None if changed is None else changed[:20]}


def cpu_info() -> dict[str, Any]:
    """CPU model name, family / model / stepping and the flags of interest (:data:`CPU_FLAGS`) from /proc/cpuinfo
    (None where unreadable). The numbers tell apart machines that a virtual machine names alike ("AMD EPYC" for a
    Zen 4, family 25, and a Zen 5, family 26, whose AVX-512 units differ in width)."""
    model, flags, ident = None, None, {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("cpu family", "model", "stepping") and key not in ident:
                    ident[key] = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model or platform.processor() or None,
            "cpu_id": " ".join(f"{k} {v}" for k, v in ident.items()) or None,
            "cpu_flags": None if flags is None else {flag: flag in flags for flag in CPU_FLAGS}}


def cpu_label(meta: Mapping[str, Any]) -> str:
    """The CPU as a results file's markdown names it: the model name, with ``cpu_id`` where it was recorded."""
    return f"{meta.get('cpu')} ({meta['cpu_id']})" if meta.get("cpu_id") else str(meta.get("cpu"))


def versions() -> dict[str, str | None]:
    """Installed versions from the package metadata, without importing the packages (torch: its own
    ``__version__``, which names the build, e.g. ``2.14.1+cu130``)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    out["torch"] = torch.__version__
    return out


def _threads() -> dict[str, int | None]:
    import torch

    threads: dict[str, int | None] = {"torch": torch.get_num_threads(), "faiss": None}
    if importlib.util.find_spec("faiss") is not None:
        import faiss

        threads["faiss"] = faiss.omp_get_max_threads()
    return threads


def collect_metadata(benchmark: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to read a result later: when, what code, which packages, which machine and threads."""
    import torch

    now = _dt.datetime.now(_dt.timezone.utc)
    cuda = torch.cuda.is_available()
    return {
        "benchmark": benchmark, "date": now.date().isoformat(), "timestamp": now.isoformat(timespec="seconds"),
        **git_state(), "versions": versions(), "hostname": socket.gethostname(), **cpu_info(),
        "cpu_count": os.cpu_count(), "threads": _threads(), "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "environment": {k: v for k, v in sorted(os.environ.items())
                        if k.startswith(ENV_PREFIXES) or k in ENV_NAMES},
        "settings": dict(settings or {}),
        "peak_memory_method": memory.method_description(),
        "load_average": _load_average(),  # 1, 5, 15 min at the start: other work on a shared machine
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages now (None where unsupported)."""
    return _load_average()


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# -------------------------------------------------------------------------------------------------------- files
def results_dir(date: str, root: Path | str | None = None) -> Path:
    return Path(root) if root is not None else RESULTS_ROOT / date


def write_results(name: str, records: list[dict[str, Any]], meta: Mapping[str, Any], markdown: str | None = None,
                  out_dir: Path | str | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default folder ``benchmarks/results/<meta date>``) and, given
    ``markdown``, ``<name>.md`` beside it. Every record is stamped with :data:`RECORD_META` from ``meta`` (threads:
    torch's). Returns the JSON path."""
    folder = results_dir(meta["date"], out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    meta = {"load_average_end": _load_average(), **meta}  # unless the script recorded it already
    stamp = {key: meta.get(key) for key in RECORD_META}
    stamp["threads"] = (meta.get("threads") or {}).get("torch")
    records = [{**r, **{k: v for k, v in stamp.items() if k not in r}} for r in records]
    document = {"schema": SCHEMA, "benchmark": name, "meta": dict(meta), "records": records}
    path.write_text(json.dumps(document, indent=1, default=_jsonable) + "\n")
    if markdown is not None:
        revision = (meta.get("git_revision") or "?")[:10] + ("+dirty" if meta.get("git_dirty") else "")
        footer = (f"\n\n_{meta.get('timestamp')}, git {revision}, {cpu_label(meta)}, threads "
                  f"{meta.get('threads', {}).get('torch')}; data: `{name}.json`_\n")
        (folder / f"{name}.md").write_text(markdown.rstrip() + footer)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_results(path: Path | str) -> dict[str, Any]:
    """A results document ``{"schema", "benchmark", "meta", "records"}``. Older ops-benchmark files (``{"meta",
    "results"}``, one record per provider × case with ``median_ms``) are converted to the long format (their ratios
    are then ratios of medians, marked ``"of_medians": True``)."""
    document = json.loads(Path(path).read_text())
    if document.get("schema") == SCHEMA:
        return document
    if "results" not in document:
        raise ValueError(f"{path}: not a fastrq benchmark results file")
    records = []
    for r in document["results"]:
        case = {"op": r["op"], "D": r["D"], "K": r["K"], "L": r["L"], "N": r["N"]}
        records.append({**case, "provider": r["provider"], "label": r.get("label"), "metric": "time_ms", "unit": "ms",
                        "value": r.get("median_ms"), "status": r["status"], "check": r.get("check", ""),
                        "extrapolated": bool(r.get("extrapolated")), "reps": r.get("reps", 0),
                        "p20_ms": r.get("p20_ms"), "p80_ms": r.get("p80_ms"), "samples_ms": r.get("times_ms"),
                        "chunks": r.get("chunks", 1), "note": r.get("note", ""), "rows_timed": r.get("rows_timed")})
        if r.get("peak_mem_bytes") is not None:
            records.append({**case, "provider": r["provider"], "metric": "peak_mem_bytes", "unit": "bytes",
                            "value": r["peak_mem_bytes"], "device": r.get("peak_mem_device", "host"),
                            "extrapolated": bool(r.get("extrapolated")), "status": r["status"]})
    timed = {(r["op"], r["D"], r["K"], r["L"], r["provider"]): r for r in records
             if r["metric"] == "time_ms" and r["value"]}
    for (op, d, k, levels, provider), r in list(timed.items()):
        base = timed.get((op, d, k, levels, "torch"))
        if base is not None and provider != "torch":
            records.append({"op": op, "D": d, "K": k, "L": levels, "N": r["N"], "provider": provider,
                            "baseline": "torch", "metric": "time_ratio", "unit": "x", "value": r["value"] / base["value"],
                            "extrapolated": r["extrapolated"], "of_medians": True})
    meta = dict(document["meta"])
    meta.setdefault("date", str(meta.get("timestamp", ""))[:10] or None)
    return {"schema": SCHEMA, "benchmark": f"ops_{meta.get('preset', '?')}", "meta": meta, "records": records,
            "legacy": True}
