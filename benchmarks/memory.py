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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    _main()
