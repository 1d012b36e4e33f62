"""The fused native kernel's certified bf16 first pass (``rq_cpu.c`` section 1b) against its own float32 search.

    python -m benchmarks.native_bf16 [--preset full|quick] [--n N ...] [--out DIR]
    python -m benchmarks.native_bf16 --render benchmarks/results/<date>/native_bf16.json

Per case (op, N, D, K, L, data) three providers of the same call, interleaved (:mod:`benchmarks.harness`):

- ``float32``: ``FASTRQ_BF16_SEARCH=0``, the fused kernel's float32 search;
- ``bf16``: ``FASTRQ_BF16_SEARCH=1``, the bf16 pass on every call;
- ``auto``: the default, which also skips the pass for a while on a codebook whose last call sent more than
  ``certified.NATIVE_DECLINE_FRACTION`` of its row-levels back to float32 (:class:`fastrq.ops.certified.LevelHistory`).

The op is ``fastrq.nearest_code`` (L = 1) or ``fastrq.residual_quantize`` (L > 1), ``FASTRQ_FAISS=0``, on shapes the
fused kernel takes (D ≤ 64 with K ≤ 1,024, any K at D ≤ 32). Data, x ``[N, D]`` and codebooks ``[L, K, D]`` uniform of
the modules' initial scale (±√(3 / D)):

- ``random``: x ~ N(0, 1 / D), the rows unrelated to the codes (a fresh codebook);
- ``clustered``: x = a random level-0 code + 0.05 · N(0, 1 / D) (a trained codebook: rows near their codes);
- ``twins``: clustered rows, and every level's second half of codes a copy of its first half (each row's best code
  has an exact twin, which the pass never certifies: its worst case).

Every provider's codes must equal the float32 provider's (the gate; bit for bit, not by tolerance). Reported: ms
(median), the per-round ratios bf16 / float32 and auto / float32, and from one extra ``bf16`` call the share of
row-levels the pass searched again in float32 (``certified.search_stats()["native_research_rate"]``). Writes
``native_bf16.json`` / ``.md`` into ``--out`` (default ``benchmarks/results/<date>/``). Needs a build with the pass
(AVX512-BF16 and OpenMP); elsewhere it writes the reason and no timings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import fastrq
from fastrq.kernels.cpu import launch
from fastrq.ops import certified

from . import harness

__all__ = ["CASES", "PRESETS", "DATA", "inputs", "run_case", "render_table", "render_ratios", "main"]

CASES = ((32, 256, 1), (32, 1024, 1), (32, 8192, 1), (64, 256, 1), (64, 1024, 1), (64, 256, 3))  # (D, K, L)
DATA = ("random", "clustered", "twins")
PRESETS = {
    # ≈ 6 minutes on 2 cores
    "full": dict(ns=(1024, 6272, 65536), cases=CASES, data=DATA, reps=15, budget_s=4.0),
    # CI-sized: a few seconds
    "quick": dict(ns=(1024,), cases=((64, 256, 1), (64, 256, 3)), data=("random", "twins"), reps=3, budget_s=0.5),
}
PROVIDERS = {
    "float32": {"FASTRQ_BF16_SEARCH": "0", "FASTRQ_FAISS": "0"},
    "bf16": {"FASTRQ_BF16_SEARCH": "1", "FASTRQ_FAISS": "0"},
    "auto": {"FASTRQ_BF16_SEARCH": "auto", "FASTRQ_FAISS": "0"},
}
RATIOS = (("bf16", "float32"), ("auto", "float32"))


def inputs(n: int, dim: int, num_codes: int, levels: int, data: str, seed: int = 0):
    """x ``[N, D]`` and codebooks ``[L, K, D]`` of one case (module docstring)."""
    gen = torch.Generator().manual_seed(seed + 7919 * dim + 104729 * num_codes + 31 * levels + DATA.index(data))
    books = (torch.rand(levels, num_codes, dim, generator=gen) * 2 - 1) * (3 / dim) ** 0.5
    if data == "twins":
        half = num_codes // 2
        books[:, half : 2 * half] = books[:, :half]
    if data == "random":
        x = torch.randn(n, dim, generator=gen) / dim ** 0.5
    else:
        x = books[0][torch.randint(0, num_codes, (n,), generator=gen)]
        x = x + 0.05 * torch.randn(n, dim, generator=gen) / dim ** 0.5
    return x.contiguous(), books.contiguous()


def _call(x: torch.Tensor, books: torch.Tensor):
    if books.shape[0] == 1:
        book = books[0]
        return lambda: fastrq.nearest_code(x, book)[0]
    return lambda: fastrq.residual_quantize(x, books)[1]


def _research_rate(call, env) -> float:
    with harness.scoped_env(env):
        before = certified.search_stats()
        call()
        after = certified.search_stats()
    rows = after["native_rows"] - before["native_rows"]
    return (after["native_researched_rows"] - before["native_researched_rows"]) / rows if rows else float("nan")


def run_case(n: int, dim: int, num_codes: int, levels: int, data: str, settings: dict, log=print) -> list[dict]:
    """Gate and time one case; its long-format records (plus a ``research_rate`` record)."""
    x, books = inputs(n, dim, num_codes, levels, data)
    case = {"op": "nearest_code" if levels == 1 else "residual_quantize", "N": n, "D": dim, "K": num_codes,
            "L": levels, "data": data}
    reason = None
    if not launch.bf16_search_available():
        reason = "the native library has no bf16 pass here (needs AVX512-BF16 and OpenMP)"
    elif not launch.available(x, dim, num_codes):
        reason = f"the fused native kernel does not take D = {dim}, K = {num_codes}"
    call = _call(x, books)
    if reason is not None:
        outcomes = harness.run([harness.Contender(name, label=name, skip=reason) for name in PROVIDERS], log=log)
        return harness.timing_records(case, outcomes)
    with harness.scoped_env(PROVIDERS["float32"]):
        want = call()

    def check(codes):
        same = torch.equal(codes, want)
        return same, "codes equal to the float32 search's" if same else "codes differ from the float32 search's"

    certified.reset_search_stats()  # and the codebooks' histories: auto starts fresh on this case
    contenders = [harness.Contender(name, call, check, label=name, env=env) for name, env in PROVIDERS.items()]
    outcomes = harness.run(contenders, reps=settings["reps"], budget_s=settings["budget_s"], log=log)
    records = harness.timing_records(case, outcomes, RATIOS, per_row=n)
    rate = _research_rate(call, PROVIDERS["bf16"])
    records.append({**case, "provider": "bf16", "metric": "research_rate", "unit": "fraction", "value": rate})
    ratios = {r["provider"]: r["value"] for r in records if r["metric"] == "time_ratio"}
    log(f"  bf16 / float32 {ratios.get('bf16', float('nan')):.2f}, auto / float32 {ratios.get('auto', float('nan')):.2f}, "
        f"searched again {rate:.1%}")
    return records


def _value(records, **match):
    found = harness.select(records, **match)
    return found[0]["value"] if found else None


def render_table(document: dict) -> str:
    """The markdown table of a results document (``native_bf16.json``)."""
    records = document["records"]
    cases = []
    for r in records:
        key = (r["op"], r["N"], r["D"], r["K"], r["L"], r["data"])
        if key not in cases:
            cases.append(key)
    lines = [
        "| op | N | D | K | L | data | float32 ms | bf16 ms | auto ms | bf16 / float32 | auto / float32 "
        "| searched again |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    skipped = []
    for op, n, d, k, levels, data in cases:
        match = dict(op=op, N=n, D=d, K=k, L=levels, data=data)
        times = {p: _value(records, metric="time_ms", provider=p, **match) for p in PROVIDERS}
        if all(t is None for t in times.values()):
            detail = harness.select(records, metric="time_ms", **match)[0].get("check", "")
            skipped.append(f"- {op} N={n:,} D={d} K={k:,} L={levels} {data}: {detail}")
            continue
        ratio = {p: _value(records, metric="time_ratio", provider=p, baseline="float32", **match) for p in ("bf16", "auto")}
        rate = _value(records, metric="research_rate", **match)
        cells = [f"{times[p]:.2f}" if times[p] is not None else "–" for p in PROVIDERS]
        cells += [f"{ratio[p]:.2f}" if ratio[p] is not None else "–" for p in ("bf16", "auto")]
        cells.append(f"{rate:.1%}" if rate is not None and rate == rate else "–")
        lines.append(f"| {op} | {n:,} | {d} | {k:,} | {levels} | {data} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if skipped:
        text += "\n\nNot timed:\n\n" + "\n".join(skipped)
    return text


def render_ratios(document: dict) -> str:
    """The ratios of a results document, one row per (op, D, K, L, data) and one column per N: bf16 / float32, then
    auto / float32, then the re-search rate at the largest N (the README's table)."""
    records = document["records"]
    ns = sorted({r["N"] for r in records})
    shapes = []
    for r in records:
        key = (r["op"], r["D"], r["K"], r["L"], r["data"])
        if key not in shapes:
            shapes.append(key)
    head = " | ".join(f"N = {n:,}" for n in ns)
    lines = [f"| op | D | K | L | data | bf16 / float32: {head} | auto / float32: {head} | searched again |",
             "|---|---:|---:|---:|---|" + "---:|" * (2 * len(ns) + 1)]
    for op, d, k, levels, data in shapes:
        match = dict(op=op, D=d, K=k, L=levels, data=data)
        cells = []
        for provider in ("bf16", "auto"):
            for n in ns:
                value = _value(records, metric="time_ratio", provider=provider, baseline="float32", N=n, **match)
                cells.append("–" if value is None else f"{value:.2f}")
        rate = _value(records, metric="research_rate", N=ns[-1], **match)
        cells.append("–" if rate is None or rate != rate else f"{rate:.1%}")
        lines.append(f"| {op} | {d} | {k:,} | {levels} | {data} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(document: dict) -> str:
    meta = document["meta"]
    return ("# The fused native kernel's certified bf16 pass against its float32 search\n\n"
            f"Threads {meta['threads'].get('torch')}; interleaved rounds, medians; ratios are medians of per-round "
            "ratios (< 1: faster than float32); every provider's codes equal the float32 search's. Searched again: "
            "row-levels the pass could not certify, from one forced-bf16 call.\n\n" + render_table(document) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--n", type=int, nargs="*", default=None, help="row counts (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the table of a stored results file")
    args = parser.parse_args(argv)
    if args.render:
        print(render_table(harness.read_results(args.render)))
        return
    preset = dict(PRESETS[args.preset])
    harness.set_threads(args.threads)
    settings = {"preset": args.preset, "reps": preset["reps"], "budget_s": preset["budget_s"], "threads": args.threads,
                "ns": list(args.n or preset["ns"]), "cases": [list(c) for c in preset["cases"]],
                "data": list(preset["data"]), "decline_fraction": certified.NATIVE_DECLINE_FRACTION}
    meta = harness.collect_metadata("native_bf16", settings)
    records = []
    for n in settings["ns"]:
        for dim, num_codes, levels in preset["cases"]:
            for data in preset["data"]:
                print(f"N={n:,} D={dim} K={num_codes:,} L={levels} {data}", flush=True)
                records += run_case(n, dim, num_codes, levels, data, settings)
    document = {"meta": meta, "records": records}
    path = harness.write_results("native_bf16", records, meta, _markdown(document), args.out)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
