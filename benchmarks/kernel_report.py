"""Static GPU report of the Triton kernels, without a GPU: ``python -m benchmarks.kernel_report``.

Compiles every kernel at the configuration the launchers pick for each target (sm_80 = A100, sm_90 = H100 / H200,
sm_100 = B200, sm_120 = RTX 50xx), with the same specialization the JIT uses at run time (see
``fastrq.kernels.static_check``), and prints per kernel × configuration × target: registers per thread, stack frame
and local memory (spills), shared memory requested at launch (against the target's per-block limit), resident
programs per SM, the MMA instruction shapes, and for the search the instructions of one code tile of the inner
loop per (row, code) pair: PTX (all), PTX without register moves and zero-initialisations, SASS.

Checks (exit status 1 if any fails): everything compiles; no spills and shared memory within the limit on sm_80 and
sm_90; tensor-core instructions wherever ``tl.dot`` has tensor-core operands; issue 12's floors on sm_80 and sm_90
(PTX instructions per pair: D ≤ 16 at most 12, D = 64 at most 16, for tf32x3 counted per MMA pass; the ``ieee``
mode is exempt: it runs D FMAs per pair on CUDA cores by definition). sm_100 and sm_120 are reported, not checked.

Options: ``--target sm_80`` (repeatable; default all four), ``--kernel TEXT`` (substring of the label), ``--quick``
(the floor classes and D = 256 on sm_80 / sm_90: what ``tests/test_kernel_report.py`` runs),
``--jobs N`` (parallel compilations, default 2), ``--csv PATH``, ``--json PATH`` (machine-readable, used by the
test and by ``benchmarks/gpu_validate.sh`` to compare run-time registers), ``--markdown PATH``;
``--sweep PATH``: compile the tile candidates of every search class for sm_80 and sm_90 and write every result and
the tile each class keeps (``fastrq.kernels.search.TILES`` is that choice).

Compiling needs real ``@triton.jit`` functions, so with ``TRITON_INTERPRET=1`` in the environment (where triton
turns them into interpreted ones) the script re-runs itself in a subprocess without it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time


def _rerun_without_interpreter(argv: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "benchmarks.kernel_report", *argv], env=env).returncode


if __name__ == "__main__" and os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit(_rerun_without_interpreter(sys.argv[1:]))

import torch  # noqa: E402

from fastrq.kernels import static_check as sc  # noqa: E402
from fastrq.kernels.static_check import FLOOR_TARGETS, TARGETS, CompileReport, compile_report  # noqa: E402

COLUMNS = ["kernel", "configuration", "tiles", "target", "status", "regs", "stack", "shared", "CTAs/SM", "mma",
           "PTX/pair", "PTX/pair (no moves)", "SASS/pair", "floor"]

_TENSOR_CORE_MODES = ("tf32x3", "tf32", "bf16", "certified")


def expects_tensor_cores(report: CompileReport) -> bool:
    c = report.call
    return c.kernel == "search" and c.dtype == torch.float32 and report.mode in _TENSOR_CORE_MODES


def floor_value(report: CompileReport) -> float:
    """The count the floor is checked on: PTX per pair, per MMA pass for tf32x3."""
    return report.per_pass if report.mode == "tf32x3" else report.per_pair


def problems(report: CompileReport) -> list[str]:
    """Why a report is not acceptable (empty: fine)."""
    if not report.ok:
        return [f"compile failed: {report.error}"]
    found = []
    checked = report.target in FLOOR_TARGETS
    if checked and report.spills:
        found.append(f"spills (stack {report.stack} B, local {report.local} B)")
    if checked and report.shared > report.shared_limit:
        found.append(f"shared memory {report.shared} B > {report.shared_limit} B")
    if expects_tensor_cores(report) and not report.mma_shapes:
        found.append("tl.dot emitted no tensor-core instruction")
    floor = report.call.floor()
    if checked and floor is not None:
        if report.per_pair <= 0:
            found.append("inner loop not found")
        elif floor_value(report) > floor:
            found.append(f"{floor_value(report):.2f} PTX instructions per pair > floor {floor}")
    return found


def _compile_one(job):
    call, target = job
    return compile_report(call, target)


def collect(jobs: list, workers: int = 2) -> list[CompileReport]:
    """Compile (call, target) jobs, ``workers`` at a time (worker processes)."""
    if workers <= 1:
        return [_compile_one(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_compile_one, jobs, chunksize=1))


def _f(value: float) -> str:
    return f"{value:.2f}" if value > 0 else "-"


def rows(reports: list[CompileReport]) -> list[list[str]]:
    out = []
    for r in reports:
        bad = problems(r)
        floor = r.call.floor()
        floor_text = "-" if floor is None else f"{floor}" + (" per pass" if r.mode == "tf32x3" else "")
        out.append([
            {"search": r.call.op if r.call.op != "train" else "search+walk"}.get(r.call.kernel, r.call.kernel),
            r.call.label, r.config, r.target, "; ".join(bad) if bad else "ok", str(r.registers), str(r.stack),
            f"{r.shared}", str(r.ctas_per_sm), ", ".join(r.mma_shapes) or "-",
            _f(r.per_pair) + (f" ({_f(r.per_pass)}/pass)" if r.mode == "tf32x3" and r.per_pass > 0 else ""),
            _f(r.per_pair_nomov), _f(r.sass_per_pair), floor_text,
        ])
    return out


def format_table(table: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in table)) if table else len(c) for i, c in enumerate(COLUMNS)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
    return "\n".join(lines)


def markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def record(r: CompileReport) -> dict:
    c = r.call
    cfg = c.config
    return dict(kernel=c.kernel, op=c.op, label=c.label, dim=c.dim, dtype=str(c.dtype).replace("torch.", ""),
                precision=c.precision, mode=r.mode, config=r.config, target=r.target, ok=r.ok, error=r.error,
                registers=r.registers, stack=r.stack, local=r.local, shared=r.shared, shared_limit=r.shared_limit,
                ctas_per_sm=r.ctas_per_sm, mma_shapes=r.mma_shapes, loop_instructions=r.loop_instructions,
                pairs_per_thread=r.pairs_per_thread, per_pair=r.per_pair, per_pair_nomov=r.per_pair_nomov,
                per_pass=r.per_pass, sass_per_pair=r.sass_per_pair, loop_ops=r.loop_ops,
                specialization=r.specialization, floor=c.floor(), tensor_cores_expected=expects_tensor_cores(r),
                problems=problems(r), tiles=None if cfg is None else cfg.__dict__)


TILES_MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels", "tiles.py")


def write_tiles(chosen: dict, source: str, meta: dict, module: str = TILES_MODULE) -> None:
    """Write ``kernels/tiles.py``: the chosen tile per (mode class, padded D) and target, from the sweep."""
    from fastrq.kernels import search

    table: dict = {}
    for name, entry in chosen.items():
        if entry is None:
            continue
        target = name.rsplit(" @ ", 1)[1]
        fields = {k: entry[k] for k in ("block_n", "block_k", "num_warps", "num_stages", "kernel", "block_d",
                                        "hoist_a")}
        table.setdefault(tuple(entry["key"]), {})[target] = (fields, name.rsplit(" @ ", 1)[0], round(entry["per_pair"], 2))
    lines = ['"""Search tiles per (mode class, padded D) and target: GENERATED, do not edit.', "",
             f"Written by ``python -m benchmarks.kernel_report --sweep {os.path.relpath(source)}`` on {meta['date']} "
             f"(triton {meta['triton']}) from that file: per class, the candidate",
             "compiled under the run-time specialization (N = 65,536, K = 1,024, L = 8) that does not spill and fits",
             "the shared memory, with the fewest PTX instructions per (row, code) pair (within 3 %: more resident",
             "programs per SM, then the larger tile). fastrq.kernels.search.choose_config reads it.", '"""', "",
             "TILES = {"]
    for key in sorted(table):
        lines.append(f"    {key!r}: {{")
        for target, (fields, label, per_pair) in sorted(table[key].items()):
            lines.append(f"        {target!r}: {fields!r},  # {per_pair} PTX/pair (worst of {label})")
        lines.append("    },")
    lines.append("}")
    with open(module, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"tiles -> {module}")


def run_sweep(path: str, workers: int) -> int:
    """Compile the candidates (resuming from ``path`` / ``path.partial``: a job already there is not compiled again),
    write every record and the choice per class."""
    start = time.perf_counter()
    done: dict = {}
    for source in (path, path + ".partial"):
        if os.path.exists(source):
            with open(source) as handle:
                text = handle.read()
            found = json.loads(text)["reports"] if source == path else [json.loads(x) for x in text.splitlines() if x]
            done.update({(r["label"], r["config"], r["target"]): r for r in found})
    jobs = [(c, t) for c, t in sc.sweep_calls() if (c.label, sc.config_text(c.config), t) not in done]
    print(f"{len(done)} records kept, {len(jobs)} to compile", flush=True)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool, open(path + ".partial", "a") as partial:
        for report in pool.map(_compile_one, jobs, chunksize=1):  # streamed: progress survives an interruption
            rec = record(report)
            done[(rec["label"], rec["config"], rec["target"])] = rec
            partial.write(json.dumps(rec) + "\n")
            partial.flush()
    wanted = {(c.label, sc.config_text(c.config), t) for c, t in sc.sweep_calls()}
    records = [r for key, r in done.items() if key in wanted]
    chosen = {}
    from fastrq.kernels import search

    groups: dict = {}
    for label, dim, dtype, precision in sc.SWEEP_CLASSES:
        mode = search.kernel_mode(dim, dtype, precision)
        groups.setdefault((search._mode_class(mode, dtype), search.padded_dim(dim, mode, dtype)), []).append(label)
    for key, labels in groups.items():
        for target in FLOOR_TARGETS:
            best = sc.best_of([r for r in records if r["label"] in labels and r["target"] == target])
            name = f"{key[0]} DP={key[1]} ({', '.join(labels)})"
            chosen[f"{name} @ {target}"] = None if best is None else {
                **best["tiles"], "key": list(key), "per_pair": best["per_pair"], "sass_per_pair": best["sass_per_pair"],
                "registers": best["registers"], "shared": best["shared"], "ctas_per_sm": best["ctas_per_sm"],
                "worst_label": best["label"]}
            print(f"{name:60s} {target}: " + ("none acceptable" if best is None else
                  f"{best['config']}  ({best['per_pair']:.2f} PTX/pair, {best['sass_per_pair']:.2f} SASS/pair, "
                  f"{best['registers']} regs, {best['shared']} B shared, {best['ctas_per_sm']} CTAs/SM)"), flush=True)
    meta = dict(triton=__import__("triton").__version__, torch=torch.__version__, num_rows=65536, num_codes=1024,
                num_levels=8, compiled_now=len(jobs), seconds_now=time.perf_counter() - start,
                date=time.strftime("%Y-%m-%d"))
    for r in records:
        r.pop("specialization", None)  # the same for every candidate of a class (the static report has it)
    with open(path, "w") as handle:  # one record per line: the file stays small and diffable
        handle.write('{"meta": ' + json.dumps(meta) + ',\n"chosen": ' + json.dumps(chosen, indent=1) + ',\n"reports": [\n'
                     + ",\n".join(json.dumps(r, separators=(",", ":")) for r in records) + "\n]}\n")
    write_tiles(chosen, path, meta)
    os.unlink(path + ".partial")
    print(f"{len(records)} records ({len(jobs)} compiled now, {meta['seconds_now']:.0f} s) -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    parser.add_argument("--kernel", default="", help="substring of the configuration label")
    parser.add_argument("--csv")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--sweep", metavar="PATH", help="compile the tile candidates, write the results to PATH")
    parser.add_argument("--jobs", type=int, default=2, help="compilations in parallel (default 2)")
    parser.add_argument("--quick", action="store_true", help="the floor classes (D 4, 16, 64) and D = 256, "
                        "sm_80 and sm_90 only (what the test runs)")
    args = parser.parse_args(argv)
    if args.sweep:
        return run_sweep(args.sweep, args.jobs)
    start = time.perf_counter()
    targets = tuple(args.target or (FLOOR_TARGETS if args.quick else TARGETS))
    jobs = [(c, t) for c in sc.calls(quick=args.quick) if args.kernel in c.label for t in targets]
    reports = collect(jobs, args.jobs)
    table = rows(reports)
    print(format_table(table))
    bad = sum(1 for r in reports if problems(r))
    print(f"\n{len(reports)} compilations in {time.perf_counter() - start:.1f} s; {bad} with problems "
          f"(triton {__import__('triton').__version__})")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(markdown(table) + "\n")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([record(r) for r in reports], handle, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
