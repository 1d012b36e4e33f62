"""Peak extra memory of one op call.

Method (Linux): the extra memory of a call is the growth of the process' resident-set high-water mark across the
call, ``VmHWM(after) − VmRSS(before)``, with the high-water mark reset to the current RSS just before the call
(writing ``5`` to ``/proc/self/clear_refs``, Linux ≥ 4.0). This counts every allocation that was touched, from any
allocator: torch, numpy, faiss' scratch blocks, OpenMP thread stacks. It is what ``ru_maxrss`` reports for a fresh
process, but resettable, so one process can measure many calls.

What makes it honest: memory freed by an earlier call must go back to the OS, or the next call reuses resident pages
and its growth is undercounted. glibc returns large blocks (``mmap``-ed ones) on ``free`` but raises its mmap
threshold dynamically (up to 32 MiB) after such frees, after which blocks up to that size stay in the heap. Pinning
the threshold (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` at glibc's 128 KiB default, see
:data:`ALLOCATOR_ENV`) turns the dynamic raise off; it must be in the environment when the process starts, so the
benchmark re-executes itself with it (:func:`ensure_allocator_env`) and :func:`measure_in_subprocess` starts its
fresh process with it. The residual undercount is heap fragments below 128 KiB. GPU memory (CUDA providers) is
measured with ``torch.cuda.reset_peak_memory_stats`` / ``max_memory_allocated`` instead.

A fresh subprocess per measurement (:func:`measure_in_subprocess`, used by ``tests/test_memory_bound.py``) gives the
cleanest number: inputs are built, one small call warms up lazy initialisation (thread pools, faiss), then the peak
is reset and the full-size call measured.

    python -m benchmarks.memory --op nearest_code --backend torch --n 65536 --k 16384 --d 64 [--faiss auto 0 1]
    python -m benchmarks.memory --report [--out DIR]    # the README's contract points → results/<date>/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass

__all__ = [
    "ALLOCATOR_ENV",
    "PeakMemory",
    "peak_supported",
    "allocator_pinned",
    "method_description",
    "ensure_allocator_env",
    "measure_in_subprocess",
    "MEBI",
]

MEBI = 1 << 20
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib() -> dict[str, int]:
    fields = {}
    with open(_STATUS) as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0])
    return fields


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_supported() -> str | None:
    """None when the in-process peak measurement works here, else why not."""
    if not os.path.exists(_STATUS):
        return "no /proc/self/status (not Linux)"
    if not _reset_peak():
        return "cannot reset the RSS high-water mark (/proc/self/clear_refs not writable)"
    return None


@dataclass
class PeakMemory:
    """Context manager: ``extra_bytes`` = peak resident growth over the block (host), or CUDA peak allocation growth
    when ``cuda=True``. ``extra_bytes`` is None when the measurement is not supported here."""

    cuda: bool = False
    extra_bytes: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._ok = _reset_peak()
            self._base = _status_kib()["VmRSS"] if self._ok else None
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.extra_bytes = torch.cuda.max_memory_allocated() - self._base
        elif self._ok:
            self.extra_bytes = max(0, _status_kib()["VmHWM"] - self._base) * 1024


def allocator_pinned() -> bool:
    """Whether this process runs with glibc's mmap threshold pinned (:data:`ALLOCATOR_ENV`): peaks are exact."""
    return all(os.environ.get(key) == value for key, value in ALLOCATOR_ENV.items())


def method_description() -> str:
    """How peaks are measured in this process, for the results' metadata."""
    host = ("host: VmHWM growth over the gate call after /proc/self/clear_refs reset, "
            + ("glibc mmap threshold pinned (exact; benchmarks/memory.py)" if allocator_pinned()
               else "default allocator (a lower bound: blocks freed by earlier calls are reused without new page "
                    "faults; --exact-memory pins it)"))
    reason = peak_supported()
    return (host if reason is None else f"host: not measured ({reason})") + "; cuda: max_memory_allocated growth"


def ensure_allocator_env(module: str, argv: list[str]) -> None:
    """Re-execute ``python -m module argv`` with :data:`ALLOCATOR_ENV` set, unless it already is (never returns
    when it re-executes)."""
    if all(os.environ.get(key) == value for key, value in ALLOCATOR_ENV.items()):
        return
    env = {**os.environ, **ALLOCATOR_ENV}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def measure_in_subprocess(
    op: str, backend: str, n: int, k: int, d: int, *, levels: int = 1, faiss: tuple[str, ...] = ("auto",),
    timeout: float = 600,
) -> list[dict]:
    """Peak extra host memory of one ``fastrq.<op>`` call per ``FASTRQ_FAISS`` mode in ``faiss``, measured one after
    the other in one fresh Python process. Returns the JSON records of :func:`_main` (``extra_bytes``, input sizes,
    ...), one per mode; raises RuntimeError with the child's stderr if it fails."""
    cmd = [
        sys.executable, "-m", "benchmarks.memory", "--op", op, "--backend", backend,
        "--n", str(n), "--k", str(k), "--d", str(d), "--levels", str(levels), "--faiss", *faiss,
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, **ALLOCATOR_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({done.returncode}): {done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.strip().splitlines() if line.startswith("{")]


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=["nearest_code", "residual_quantize"], default="nearest_code")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--k", type=int, default=16384)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--faiss", nargs="+", default=["auto"],
                        help="FASTRQ_FAISS values for the torch backend (auto, 0, 1), measured one after the other")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true",
                        help="measure the README's contract points, each in a fresh process, and write memory.json")
    parser.add_argument("--out", default=None, help="with --report: output folder (default results/<date>)")
    args = parser.parse_args(argv)
    if args.report:
        report(args.out)
        return

    import torch

    import fastrq

    torch.set_num_threads(args.threads)
    reason = peak_supported()
    if reason is not None:
        raise SystemExit(f"peak memory measurement unsupported: {reason}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=gen)
    if args.op == "nearest_code":
        codebook = torch.randn(args.k, args.d, generator=gen)
        run = lambda rows: fastrq.nearest_code(rows, codebook, backend=args.backend)  # noqa: E731
    else:
        codebook = torch.randn(args.levels, args.k, args.d, generator=gen)
        run = lambda rows: fastrq.residual_quantize(rows, codebook, backend=args.backend)  # noqa: E731
    for mode in args.faiss:
        os.environ["FASTRQ_FAISS"] = mode
        run(x[:64])  # lazy initialisation (thread pools, faiss import) is not the op's memory
        with PeakMemory() as peak:
            out = run(x)
        output_bytes = sum(t.numel() * t.element_size() for t in out)
        del out
        record = {
            "op": args.op, "backend": args.backend, "faiss": mode, "N": args.n, "K": args.k, "D": args.d,
            "L": args.levels, "extra_bytes": peak.extra_bytes, "output_bytes": output_bytes,
            "input_bytes": x.numel() * x.element_size() + codebook.numel() * codebook.element_size(),
            "nxk_float32_bytes": args.n * args.k * 4,
        }
        print(json.dumps(record), flush=True)


# The points the README's memory contract quotes (N = 65,536, K = 16,384, D = 64; the bound test's shape).
REPORT_POINTS = (
    dict(op="nearest_code", backend="torch", n=65536, k=16384, d=64, levels=1, faiss=("auto", "0", "1")),
    dict(op="residual_quantize", backend="torch", n=65536, k=16384, d=64, levels=2, faiss=("auto",)),
)


def report(out_dir: str | None = None, points=REPORT_POINTS) -> dict:
    """Measure every point of ``points`` in a fresh process each (:func:`measure_in_subprocess`, exact: pinned
    allocator) and write ``memory.json`` / ``memory.md`` through :mod:`benchmarks.harness`."""
    from . import harness

    records = []
    for point in points:
        faiss_modes = point["faiss"] if _faiss_importable() else tuple(m for m in point["faiss"] if m != "1")
        for found in measure_in_subprocess(point["op"], point["backend"], point["n"], point["k"], point["d"],
                                           levels=point["levels"], faiss=faiss_modes):
            case = {"op": found["op"], "D": found["D"], "K": found["K"], "L": found["L"], "N": found["N"]}
            records.append({**case, "provider": f"{found['backend']} FASTRQ_FAISS={found['faiss']}",
                            "metric": "peak_mem_bytes", "unit": "bytes", "value": found["extra_bytes"],
                            "device": "cpu", "status": "ok", "output_bytes": found["output_bytes"],
                            "input_bytes": found["input_bytes"], "nxk_float32_bytes": found["nxk_float32_bytes"]})
    meta = harness.collect_metadata("memory", {"points": [dict(p) for p in points], "fresh_process": True,
                                               "allocator_env": ALLOCATOR_ENV})
    meta["peak_memory_method"] = ("host: VmHWM growth over one call after /proc/self/clear_refs reset, in a fresh "
                                  "process per point with glibc's mmap threshold pinned (exact)")
    lines = ["# Peak extra memory of one call (torch backend, fresh process, exact)", "",
             "| op | N | K | D | L | provider | peak extra MiB | of which outputs MiB | one N×K float32 MiB |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['op']} | {r['N']:,} | {r['K']:,} | {r['D']} | {r['L']} | {r['provider']} | "
                     f"{r['value'] / MEBI:.1f} | {r['output_bytes'] / MEBI:.2f} | {r['nxk_float32_bytes'] / MEBI:,.0f} |")
    path = harness.write_results("memory", records, meta, "\n".join(lines), out_dir)
    print("\n".join(lines))
    print(f"\nwrote {path}")
    return {"meta": meta, "records": records}


def _faiss_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


if __name__ == "__main__":
    _main()
