"""The certified bf16 search against the float32 path and the bare GEMMs, interleaved in one process.

    python -m benchmarks.certified_search [--preset full|quick] [--threads 2] [--reps 5] [--out DIR]

Per case (N rows of x ~ N(0, 1), a codebook [K, D] ~ N(0, 1), fixed seed) and in interleaved rounds (round r runs
the providers in an order rotated by r), medians over ``reps`` rounds of:

- ``default``: ``fastrq.nearest_code(x, codebook)`` as a user calls it: the GEMM path below, or, at D ≤ 64 with
  K ≤ 1,024 (``fastrq.kernels.cpu.launch.available``), the fused native kernel;
- ``float32``: ``fastrq.nearest_code(backend="torch")`` with ``FASTRQ_BF16_SEARCH=0`` (and ``FASTRQ_FAISS=0``,
  the fused native kernel kept out: the GEMM path; its walk native where the library builds, as by default);
- ``certified``: the same with ``FASTRQ_BF16_SEARCH=1`` (:mod:`fastrq.ops.certified`; its row passes native, as
  by default where the library builds);
- ``certified-tensor-ops``: the certified search with ``FASTRQ_CPU_KERNEL=0`` (its row passes in tensor ops:
  what runs where no C compiler is available);
- ``gemm-floor``: only the float32 ``torch.mm`` x·Cᵀ in the torch backend's tiles (as ``benchmarks.ops_bench``'s
  provider of that name): no answer, a floor for any float32-GEMM search;
- ``bf16-mm``: the same bare GEMM in bfloat16 (bf16 output): a floor for any search with a bf16 first pass.

Also per case, from one extra certified call: the re-search rates (rows re-scored in float32, rows re-searched by
the exact path, mean candidates per row, :func:`fastrq.ops.certified.search_stats`), on the Gaussian data above
and on ``clustered`` data (x = a random code + 0.3·N(0, 1), the regime of a trained quantizer), and the rows whose
codes differ from the float32 path's (legitimate only on float32 near-ties; each is checked against float64).

A self-contained script: the shared harness (benchmarks/harness.py) was not on main when it was written.
Also the residual_quantize cases of ``RQ_CASES`` (float32 vs certified) and the timings of the
candidate-extraction primitives the design chose between (:func:`measure_alternatives`). Writes
``<out>/<name>.json`` and ``<name>.md`` (``--name`` defaults to certified_search; ``--out`` to
benchmarks/results/<UTC date>/).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from unittest import mock

import torch

import fastrq
from fastrq.ops import certified, torch_backend

from . import harness

PRESETS = {
    "full": dict(ns=(1024, 4800, 65536), dims=(64, 128, 256), ks=(256, 1024, 8192), reps=5),
    "quick": dict(ns=(1024, 4800), dims=(64, 128), ks=(256, 1024), reps=3),
}
PROVIDERS = ("default", "float32", "certified", "certified-tensor-ops", "gemm-floor", "bf16-mm")
# residual_quantize cases (N, D, K, L): the EnCodec-like shape of issue 10 and a D = 256 one
RQ_CASES = {
    "full": ((4800, 128, 1024, 8), (1024, 128, 1024, 8), (4096, 256, 1024, 4)),
    "quick": ((1024, 128, 1024, 8),),
}


def _inputs(n: int, dim: int, num_codes: int, seed: int = 0, clustered: bool = False):
    gen = torch.Generator().manual_seed(seed + 7919 * dim + 104729 * num_codes + n)
    codebook = torch.randn(num_codes, dim, generator=gen)
    if clustered:
        x = codebook[torch.randint(0, num_codes, (n,), generator=gen)] + 0.3 * torch.randn(n, dim, generator=gen)
    else:
        x = torch.randn(n, dim, generator=gen)
    return x, codebook


def _gemm_path():
    """The GEMM path at every D and K: the fused native search (D ≤ 64 with K ≤ 1,024) kept out."""
    return mock.patch.object(torch_backend.cpu_kernels, "available", lambda *args: False)


def _default(x, codebook):
    """nearest_code as a user calls it (whatever path runs by default here)."""
    return lambda: fastrq.nearest_code(x, codebook)[0]


def _search(x, codebook, mode: str, row_block_factor: int = 1, native: bool = True):
    """nearest_code on the GEMM path (:func:`_gemm_path`); ``row_block_factor`` > 1 scales the torch backend's row
    blocks (a what-if for the certified path, whose per-block costs amortise over more rows); ``native`` False: no
    native library (``FASTRQ_CPU_KERNEL=0``)."""
    tiles = {"TILE_ELEMENTS": torch_backend.TILE_ELEMENTS * row_block_factor}

    def call():
        env = {"FASTRQ_BF16_SEARCH": mode, "FASTRQ_FAISS": "0", **({} if native else {"FASTRQ_CPU_KERNEL": "0"})}
        with mock.patch.dict(os.environ, env), mock.patch.multiple(torch_backend, **tiles), _gemm_path():
            return fastrq.nearest_code(x, codebook, backend="torch")[0]

    return call


def _bare_gemm(x, codebook, dtype):
    """x·Cᵀ in the torch backend's tiles (rows × code block), output discarded."""
    num_codes = codebook.shape[0]
    code_block = min(num_codes, torch_backend.CODE_BLOCK)
    rows = min(x.shape[0], max(64, torch_backend.TILE_ELEMENTS // code_block))
    xs, book_t = x.to(dtype), codebook.to(dtype).T
    tile = torch.empty(rows, code_block, dtype=dtype)

    def call():
        for r0 in range(0, xs.shape[0], rows):
            block = xs[r0 : r0 + rows]
            for k0 in range(0, num_codes, code_block):
                k1 = min(num_codes, k0 + code_block)
                torch.mm(block, book_t[:, k0:k1], out=tile[: block.shape[0], : k1 - k0])

    return call


def _rates(x, codebook) -> dict:
    certified.reset_search_stats()
    codes = _search(x, codebook, "1")()
    stats = certified.search_stats()
    return {"codes": codes, **{k: stats[k] for k in ("rescore_rate", "exact_rate", "mean_candidates")}}


def _differing_rows(x, codebook, codes_a, codes_b) -> tuple[int, float]:
    """Rows where two searches disagree, and the largest excess of either one's distance over the float64
    minimum there, relative to ‖x‖² + max‖e‖² (the float32 tolerance of tests/test_ops.py is 2e-6)."""
    differ = (codes_a != codes_b).nonzero().view(-1)
    if differ.numel() == 0:
        return 0, 0.0
    rows = x[differ].double()
    dist = (rows[:, None, :] - codebook.double()[None]).square().sum(-1)
    best = dist.min(dim=1).values
    scale = rows.square().sum(1) + codebook.double().square().sum(1).max()
    worst = 0.0
    for codes in (codes_a, codes_b):
        excess = (dist.gather(1, codes[differ][:, None])[:, 0] - best) / scale
        worst = max(worst, float(excess.max()))
    return int(differ.numel()), worst


def run_case(n: int, dim: int, num_codes: int, reps: int, row_block_factor: int = 1) -> dict:
    x, codebook = _inputs(n, dim, num_codes)
    calls = {
        "default": _default(x, codebook),
        "float32": _search(x, codebook, "0"),
        "certified": _search(x, codebook, "1"),
        "certified-tensor-ops": _search(x, codebook, "1", native=False),
        "gemm-floor": _bare_gemm(x, codebook, torch.float32),
        "bf16-mm": _bare_gemm(x, codebook, torch.bfloat16),
    }
    providers = PROVIDERS
    if row_block_factor > 1:
        calls[f"certified-rows×{row_block_factor}"] = _search(x, codebook, "1", row_block_factor)
        providers = (*PROVIDERS, f"certified-rows×{row_block_factor}")
    reference_codes = calls["float32"]()  # warm-up (and the codebook preparation, cached by content)
    times: dict[str, list[float]] = {p: [] for p in providers}
    for name in providers:
        calls[name]()
    for rep in range(reps):
        order = providers[rep % len(providers) :] + providers[: rep % len(providers)]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    gaussian = _rates(x, codebook)
    differ, worst = _differing_rows(x, codebook, gaussian.pop("codes"), reference_codes)
    xc, _ = _inputs(n, dim, num_codes, clustered=True)
    clustered = _rates(xc, codebook)
    clustered.pop("codes")
    floor = medians["gemm-floor"]
    return {
        "N": n, "D": dim, "K": num_codes, "reps": reps,
        "ms": medians,
        "ms_min": {name: min(ts) * 1e3 for name, ts in times.items()},
        "default_over_floor": medians["default"] / floor,
        "certified_over_floor": medians["certified"] / floor,
        "float32_over_floor": medians["float32"] / floor,
        "bf16mm_over_floor": medians["bf16-mm"] / floor,
        "certified_over_float32": medians["certified"] / medians["float32"],
        "tensor_ops_over_floor": medians["certified-tensor-ops"] / floor,
        "certified_over_floor_of_minima": min(times["certified"]) / min(times["gemm-floor"]),
        **({f"certified_rows×{row_block_factor}_over_floor": medians[f"certified-rows×{row_block_factor}"] / floor}
           if row_block_factor > 1 else {}),
        "rates_gaussian": gaussian, "rates_clustered": clustered,
        "rows_differing_from_float32": differ, "worst_relative_excess_where_differing": worst,
    }


def run_rq_case(n: int, dim: int, num_codes: int, levels: int, reps: int) -> dict:
    """residual_quantize, float32 path vs certified, interleaved; codebooks ~ N(0, 1)·0.75^level."""
    gen = torch.Generator().manual_seed(11 + dim + num_codes + levels)
    x = torch.randn(n, dim, generator=gen)
    books = torch.randn(levels, num_codes, dim, generator=gen) * 0.75 ** torch.arange(levels)[:, None, None].float()

    def call(mode):
        def run():
            env = {"FASTRQ_BF16_SEARCH": mode, "FASTRQ_FAISS": "0"}
            with mock.patch.dict(os.environ, env), _gemm_path():
                return fastrq.residual_quantize(x, books, backend="torch")[1]

        return run

    calls = {"float32": call("0"), "certified": call("1")}
    codes = {name: fn() for name, fn in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for rep in range(reps):
        for name in (("float32", "certified") if rep % 2 == 0 else ("certified", "float32")):
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    certified.reset_search_stats()
    calls["certified"]()
    stats = certified.search_stats()
    medians = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    return {
        "op": "residual_quantize", "N": n, "D": dim, "K": num_codes, "L": levels, "reps": reps, "ms": medians,
        "certified_over_float32": medians["certified"] / medians["float32"],
        "rows_with_any_differing_level": int((codes["float32"] != codes["certified"]).any(dim=1).sum()),
        "rescore_rate": stats["rescore_rate"], "exact_rate": stats["exact_rate"],
        "mean_candidates": stats["mean_candidates"],
    }


def measure_alternatives(reps: int = 21) -> dict:
    """The candidate-extraction primitives the design chose between, on one row block's bf16 outputs
    (R = 1024 rows × 1024 codes, D = 128): ms, min over ``reps`` interleaved rounds."""
    rows, codes, dim, groups = 1024, 1024, 128, certified.GROUPS
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, dim, generator=gen).bfloat16()
    b = torch.randn(codes, dim, generator=gen).bfloat16()
    out = torch.mm(a, b.t())
    keys = out.view(torch.int16)
    out32 = out.float()
    limit = keys.amin(dim=1, keepdim=True) + 64
    group_min = keys.view(rows, codes // groups, groups).amin(dim=1)
    small_limit = limit.view(rows, 1)
    fns = {
        "bf16 mm [1024x128]x[128x1024] (the first pass itself)": lambda: torch.mm(a, b.t()),
        "float32 mm, same shape": lambda: torch.mm(a.float(), b.float().t()),
        "bf16 amin over groups of 64 (inner axis)": lambda: out.view(rows, -1, groups).amin(dim=2),
        "float32 amin over groups of 64 (inner axis)": lambda: out32.view(rows, -1, groups).amin(dim=2),
        "int16 amin over groups of 64 (inner axis)": lambda: keys.view(rows, -1, groups).amin(dim=2),
        "int16 amin over the middle axis (64 strided groups: chosen)": lambda: keys.view(rows, -1, groups).amin(dim=1),
        "int16 row amin": lambda: keys.amin(dim=1),
        "int16 row min with index": lambda: keys.min(dim=1),
        "full-tile compare + nonzero": lambda: (keys <= limit).nonzero(),
        "group minima compare + nonzero (chosen)": lambda: (group_min <= small_limit).nonzero(),
        "group minima sign bit of max(p, 0) − (L + 1), + nonzero":
            lambda: group_min.clamp(min=0).sub_(small_limit + 1).bitwise_right_shift_(15).nonzero(),
    }
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(ts) * 1e3 for name, ts in times.items()}


def _metadata(args) -> dict:
    def git(*cmd):
        try:
            out = subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent)
            return out.stdout.strip() or None
        except Exception:
            return None

    cpu = harness.cpu_info()
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--", "fastrq")),
        "cpu": cpu["cpu"], "cpu_id": cpu["cpu_id"], "bf16_matmul_is_fast": certified.bf16_matmul_is_fast(),
        "threads": args.threads,
        "load_average": os.getloadavg(), "preset": args.preset,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "fastrq": fastrq.__version__},
    }


def _ms(ms: dict, name: str) -> str:
    return f"{ms[name]:.2f}" if name in ms else "–"  # results written before the provider existed lack it


def _ratio(record: dict, key: str) -> str:
    return f"{record[key]:.2f}" if key in record else "–"


def _markdown(meta: dict, records: list[dict], rq_records: list[dict], alternatives: dict) -> str:
    lines = [
        "# Certified bf16 search vs float32 (nearest_code, CPU)",
        "",
        f"{meta['timestamp']}, {harness.cpu_label(meta)}, {meta['threads']} threads, "
        f"torch {meta['versions']['torch']}, "
        f"git {meta['git_revision']}{' (dirty)' if meta['git_dirty'] else ''}; load average at start "
        f"{meta['load_average'][0]:.1f}, at the end {meta.get('load_average_end', [float('nan')])[0]:.1f} (the "
        f"machine is shared: compare the ratios; medians of {records[0]['reps']} interleaved rounds, and the ratio "
        "of the fastest rounds, which contention disturbs least).",
        "",
        "| N | D | K | default ms | float32 ms | certified ms | tensor-op passes ms | gemm-floor ms | bf16-mm ms "
        "| default / floor | certified / floor | (of minima) | tensor-op passes / floor "
        "| float32 / floor | certified / float32 | re-scored rows | exact rows | candidates / row "
        "| clustered: re-scored, exact, cand. | rows ≠ float32 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in records:
        ms, g, c = r["ms"], r["rates_gaussian"], r["rates_clustered"]
        lines.append(
            f"| {r['N']:,} | {r['D']} | {r['K']:,} | {_ms(ms, 'default')} | {ms['float32']:.2f} | "
            f"{ms['certified']:.2f} | {ms['certified-tensor-ops']:.2f} | "
            f"{ms['gemm-floor']:.2f} | {ms['bf16-mm']:.2f} | {_ratio(r, 'default_over_floor')} | "
            f"**{r['certified_over_floor']:.2f}** | "
            f"{r['certified_over_floor_of_minima']:.2f} | {r['tensor_ops_over_floor']:.2f} | "
            f"{r['float32_over_floor']:.2f} | {r['certified_over_float32']:.2f} | {g['rescore_rate']:.1%} | "
            f"{g['exact_rate']:.2%} | {g['mean_candidates']:.2f} | {c['rescore_rate']:.1%}, {c['exact_rate']:.2%}, "
            f"{c['mean_candidates']:.2f} | {r['rows_differing_from_float32']} |"
        )
    lines += [
        "",
        "certified / floor ≤ 0.5 is issue 10's floor for D ≥ 64 at N = 65,536 (where bf16 is fast); default: "
        "what `fastrq.nearest_code` runs here (the fused native kernel at D ≤ 64 with K ≤ 1,024). Re-scored rows: "
        "2 … MAX_CANDIDATES candidates, re-scored exactly in float32; exact rows: searched again by the float32 "
        "path. Rows ≠ float32: codes that differ from the float32 path's (both within the float32 tolerance; "
        "largest relative excess in the JSON).",
    ]
    if rq_records:
        lines += [
            "",
            "## residual_quantize",
            "",
            "| N | D | K | L | float32 ms | certified ms | certified / float32 | re-scored rows | exact rows | "
            "candidates / row | rows ≠ float32 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rq_records:
            lines.append(
                f"| {r['N']:,} | {r['D']} | {r['K']:,} | {r['L']} | {r['ms']['float32']:.2f} | "
                f"{r['ms']['certified']:.2f} | {r['certified_over_float32']:.2f} | {r['rescore_rate']:.1%} | "
                f"{r['exact_rate']:.2%} | {r['mean_candidates']:.2f} | {r['rows_with_any_differing_level']} |"
            )
    if alternatives:
        lines += ["", "## Candidate-extraction primitives (one 1024 × 1024 block, D = 128; ms, min of 21)", "",
                  "| primitive | ms |", "|---|---:|"]
        lines += [f"| {name} | {ms:.3f} |" for name, ms in alternatives.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--ns", type=int, nargs="*", default=None)
    parser.add_argument("--dims", type=int, nargs="*", default=None)
    parser.add_argument("--ks", type=int, nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-rq", action="store_true", help="skip the residual_quantize cases")
    parser.add_argument("--name", default="certified_search", help="file name stem of the outputs")
    parser.add_argument("--row-block-factor", type=int, default=1,
                        help="also time the certified path with the torch backend's row blocks this many times larger")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="write the markdown of a stored results file next to it, and exit")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(
            _markdown(payload["meta"], payload["records"], payload["residual_quantize"], payload["alternatives_ms"])
        )
        return
    if args.dims and min(args.dims) <= 32:
        parser.error("--dims must be > 32: at D <= 32 the native small-D kernel, not the GEMM path, runs")
    preset = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    ns, dims, ks = args.ns or preset["ns"], args.dims or preset["dims"], args.ks or preset["ks"]
    reps = args.reps or preset["reps"]
    out = args.out or Path(__file__).parent / "results" / _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    meta = _metadata(args)
    records = []
    for n in ns:
        for dim in dims:
            for num_codes in ks:
                record = run_case(n, dim, num_codes, reps, args.row_block_factor)
                records.append(record)
                ms = record["ms"]
                print(f"N={n} D={dim} K={num_codes}: float32 {ms['float32']:.2f} ms, certified {ms['certified']:.2f}, "
                      f"floor {ms['gemm-floor']:.2f}, bf16-mm {ms['bf16-mm']:.2f}; certified/floor "
                      f"{record['certified_over_floor']:.2f}; "
                      f"re-scored {record['rates_gaussian']['rescore_rate']:.1%}, "
                      f"exact {record['rates_gaussian']['exact_rate']:.2%}"
                      + "".join(f"; {k} {v:.2f}" for k, v in record.items() if k.startswith("certified_rows")),
                      flush=True)
    rq_records = []
    for case in () if args.no_rq else RQ_CASES[args.preset]:
        record = run_rq_case(*case, reps)
        rq_records.append(record)
        print(f"residual_quantize N={case[0]} D={case[1]} K={case[2]} L={case[3]}: float32 "
              f"{record['ms']['float32']:.2f} ms, certified {record['ms']['certified']:.2f}", flush=True)
    alternatives = measure_alternatives()
    meta["load_average_end"] = os.getloadavg()
    payload = {"meta": meta, "records": records, "residual_quantize": rq_records, "alternatives_ms": alternatives}
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(_markdown(meta, records, rq_records, alternatives))
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.md')}")


if __name__ == "__main__":
    main()
