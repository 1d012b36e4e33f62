"""The native search's vector layouts against each other on this machine: the bare search
``fastrq.residual_quantize`` (backend ``torch``) with ``rq_cpu.c`` built in each layout, interleaved in one process.

    python -m benchmarks.kernel_layouts [--preset full|quick] [--n N ...] [--threads 2]

Layouts (columns; every one a build of the same source, :func:`fastrq.kernels.cpu.build.load_built` with -D flags):

- ``default``: what this machine builds (16 lanes with AVX-512; else 8 lanes, and the rows in the lanes at D ≤ 7);
- ``codes-in-lanes``: the default lanes, the codes in the lanes at every D (``-DROW_LANES_MAX_DIM=0``);
- ``16-lanes``: 16-lane vectors, 8-row blocks, codes in the lanes (``-DLANES=16``): the AVX-512 layout, which was
  also what every machine built before 2026-12-02 (on AVX2 the compiler splits each vector in two registers);
- ``pure``: no native kernel (``FASTRQ_CPU_KERNEL=0``): PyTorch's GEMM path.

Every layout must give bitwise the default's codes (the gate). Reported: ms per call (median), ns per (row, code,
level), and the per-round ratios to ``default``. Shapes: those of :mod:`benchmarks.module_step` that the native
kernel serves (D ≤ 64). Writes ``kernel_layouts.json`` / ``.md`` into ``--out`` (default
``benchmarks/results/<date>/``).
"""

from __future__ import annotations

import argparse
from typing import Any
from unittest import mock

import torch

import fastrq
from fastrq.kernels.cpu import build, launch

from . import harness
from .module_step import SHAPES, Shape

__all__ = ["LAYOUTS", "PRESETS", "layout_library", "run_case", "render_table", "main"]

LAYOUTS = {
    "default": (),
    "codes-in-lanes": ("-DROW_LANES_MAX_DIM=0",),
    "16-lanes": ("-DLANES=16",),
    "pure": None,  # FASTRQ_CPU_KERNEL=0
}
RATIOS = tuple((name, "default") for name in LAYOUTS if name != "default")
PRESETS = {
    # ≈ 5 minutes on 2 AVX2 cores
    "full": dict(shapes=tuple(k for k, s in SHAPES.items() if s.dim <= launch.MAX_DIM), ns=(1024, 6272), reps=15,
                 budget_s=4.0),
    "quick": dict(shapes=("mnist-vq", "dac"), ns=(256,), reps=2, budget_s=0.5),
}


def layout_library(flags: tuple[str, ...]):
    """The library built with the default flags and ``flags`` (cached like the default one)."""
    lib, reason = build.load_built(build._compiler(), build.FLAGS + build.OPENMP_FLAGS + flags)
    if lib is None:
        raise RuntimeError(reason)
    return lib


def _using(lib):
    """The launchers call ``lib`` inside this context."""
    return mock.patch.object(launch, "loaded_library", lambda: lib)


def _search(x: torch.Tensor, codebooks: torch.Tensor, lib):
    def call():
        if lib is None:
            return fastrq.residual_quantize(x, codebooks, backend="torch")[1]
        with _using(lib):
            return fastrq.residual_quantize(x, codebooks, backend="torch")[1]

    return call


def run_case(key: str, shape: Shape, n: int, layouts: list[str], libraries: dict[str, Any], settings: dict,
             log=print) -> list[dict]:
    """Gate and time the ``layouts`` (names of :data:`LAYOUTS`, ``default`` first) on one (shape, N)."""
    gen = torch.Generator().manual_seed(settings["seed"] + shape.dim * 7919 + shape.num_codes)
    x = torch.randn(n, shape.dim, generator=gen) / shape.dim ** 0.5
    codebooks = torch.randn(shape.levels, shape.num_codes, shape.dim, generator=gen) / shape.dim ** 0.5
    with _using(libraries["default"]):
        want = fastrq.residual_quantize(x, codebooks, backend="torch")[1]

    def check(codes):
        same = torch.equal(codes, want)
        return same, "bitwise the default's codes" if same else "codes differ from the default layout's"

    contenders = []
    for name in layouts:
        flags = LAYOUTS[name]
        env = {"FASTRQ_CPU_KERNEL": "0"} if flags is None else {}
        contenders.append(harness.Contender(name, _search(x, codebooks, libraries.get(name)), check,
                                            label=name, env=env))
    outcomes = harness.run(contenders, reps=settings["reps"], budget_s=settings["budget_s"], log=log)
    case = {"shape": key, "shape_label": shape.label, "N": n, "D": shape.dim, "K": shape.num_codes, "L": shape.levels}
    pairs = n * shape.num_codes * shape.levels
    records = harness.timing_records(case, outcomes, [pair for pair in RATIOS if pair[0] in outcomes])
    for r in harness.select(records, metric="time_ms"):
        if r["value"] is not None:
            records.append({**{k: r[k] for k in (*case, "provider", "label")}, "metric": "ns_per_pair", "unit": "ns",
                            "value": r["value"] * 1e6 / pairs, "status": r["status"]})
    for o in outcomes.values():
        s = o.summary()
        log(f"  {o.name:<15} " + (f"{s['median_ms']:9.3f} ms" if o.times else f"{o.status}: {o.detail}"))
    return records


def render_table(records: list[dict]) -> str:
    cases = sorted({(r["shape"], r["N"]) for r in records}, key=lambda c: (list(SHAPES).index(c[0]), c[1]))
    head = ("| shape | N | D | K | L | " + " | ".join(f"{name} ms" for name in LAYOUTS) + " | "
            + " | ".join(f"{num} / default" for num, _ in RATIOS) + " | default ns/pair |")
    lines = [head, "|" + "---|" * 5 + "---:|" * (len(LAYOUTS) + len(RATIOS) + 1)]
    for key, n in cases:
        rows = [r for r in records if r["shape"] == key and r["N"] == n]
        time = {r["provider"]: r["value"] for r in harness.select(rows, metric="time_ms")}
        ratio = {r["provider"]: r["value"] for r in harness.select(rows, metric="time_ratio")}
        per_pair = {r["provider"]: r["value"] for r in harness.select(rows, metric="ns_per_pair")}
        shape = SHAPES[key]
        cells = [shape.label, f"{n:,}", str(shape.dim), f"{shape.num_codes:,}", str(shape.levels)]
        cells += ["—" if time.get(name) is None else f"{time[name]:.3f}" for name in LAYOUTS]
        cells += ["—" if ratio.get(num) is None else f"{ratio[num]:.2f}" for num, _ in RATIOS]
        cells.append("—" if per_pair.get("default") is None else f"{per_pair['default']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="full")
    parser.add_argument("--shapes", nargs="+", choices=[k for k, s in SHAPES.items() if s.dim <= launch.MAX_DIM])
    parser.add_argument("--n", type=int, nargs="+")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS),
                        help="a subset of the layouts (default always runs: the gate compares with it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    layouts = ["default", *(name for name in args.layouts if name != "default")]
    settings = {"preset": args.preset, "shapes": list(args.shapes or preset["shapes"]), "ns": list(args.n or preset["ns"]),
                "reps": args.reps or preset["reps"], "budget_s": preset["budget_s"], "seed": args.seed,
                "threads": args.threads,
                "layouts": {k: (None if LAYOUTS[k] is None else list(LAYOUTS[k])) for k in layouts}}
    harness.set_threads(args.threads)
    if build.library() is None:
        raise SystemExit(f"the native library is unavailable here: {build.unavailable_reason()}")
    libraries = {name: layout_library(LAYOUTS[name]) for name in layouts if LAYOUTS[name] is not None}
    settings["lanes"] = {name: lib.fastrq_lanes() for name, lib in libraries.items()}
    records = []
    for key in settings["shapes"]:
        for n in settings["ns"]:
            print(f"{key} N={n}", flush=True)
            records += run_case(key, SHAPES[key], n, layouts, libraries, settings)
    meta = harness.collect_metadata("kernel_layouts", settings)
    table = render_table(records)
    path = harness.write_results("kernel_layouts", records, meta, "# Native search layouts\n\n" + table, args.out)
    print(table)
    return {"path": str(path), "records": records}


if __name__ == "__main__":
    main()
