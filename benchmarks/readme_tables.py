"""The README's performance tables, rendered from the stored results files.

    python -m benchmarks.readme_tables           # rewrite every table block of README.md and benchmarks/README.md
    python -m benchmarks.readme_tables --check   # exit 1 if a block differs from its rendering (the tests do this)

A block is written in the markdown as

    <!-- results-table RENDERER [key=value ...] benchmarks/results/<date>/<name>.json -->
    ...generated: the table, its footnotes and a "Source:" link to the file...
    <!-- /results-table -->

so every number in it comes from that file, and the file is cited under the table. Renderers: ``ops-rq`` (greedy
RQ, optional ``L=``), ``ops-nearest``, ``small-d``, ``module-step`` (module_step.json or train_step.json), ``sampling``,
``memory``, ``kernel-layouts``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from . import harness

ROOT = harness.ROOT
SMALL_D = 32  # D ≤ this: the torch backend's default path was faiss' fused kernel when these files were written
READMES = (ROOT / "README.md", ROOT / "benchmarks" / "README.md")
BLOCK = re.compile(r"(<!-- results-table (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /results-table -->)", re.S)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _x(value: float | None, bold_below: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return f"**{text}**" if bold_below is not None and value < bold_below else text


class _Ops:
    """Medians and ratios of an ops results document, keyed by (op, D, K, L, provider)."""

    def __init__(self, document: dict):
        records = document["records"]
        key = lambda r: (r["op"], r["D"], r["K"], r["L"], r["provider"])  # noqa: E731
        self.time = {key(r): r for r in records if r["metric"] == "time_ms" and r["value"] is not None}
        self.ratio = {key(r): r["value"] for r in records if r["metric"] == "time_ratio" and r["baseline"] == "torch"}
        self.of_medians = any(r.get("of_medians") for r in records if r["metric"] == "time_ratio")
        self.naive_rows = {r.get("rows_timed") for r in self.time.values() if r["provider"] == "naive"} - {None}
        self.n = sorted({r["N"] for r in self.time.values()})

    def ms(self, *key) -> float | None:
        found = self.time.get(key)
        return None if found is None else found["value"]

    def over(self, a: str, b: str, *case) -> float | None:
        """time(a) / time(b) from medians (for pairs that have no per-round ratio record)."""
        ta, tb = self.ms(*case, a), self.ms(*case, b)
        return None if ta is None or tb is None else ta / tb

    def footnotes(self) -> list[str]:
        rows = f"the first {min(self.naive_rows):,} rows" if self.naive_rows else "a row subsample"
        notes = [f"`*` extrapolated: the naive reference was timed on {rows} and scaled linearly to "
                 f"N = {', '.join(f'{n:,}' for n in self.n)}."]
        notes.append("Ratios are ratios of medians (this file predates per-round ratios)." if self.of_medians else
                     "Ratios to fastrq are medians of per-round ratios; those to gemm-floor are ratios of medians.")
        return notes


def ops_rq(document: dict, L: int | None = None) -> str:
    ops = _Ops(document)
    cases = sorted({k[1:4] for k in ops.time if k[0] == "residual_quantize" and (L is None or k[3] == L)})
    lvl = ["L"] if L is None else []
    header = ["D", "K", *lvl, "fastrq ms", "gemm-floor ms", "naive / fastrq", "faiss flat (level by level) / fastrq",
              "faiss RQ (beam 1) / fastrq", "ResidualVQ (eval) / fastrq", "ResidualVQ / gemm-floor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for d, k, levels in cases:
        c = ("residual_quantize", d, k, levels)
        naive = ops.ratio.get((*c, "naive"))
        naive_text = _x(naive) + ("*" if naive is not None and ops.time[(*c, "naive")]["extrapolated"] else "")
        cells = [str(d), f"{k:,}", *([str(levels)] if L is None else []), _ms(ops.ms(*c, "torch")),
                 _ms(ops.ms(*c, "gemm-floor")), naive_text, _x(ops.ratio.get((*c, "faiss-flat"))),
                 _x(ops.ratio.get((*c, "faiss-rq"))), _x(ops.ratio.get((*c, "vqp")), bold_below=10),
                 "–" if d <= SMALL_D else _x(ops.over("vqp", "gemm-floor", *c))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *ops.footnotes(), "**Bold**: ResidualVQ / fastrq below issue 2's 10×. "
                      f"ResidualVQ / gemm-floor is left out at D ≤ {SMALL_D}: there fastrq does not search with a GEMM "
                      "(faiss' fused kernel in the files before 2026-12-01, the native CPU kernel since), so the "
                      "floor does not bound it; since 2026-12-02 the native kernel also runs at D ≤ 64 with "
                      "K ≤ 1,024, where the column is kept as the floor of any GEMM search."])


def ops_nearest(document: dict) -> str:
    ops = _Ops(document)
    cases = sorted({k[1:3] for k in ops.time if k[0] == "nearest_code"})
    header = ["D", "K", "fastrq ms", "torch-pure ms", "gemm-floor ms", "faiss ms", "fastrq / faiss", "naive / fastrq",
              "VectorQuantize / fastrq"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for d, k in cases:
        c = ("nearest_code", d, k, None)
        faiss = ops.ratio.get((*c, "faiss-flat"))
        naive = ops.ratio.get((*c, "naive"))
        naive_text = _x(naive) + ("*" if naive is not None and ops.time[(*c, "naive")]["extrapolated"] else "")
        cells = [str(d), f"{k:,}", _ms(ops.ms(*c, "torch")), _ms(ops.ms(*c, "torch-pure")),
                 _ms(ops.ms(*c, "gemm-floor")), _ms(ops.ms(*c, "faiss-flat")),
                 "–" if faiss is None else f"{1 / faiss:.2f}", naive_text, _x(ops.ratio.get((*c, "vqp")))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *ops.footnotes(), "fastrq / faiss < 1: fastrq is faster."])


def small_d_table(document: dict) -> str:
    """``ops_bench --preset small-d``: nearest_code, fastrq's time / faiss' fused kernel's at every N, and the
    flatness of fastrq's cost per row (worst / best ns per row over N ≥ 2,048)."""
    time = {(r["D"], r["K"], r["N"], r["provider"]): r["value"] for r in document["records"]
            if r["metric"] == "time_ms" and r["op"] == "nearest_code" and r["value"] is not None}
    ratio = {(r["D"], r["K"], r["N"], r["provider"]): r["value"] for r in document["records"]
             if r["metric"] == "time_ratio" and r["op"] == "nearest_code" and r["baseline"] == "torch"}
    ns = sorted({k[2] for k in time})
    cases = sorted({k[:2] for k in time})
    tiled = any(k[3] == "torch-tiled" for k in time)
    header = ["D", "K", *[f"N = {n:,}" for n in ns], "ns/row best … worst (N ≥ 2,048)", "worst / best",
              *(["pure PyTorch: worst / best"] if tiled else [])]
    lines = ["| " + " | ".join(header) + " |", "|---:|---:|" + "---:|" * (len(header) - 2)]

    def flatness(provider, d, k):
        per_row = [time[(d, k, n, provider)] * 1e6 / n for n in ns if n >= 2048 and (d, k, n, provider) in time]
        return (f"{min(per_row):,.0f} … {max(per_row):,.0f}", f"{max(per_row) / min(per_row):.2f}") if per_row \
            else ("–", "–")

    for d, k in cases:
        cells = []
        for n in ns:
            fused = ratio.get((d, k, n, "faiss-fused"))
            cells.append("–" if fused is None else f"{1 / fused:.2f}")
        flat = flatness("torch", d, k)
        extra = f" {flatness('torch-tiled', d, k)[1]} |" if tiled else ""
        lines.append(f"| {d} | {k:,} | " + " | ".join(cells) + f" | {flat[0]} | {flat[1]} |" + extra)
    return "\n".join([*lines, "", "Cells: fastrq `nearest_code` time / faiss `IndexFlatL2` k = 1 with its fused "
                      "kernel forced at every N (`distance_compute_blas_threshold = 0`), medians of per-round ratios "
                      "(< 1: fastrq is faster). Then fastrq's own cost per row across N"
                      + (", and that of the pure-PyTorch path (`FASTRQ_FAISS=0 FASTRQ_CPU_KERNEL=0`)." if tiled
                         else ".")])


def module_step_table(document: dict) -> str:
    from .module_step import contention_line, render_table

    return (render_table(document) + "\n\nRatios are medians of per-round ratios; – : not run (see the results file). "
            + contention_line(document))


def sampling_table(document: dict) -> str:
    from .sampling import render_table

    return render_table(document)


def memory_table(document: dict) -> str:
    lines = ["| op | N | K | D | L | FASTRQ_FAISS | peak extra MiB | of which outputs MiB |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in document["records"]:
        mode = r["provider"].split("FASTRQ_FAISS=")[-1]
        lines.append(f"| `{r['op']}` | {r['N']:,} | {r['K']:,} | {r['D']} | {r['L']} | `{mode}` | "
                     f"{r['value'] / 2**20:.1f} | {r['output_bytes'] / 2**20:.2f} |")
    return "\n".join(lines)


def kernel_layouts_table(document: dict) -> str:
    from .kernel_layouts import render_table

    return (render_table(document["records"]) + "\n\nms per bare `residual_quantize` call (backend `torch`), medians; "
            "ratios: medians of per-round ratios to the default layout (> 1: the default is faster); every layout "
            "gave bitwise the default's codes.")


def native_bf16_table(document: dict) -> str:
    from .native_bf16 import render_ratios

    return (render_ratios(document) + "\n\nMedians of per-round ratios to the fused kernel's float32 search "
            "(`FASTRQ_BF16_SEARCH=0`; < 1: faster): bf16 = the pass on every call (`=1`), auto = the default; searched "
            "again: the row-levels the pass could not certify (one forced call, at the largest N); every provider's "
            "codes bit for bit the float32 search's. Times in the results file's markdown.")


RENDERERS: dict[str, Callable[..., str]] = {
    "ops-rq": ops_rq, "ops-nearest": ops_nearest, "small-d": small_d_table, "module-step": module_step_table, "sampling": sampling_table,
    "memory": memory_table, "kernel-layouts": kernel_layouts_table, "native-bf16": native_bf16_table,
}


def _parse(spec: str) -> tuple[str, dict[str, Any], str]:
    name, *rest = spec.split()
    if not rest or name not in RENDERERS:
        raise ValueError(f"bad results-table spec {spec!r}: RENDERER [key=value ...] PATH")
    kwargs = {}
    for item in rest[:-1]:
        key, _, value = item.partition("=")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, kwargs, rest[-1]


def render_block(spec: str, readme: Path) -> str:
    """The generated body of one block: the table, then the source link (relative to ``readme``'s folder)."""
    name, kwargs, source = _parse(spec)
    document = harness.read_results(ROOT / source)
    link = Path(os.path.relpath(ROOT / source, readme.parent)).as_posix()
    return f"{RENDERERS[name](document, **kwargs)}\n\nSource: [`{source}`]({link}).\n"


def blocks(readme: Path) -> list[tuple[str, str]]:
    """(spec, current body) of every block in ``readme``."""
    return [(m["spec"], m["body"]) for m in BLOCK.finditer(readme.read_text())]


def rewrite(readme: Path) -> bool:
    """Re-render every block of ``readme`` in place; True when something changed."""
    text = readme.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + render_block(m["spec"], readme) + m.group(4), text)
    if new != text:
        readme.write_text(new)
    return new != text


def stale(readme: Path) -> list[str]:
    """Specs of the blocks whose body differs from their rendering."""
    return [spec for spec, body in blocks(readme) if body != render_block(spec, readme)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report blocks that differ; exit 1 if any")
    args = parser.parse_args(argv)
    failed = False
    for readme in READMES:
        if args.check:
            for spec in stale(readme):
                print(f"{readme.relative_to(ROOT)}: stale block {spec}")
                failed = True
        elif rewrite(readme):
            print(f"rewrote the tables of {readme.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
