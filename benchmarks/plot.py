"""Plot an ops-benchmark results file: median time per case and provider (log scale), one panel per op and N.

    python -m benchmarks.plot benchmarks/results/<date>/ops_full.json [--out ops_full.png]

Bars are medians, whiskers the 20th–80th percentiles; hatched bars are extrapolated (naive, timed on a row
subsample) or chunked (a peer run in row chunks under the memory cap). A second row of panels shows each provider's
time over fastrq torch's (the results' ``time_ratio`` records; above 1: fastrq torch is faster). Reads the files
of :func:`benchmarks.harness.read_results`, older ones included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["plot_results"]

_ORDER = ("naive", "torch", "torch-pure", "triton", "gemm-floor", "faiss-flat", "faiss-rq", "vqp", "cdist")


def _case_label(d: int, k: int, levels: int) -> str:
    return f"D{d}\nK{k}" + (f"\nL{levels}" if levels else "")


def plot_results(result: dict, path: str | Path) -> Path:
    """Draw ``result`` (a results document: ``{"meta", "records"}``) into the PNG ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    records = result["records"]
    times = [r for r in records if r["metric"] == "time_ms" and r.get("value")]
    panels = sorted({(r["op"], r["N"]) for r in times}, key=lambda p: (p[0] != "nearest_code", p[1]))
    if not panels:
        raise ValueError("no timed results to plot")
    fig, axes = plt.subplots(2, len(panels), figsize=(max(8, 7 * len(panels)), 8.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    colours = dict(zip(_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for column, (op, n) in enumerate(panels):
        rows = [r for r in times if r["op"] == op and r["N"] == n]
        ratios = {(r["D"], r["K"], r.get("L") or 0, r["provider"]): r["value"] for r in records
                  if r["metric"] == "time_ratio" and r["op"] == op and r["N"] == n and r.get("baseline") == "torch"}
        cases = sorted({(r["D"], r["K"], r.get("L") or 0) for r in rows})
        providers = [p for p in _ORDER if any(r["provider"] == p for r in rows)]
        width = 0.8 / len(providers)
        x = np.arange(len(cases))
        time_ax, ratio_ax = axes[0][column], axes[1][column]
        for i, provider in enumerate(providers):
            found = {(r["D"], r["K"], r.get("L") or 0): r for r in rows if r["provider"] == provider}
            for j, case in enumerate(cases):
                r = found.get(case)
                if r is None:
                    continue
                pos = x[j] - 0.4 + width * (i + 0.5)
                approx = r.get("extrapolated") or (r.get("chunks") or 1) > 1
                style = dict(color=colours.get(provider), hatch="//" if approx else None,
                             edgecolor="black" if approx else None, linewidth=0.3)
                err = [[r["value"] - (r.get("p20_ms") or r["value"])], [(r.get("p80_ms") or r["value"]) - r["value"]]]
                time_ax.bar(pos, r["value"], width, yerr=err, capsize=1.5, label=provider, **style)
                if (*case, provider) in ratios:
                    ratio_ax.bar(pos, ratios[(*case, provider)], width, **style)
        time_ax.set_title(f"{op}, N = {n:,} (median ms; hatched: extrapolated or chunked)")
        time_ax.set_yscale("log")
        time_ax.set_ylabel("ms (log)")
        labels = [_case_label(*case) for case in cases]
        time_ax.set_xticks(x, labels, fontsize=7)
        handles, names = time_ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))  # one entry per provider
        time_ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=2)
        time_ax.grid(axis="y", which="both", alpha=0.3)
        ratio_ax.axhline(1.0, color="black", linewidth=0.8)
        ratio_ax.set_yscale("log")
        ratio_ax.set_ylabel("time / fastrq torch (log)")
        ratio_ax.set_xticks(x, labels, fontsize=7)
        ratio_ax.grid(axis="y", which="both", alpha=0.3)
    meta = result.get("meta", {})
    threads = meta.get("threads")
    threads = threads.get("torch") if isinstance(threads, dict) else threads
    fig.suptitle(f"fastrq ops benchmark ({meta.get('preset', '?')}), {threads} threads, {meta.get('cpu') or ''}, "
                 f"git {str(meta.get('git_revision'))[:10]}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    from .harness import read_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a results JSON written by benchmarks.ops_bench")
    parser.add_argument("--out", default=None, help="PNG path (default: beside the results file)")
    args = parser.parse_args(argv)
    out = plot_results(read_results(args.results), args.out or Path(args.results).with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
