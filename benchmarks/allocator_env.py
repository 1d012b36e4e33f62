"""The quantizer's training step under glibc's allocator settings, each setting in processes of its own.

    python -m benchmarks.allocator_env [--preset full|quick] [--out DIR]
    python -m benchmarks.allocator_env --render benchmarks/results/<date>/allocator_env.json

Why: a training step allocates fresh tensors of N × D floats (the quantized rows, the commitment direction, the
loss's and the backward's temporaries). With glibc's defaults a block above the mmap threshold (128 KiB at first,
raised up to 32 MiB as such blocks are freed) is mapped for each allocation, and freed memory at the top of the heap
beyond the trim threshold is handed back to the system; either way the next step faults every 4 KiB page in again
(benchmarks note 22). ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` change both, but glibc reads them
once, when the process starts: they are the user's settings, not the library's, so the README offers them as a tip
with this script's numbers.

How: for every shape and round, one child process per setting (in a rotating order: A B C, B C A, …) builds the
module of :mod:`benchmarks.module_step` (same inputs, same step: forward + backward + EMA update), warms it up,
times its steps for a fixed budget and prints the median; the parent reports medians over rounds and medians of
the per-round ratios to the default setting. Threads: 2 unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import harness

__all__ = ["SETTINGS", "PRESETS", "run", "render_table", "main"]

REPO = Path(__file__).resolve().parents[1]
# Each setting is the environment its child processes start with (on top of this process's, minus the variables
# named in any setting). 32 MiB is glibc's largest mmap threshold on 64-bit systems.
SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "trim": {"MALLOC_TRIM_THRESHOLD_": str(1 << 28)},
    "mmap": {"MALLOC_MMAP_THRESHOLD_": str(1 << 25)},
    "mmap+trim": {"MALLOC_MMAP_THRESHOLD_": str(1 << 25), "MALLOC_TRIM_THRESHOLD_": str(1 << 28)},
}
_VARIABLES = sorted({k for setting in SETTINGS.values() for k in setting})
PRESETS = {
    "full": dict(cases=[("mnist-vq", 6272), ("semantic-id", 1024), ("semantic-id", 6272), ("encodec", 6272),
                        ("image-tokenizer", 6272)], rounds=5, budget_s=1.5, warmup=5),
    "quick": dict(cases=[("mnist-vq", 1024)], rounds=1, budget_s=0.05, warmup=1),
}


def _child(shape_name: str, n: int, budget_s: float, warmup: int, threads: int, seed: int) -> dict[str, Any]:
    """Runs inside a child process: the median ms of the module step for ``budget_s`` seconds after ``warmup``."""
    import torch

    from . import module_step

    harness.set_threads(threads)
    shape = module_step.SHAPES[shape_name]
    x, upstream = module_step._inputs(shape, n, seed)
    step = module_step._module_step(module_step._fastrq_module(shape, seed), x, upstream, batch_dim=False)
    for _ in range(warmup):
        step()
    times = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seen = {k: os.environ[k] for k in _VARIABLES if k in os.environ}
    return {"median_ms": 1e3 * statistics.median(times), "steps": len(times), "env": seen, "torch": torch.__version__}


def _spawn(setting: str, shape_name: str, n: int, preset: dict, threads: int, seed: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    env.update(SETTINGS[setting])
    args = [sys.executable, "-m", "benchmarks.allocator_env", "--child", shape_name, str(n), str(preset["budget_s"]),
            str(preset["warmup"]), str(threads), str(seed)]
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"child {setting} {shape_name} N={n} failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["env"] != SETTINGS[setting]:  # the point of the run: never report a setting the child did not get
        raise RuntimeError(f"child {setting} saw {result['env']}, not {SETTINGS[setting]}")
    return result


def run(preset: dict, threads: int, seed: int) -> list[dict[str, Any]]:
    """One record per (shape, N, setting): medians over rounds and the median per-round ratio to ``default``."""
    names = list(SETTINGS)
    records = []
    for shape_name, n in preset["cases"]:
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(preset["rounds"]):
            order = names[r % len(names):] + names[: r % len(names)]  # rotated: no setting always runs first
            for name in order:
                times[name].append(_spawn(name, shape_name, n, preset, threads, seed)["median_ms"])
            print(f"{shape_name} N={n:,} round {r + 1}: "
                  + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in times.items()), flush=True)
        for name in names:
            ratios = [a / b for a, b in zip(times[name], times["default"])]
            records.append({"shape": shape_name, "N": n, "setting": name, "env": SETTINGS[name],
                            "ms": statistics.median(times[name]), "ms_rounds": times[name],
                            "ratio_to_default": statistics.median(ratios), "rounds": preset["rounds"]})
    return records


def render_table(document: dict) -> str:
    """Markdown: one row per (shape, N); per setting its median ms and its ratio to the default."""
    from .module_step import SHAPES

    records = document["records"]
    names = [n for n in SETTINGS if any(r["setting"] == n for r in records)]
    head = "| shape | N | D | K | L | " + " | ".join(
        f"{n} ms" if n == "default" else f"{n}: ms, / default" for n in names) + " |"
    lines = [head, "|---|---:|---:|---:|---:|" + "---:|" * len(names)]
    cases = list(dict.fromkeys((r["shape"], r["N"]) for r in records))
    for shape_name, n in cases:
        shape = SHAPES[shape_name]
        cells = []
        for name in names:
            rec = next(r for r in records if r["shape"] == shape_name and r["N"] == n and r["setting"] == name)
            cells.append(f"{rec['ms']:.2f}" if name == "default" else f"{rec['ms']:.2f}, {rec['ratio_to_default']:.2f}")
        lines.append(f"| {shape.label} | {n:,} | {shape.dim} | {shape.num_codes:,} | {shape.levels} | "
                     + " | ".join(cells) + " |")
    settings = "; ".join(f"{n}: " + (" ".join(f"`{k}={v}`" for k, v in SETTINGS[n].items()) or "glibc's defaults")
                         for n in names)
    rounds = records[0]["rounds"] if records else 0
    lines += ["", "Module training step (`benchmarks.module_step`'s), median ms of each child process's steps, medians "
              f"over {rounds} rounds; ratios: medians of per-round ratios to the default (< 1: faster). Settings: "
              f"{settings}."]
    return "\n".join(lines)


def _glibc_version() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not glibc, or no confstr
        return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the table of a stored results file")
    parser.add_argument("--child", nargs=6, metavar=("SHAPE", "N", "BUDGET_S", "WARMUP", "THREADS", "SEED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shape_name, n, budget_s, warmup, threads, seed = args.child
        print(json.dumps(_child(shape_name, int(n), float(budget_s), int(warmup), int(threads), int(seed))))
        return
    if args.render:
        print(render_table(harness.read_results(args.render)))
        return
    preset = PRESETS[args.preset]
    settings = {"preset": args.preset, "threads": args.threads, "seed": args.seed, "rounds": preset["rounds"],
                "budget_s": preset["budget_s"], "settings": SETTINGS,
                "glibc": _glibc_version()}
    harness.set_threads(args.threads)
    meta = harness.collect_metadata("allocator_env", settings)
    records = run(preset, args.threads, args.seed)
    document = {"meta": meta, "records": records}
    path = harness.write_results("allocator_env", records, meta, render_table(document), args.out)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
