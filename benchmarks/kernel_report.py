"""Static GPU report of the Triton kernels, without a GPU: ``python -m benchmarks.kernel_report``.

Compiles every kernel at the configuration the launchers pick by default for each target (sm_80 = A100,
sm_90 = H100), for each precision mode, and prints per kernel × configuration × target: registers per thread,
stack frame and local memory (both must be 0: anything else is register spilling), shared memory requested at launch,
and whether tensor-core instructions (``mma.sync`` / ``wgmma.mma_async``) appear in the PTX where ``tl.dot`` feeds
tensor cores. See ``fastrq.kernels.static_check`` for how.

Options: ``--target sm_80`` (repeatable; default both), ``--kernel NAME`` (substring filter), ``--jobs N``
(parallel compilations, default 2), ``--csv PATH``,
``--json PATH`` (machine-readable, used by the test). Exit status 1 if any kernel fails to compile, spills, or lacks
tensor-core instructions where expected.

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

from fastrq.kernels.static_check import TARGETS, CompileReport, compile_report, kernel_configs  # noqa: E402

COLUMNS = ["kernel", "configuration", "target", "status", "regs", "stack", "local", "shared", "tensor cores", "ptx ops"]


def problems(report: CompileReport) -> list[str]:
    """Why a report is not acceptable (empty: fine)."""
    if not report.ok:
        return [f"compile failed: {report.error}"]
    found = []
    if report.stack or report.local:
        found.append(f"spills (stack {report.stack} B, local {report.local} B)")
    if report.config.uses_dot and not (report.mma or report.wgmma):
        found.append("tl.dot emitted no mma/wgmma")
    return found


def _compile_one(job: tuple[str, int]) -> CompileReport:
    target, index = job
    report = compile_report(kernel_configs(target)[index], target)
    report.config = None  # the jit function does not pickle; the parent puts the config back
    return report


def collect(targets=tuple(TARGETS), kernel_filter: str = "", jobs: int = 2) -> list[CompileReport]:
    """Compile the selected kernels for ``targets``, ``jobs`` compilations at a time (worker processes)."""
    work = [(t, i) for t in targets for i, c in enumerate(kernel_configs(t)) if kernel_filter in c.name]
    if jobs <= 1:
        return [compile_report(kernel_configs(t)[i], t) for t, i in work]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        reports = list(pool.map(_compile_one, work))
    configs = {t: kernel_configs(t) for t in targets}
    for report, (target, index) in zip(reports, work):
        report.config = configs[target][index]
    return reports


def rows(reports: list[CompileReport]) -> list[list[str]]:
    out = []
    for r in reports:
        bad = problems(r)
        tensor = "wgmma" if r.wgmma else "mma" if r.mma else "-"
        if r.config.uses_dot:
            tensor += " (expected)"
        ops = ", ".join(f"{k} {v}" for k, v in r.ptx_ops.items() if v)
        out.append([r.config.name, r.config.label, r.target, "; ".join(bad) if bad else "ok", str(r.registers),
                    str(r.stack), str(r.local), str(r.shared_launch), tensor, ops])
    return out


def format_table(table: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in table)) if table else len(c) for i, c in enumerate(COLUMNS)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    parser.add_argument("--kernel", default="")
    parser.add_argument("--csv")
    parser.add_argument("--json")
    parser.add_argument("--jobs", type=int, default=2, help="compilations in parallel (default 2)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    reports = collect(tuple(args.target or TARGETS), args.kernel, args.jobs)
    table = rows(reports)
    print(format_table(table))
    bad = sum(1 for r in reports if problems(r))
    print(f"\n{len(reports)} compilations in {time.perf_counter() - start:.1f} s; {bad} with problems")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(table)
    if args.json:
        records = [dict(kernel=r.config.name, label=r.config.label, target=r.target, ok=r.ok, error=r.error,
                        registers=r.registers, stack=r.stack, local=r.local, shared=r.shared_launch, mma=r.mma,
                        wgmma=r.wgmma, uses_dot=r.config.uses_dot, problems=problems(r)) for r in reports]
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
