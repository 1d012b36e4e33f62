"""Plot an ops-benchmark results file: median time per case and provider (log scale), one panel per op.

    python -m benchmarks.plot reports/ops_bench/full/results.json [--out ops_bench.png]

Bars are medians, whiskers the 20th–80th percentiles; hatched bars are extrapolated (naive, timed on a row
subsample) or chunked (a peer run in row chunks under the memory cap). A second row of panels shows each provider's
time divided by fastrq torch's (above 1: fastrq torch is faster).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["plot_results"]

_ORDER = ("naive", "torch", "torch-pure", "triton", "faiss-flat", "faiss-rq", "vqp", "cdist")


def _case_label(record: dict) -> str:
    label = f"D{record['D']}\nK{record['K']}"
    return label + (f"\nL{record['L']}" if record.get("L") else "")


def plot_results(result: dict, path: str | Path) -> Path:
    """Draw ``result`` (the dict written to results.json) into the PNG ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    records = [r for r in result["results"] if r.get("median_ms")]
    ops = [op for op in ("nearest_code", "residual_quantize") if any(r["op"] == op for r in records)]
    if not ops:
        raise ValueError("no timed results to plot")
    fig, axes = plt.subplots(2, len(ops), figsize=(max(8, 7 * len(ops)), 8.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    colours = dict(zip(_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for column, op in enumerate(ops):
        rows = [r for r in records if r["op"] == op]
        cases = sorted({(r["D"], r["K"], r.get("L") or 0) for r in rows})
        providers = [p for p in _ORDER if any(r["provider"] == p for r in rows)]
        width = 0.8 / len(providers)
        x = np.arange(len(cases))
        time_ax, ratio_ax = axes[0][column], axes[1][column]
        for i, provider in enumerate(providers):
            found = {(r["D"], r["K"], r.get("L") or 0): r for r in rows if r["provider"] == provider}
            base = {(r["D"], r["K"], r.get("L") or 0): r["median_ms"] for r in rows if r["provider"] == "torch"}
            for j, case in enumerate(cases):
                r = found.get(case)
                if r is None:
                    continue
                pos = x[j] - 0.4 + width * (i + 0.5)
                approx = r.get("extrapolated") or (r.get("chunks") or 1) > 1
                err = [[r["median_ms"] - r.get("p20_ms", r["median_ms"])], [r.get("p80_ms", r["median_ms"]) - r["median_ms"]]]
                time_ax.bar(pos, r["median_ms"], width, color=colours[provider], hatch="//" if approx else None,
                            edgecolor="black" if approx else None, linewidth=0.3, yerr=err, capsize=1.5,
                            label=provider)
                if case in base and provider != "torch":
                    ratio_ax.bar(pos, r["median_ms"] / base[case], width, color=colours[provider],
                                 hatch="//" if approx else None, edgecolor="black" if approx else None, linewidth=0.3)
        n = rows[0]["N"]
        time_ax.set_title(f"{op}, N = {n:,} (median ms; hatched: extrapolated or chunked)")
        time_ax.set_yscale("log")
        time_ax.set_ylabel("ms (log)")
        time_ax.set_xticks(x, [_case_label(dict(D=d, K=k, L=l)) for d, k, l in cases], fontsize=7)
        handles, labels = time_ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one entry per provider
        time_ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=2)
        time_ax.grid(axis="y", which="both", alpha=0.3)
        ratio_ax.axhline(1.0, color="black", linewidth=0.8)
        ratio_ax.set_yscale("log")
        ratio_ax.set_ylabel("time / fastrq torch (log)")
        ratio_ax.set_xticks(x, [_case_label(dict(D=d, K=k, L=l)) for d, k, l in cases], fontsize=7)
        ratio_ax.grid(axis="y", which="both", alpha=0.3)
    meta = result.get("meta", {})
    fig.suptitle(f"fastrq ops benchmark ({meta.get('preset', '?')}), {meta.get('threads', '?')} threads, "
                 f"{meta.get('cpu') or ''}, git {str(meta.get('git_revision'))[:10]}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="results.json written by benchmarks.ops_bench")
    parser.add_argument("--out", default=None, help="PNG path (default: beside the results file)")
    args = parser.parse_args(argv)
    result = json.loads(Path(args.results).read_text())
    out = plot_results(result, args.out or Path(args.results).with_name("ops_bench.png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
