"""The ops benchmark: fastrq against the naive reference and its peers, side by side in one process.

    python -m benchmarks.ops_bench --preset quick|full [--out DIR] [--ops ...] [--providers ...] [--n N ...] ...

For every case (op, D, K, L, N; x ~ N(0, 1), codebooks ~ N(0, 1) scaled by 0.75^level, fixed seed) each available
provider is prepared outside the timed region and warmed up on a few rows; then :mod:`benchmarks.harness` gates it
(its answer checked against fastrq's torch backend by distance, :mod:`benchmarks.codes_check`: a wrong provider is
reported as wrong and never timed; the peak extra memory of that call is measured) and times all providers
interleaved until each has ``reps`` repetitions or has spent its per-case budget. Reported: median, p20 / p50 / p80
in ms, peak extra memory, and every provider's time over fastrq torch's as the median of per-round ratios.

Providers: ``naive`` (fastrq backend="reference": the full rows×K matrix with the direct difference; run on the
first ``naive_rows`` rows and scaled linearly to N, marked ``*`` / ``"extrapolated": true``), ``torch`` (fastrq
backend="torch", ``FASTRQ_FAISS=auto``), ``torch-pure`` (``FASTRQ_FAISS=0``: no faiss anywhere), ``triton`` (CUDA
only), ``gemm-floor`` (the bare float32 GEMM of the search: a floor, no answer) and the peers of
:mod:`benchmarks.peers` when importable. Writes ``ops_<preset>.json`` (long format, with the metadata),
``ops_<preset>.md`` (the printed tables) and ``ops_<preset>.png`` (:mod:`benchmarks.plot`) into ``--out``
(default ``benchmarks/results/<date>/``). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

import fastrq

from . import harness, memory
from .codes_check import codes_checker
from .peers import PEERS, NotApplicable, Prepared, Provider

OPS = ("nearest_code", "residual_quantize")

PRESETS = {
    # ≤ ~2 minutes on 2 cores: the CI-sized grid (run by the README's main-job command); N = 1,024 is a real batch
    "quick": dict(ns=(1024, 8192), dims=(4, 64), ks=(256, 1024), levels=(1, 4), reps=5, budget_s=0.5,
                  naive_rows=256),
    # the grid, bounded (≈ 30 minutes on 2 cores, dominated by vector-quantize-pytorch at K = 8192)
    "full": dict(ns=(65536,), dims=(4, 64, 256), ks=(256, 1024, 8192), levels=(1, 4, 8), reps=5, budget_s=12.0,
                 naive_rows=2048),
    # issue 10's small-D floors (≈ 1 minute): nearest_code against faiss' fused kernel at every N (≤ 1.2×) and the
    # flatness of the cost per row from N = 512 to 131,072 (worst ns/row over N ≥ 2,048 ≤ 1.5× the best)
    "small-d": dict(ns=(512, 1024, 2048, 8192, 32768, 131072), dims=(4, 8, 16, 32), ks=(256, 1024), levels=(1,),
                    reps=31, budget_s=2.0, naive_rows=256, ops=["nearest_code"],
                    providers=["torch", "torch-tiled", "faiss-fused", "faiss-flat"]),
}
BASELINE = "torch"


@dataclass(frozen=True)
class Case:
    op: str
    dim: int
    num_codes: int
    levels: int  # 1 for nearest_code
    n: int

    def describe(self) -> str:
        lvl = f" L={self.levels}" if self.op == "residual_quantize" else ""
        return f"{self.op} D={self.dim} K={self.num_codes}{lvl} N={self.n}"

    def fields(self) -> dict:
        return {"op": self.op, "D": self.dim, "K": self.num_codes,
                "L": self.levels if self.op == "residual_quantize" else None, "N": self.n}


# ------------------------------------------------------------------------------------------- fastrq's providers
def _fastrq_call(op: str, x: torch.Tensor, codebooks: torch.Tensor, backend: str):
    book = codebooks[0] if op == "nearest_code" else codebooks
    fn = fastrq.nearest_code if op == "nearest_code" else fastrq.residual_quantize
    return lambda: fn(x, book, backend=backend)


def _fastrq_codes(op: str):
    return (lambda out: out[0]) if op == "nearest_code" else (lambda out: out[1])


def _prepare_backend(backend: str, faiss_mode: str | None, cpu_kernel: str | None = None):
    def prepare(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
        env = {} if faiss_mode is None else {"FASTRQ_FAISS": faiss_mode}
        if cpu_kernel is not None:
            env["FASTRQ_CPU_KERNEL"] = cpu_kernel
        return Prepared(_fastrq_call(op, x, codebooks, backend), _fastrq_codes(op), rows=x.shape[0], env=env)

    return prepare


def _prepare_naive(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    rows = min(x.shape[0], settings["naive_rows"])
    sub = x[:rows].contiguous()
    return Prepared(_fastrq_call(op, sub, codebooks, "reference"), _fastrq_codes(op), rows=rows)


def _prepare_triton(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    inner = _fastrq_call(op, x.cuda(), codebooks.cuda(), "triton")

    def call():
        out = inner()
        torch.cuda.synchronize()
        return out

    codes = _fastrq_codes(op)
    return Prepared(call, lambda out: codes(out).cpu(), rows=x.shape[0], cuda=True)


def _triton_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (the triton provider times GPU kernels only)"
    return fastrq.backend_status(torch.device("cuda"))["triton"]


def _prepare_gemm_floor(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    """Not a search: only the float32 GEMM x·C_lᵀ of every level, in the torch backend's row-block tiles, with no
    argmin, no residual update and no centring. Its time is a floor for any exact search that scores every code
    with a float32 GEMM (fastrq's, faiss', vector-quantize-pytorch's), so "peer / floor" bounds the ratio any such
    method can reach against that peer on this machine."""
    from fastrq.ops import torch_backend

    num_codes = codebooks.shape[1]
    code_block = min(num_codes, torch_backend.CODE_BLOCK)
    rows = min(x.shape[0], max(64, torch_backend.TILE_ELEMENTS // code_block))
    tile = torch.empty(rows, code_block)
    transposed = [book.T for book in codebooks]

    def call():
        for book_t in transposed:
            for r0 in range(0, x.shape[0], rows):
                block = x[r0 : r0 + rows]
                for k0 in range(0, num_codes, code_block):
                    k1 = min(num_codes, k0 + code_block)
                    torch.mm(block, book_t[:, k0:k1], out=tile[: block.shape[0], : k1 - k0])

    return Prepared(call, lambda out: None, rows=x.shape[0], floor=True,
                    note="bare float32 GEMM of the search, no answer")


FASTRQ_PROVIDERS: tuple[Provider, ...] = (
    Provider("naive", "fastrq reference (naive)", OPS, lambda: None, _prepare_naive),
    Provider("torch", "fastrq torch", OPS, lambda: None, _prepare_backend("torch", "auto")),
    # FASTRQ_FAISS=0 (no faiss: what `pip install fastrq` runs; the native kernel at D ≤ 32 since 2026-12-01, so
    # older files' torch-pure columns are the tiled GEMM there)
    Provider("torch-pure", "fastrq torch, FASTRQ_FAISS=0", OPS, lambda: None, _prepare_backend("torch", "0")),
    Provider("torch-tiled", "fastrq torch, FASTRQ_FAISS=0 FASTRQ_CPU_KERNEL=0 (pure PyTorch)", OPS, lambda: None,
             _prepare_backend("torch", "0", "0")),
    Provider("triton", "fastrq triton (CUDA)", OPS, _triton_reason, _prepare_triton),
    Provider("gemm-floor", "float32 GEMM only (a floor, no answer)", OPS, lambda: None, _prepare_gemm_floor),
)
ALL_PROVIDERS = FASTRQ_PROVIDERS + PEERS


def make_inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D] ~ N(0, 1); codebooks [L, K, D] ~ N(0, 1) · 0.75^level (residuals shrink level by level)."""
    gen = torch.Generator().manual_seed(seed + 7919 * case.dim + 104729 * case.num_codes + case.levels)
    x = torch.randn(case.n, case.dim, generator=gen)
    scale = 0.75 ** torch.arange(case.levels, dtype=torch.float32)[:, None, None]
    codebooks = torch.randn(case.levels, case.num_codes, case.dim, generator=gen) * scale
    return x, codebooks


# ------------------------------------------------------------------------------------------------------ a case
def run_case(case: Case, providers: list[Provider], settings: dict, log=print) -> list[dict]:
    """Gate and time every provider on one case; returns its long-format records (one per provider × metric,
    skipped providers included with the reason, plus each provider's per-round ratio to fastrq torch)."""
    x, codebooks = make_inputs(case, settings["seed"])
    prepared: dict[str, Prepared | harness.Contender] = {}
    for provider in providers:
        if case.op not in provider.ops:
            prepared[provider.name] = harness.Contender(provider.name, label=provider.label,
                                                        skip=f"does not implement {case.op}")
            continue
        reason = provider.unavailable_reason()
        if reason is not None:
            prepared[provider.name] = harness.Contender(provider.name, label=provider.label, skip=reason)
            continue
        try:
            warm = provider.prepare(case.op, x[: min(case.n, 256)].contiguous(), codebooks, settings)
            with harness.scoped_env(warm.env):
                warm.call()  # lazy initialisation (thread pools, imports), untimed
            prepared[provider.name] = provider.prepare(case.op, x, codebooks, settings)
        except NotApplicable as why:
            prepared[provider.name] = harness.Contender(provider.name, label=provider.label, skip=str(why))
        except Exception as error:  # a peer failing must not stop the benchmark: report it
            prepared[provider.name] = harness.Contender(provider.name, label=provider.label,
                                                        error=f"{type(error).__name__}: {error}")
    base_codes = _fastrq_codes(case.op)(_fastrq_call(case.op, x, codebooks, "torch")())  # the reference answer
    checked_rows = min([p.rows for p in prepared.values() if isinstance(p, Prepared)] or [case.n])
    check = codes_checker(case.op, x, codebooks, base_codes, checked_rows)
    contenders = []
    for provider in providers:
        p = prepared[provider.name]
        if isinstance(p, harness.Contender):
            contenders.append(p)
            continue
        contenders.append(harness.Contender(
            provider.name, p.call, None if p.floor else (lambda out, p=p: check(p.to_codes(out))),
            label=provider.label, scale=case.n / p.rows, env=p.env, memory_device="cuda" if p.cuda else "cpu",
            info={"rows_timed": p.rows, "chunks": p.chunks, "note": p.note}))
    outcomes = harness.run(contenders, reps=settings["reps"], budget_s=settings["budget_s"], log=log)
    for o in outcomes.values():
        if o.times:
            s = o.summary()
            mem = "n/a" if o.peak_bytes is None else f"{o.peak_bytes / memory.MEBI:.1f} MiB"
            star = "*" if o.contender.extrapolated else ""
            chunks = o.contender.info.get("chunks", 1)
            log(f"  {o.name:<11} {s['median_ms']:>11.2f} ms{star} (reps {s['reps']}, peak {mem}"
                f"{', chunks ' + str(chunks) if chunks > 1 else ''})  {o.detail}")
        else:
            log(f"  {o.name:<11} {o.status}: {o.detail}")
    pairs = [(name, BASELINE) for name in outcomes if name != BASELINE]
    return harness.timing_records(case.fields(), outcomes, pairs)


# ---------------------------------------------------------------------------------------------------- tables
def _fmt_ms(record: dict | None) -> str:
    if record is None:
        return ""
    if record.get("value") is None:
        return {"wrong": "WRONG", "error": "error"}.get(record["status"], "–")
    text = f"{record['value']:.1f}" if record["value"] >= 10 else f"{record['value']:.2f}"
    if record.get("extrapolated"):
        text += "*"
    if (record.get("chunks") or 1) > 1:
        text += f"ᶜ{record['chunks']}"
    return text


def markdown_tables(records: list[dict], pinned: bool | None = None) -> str:
    """One table per op and N: median ms per provider, then each provider's time over fastrq torch's ("x/torch",
    the median of per-round ratios: above 1 means fastrq torch is faster); then peak extra memory (MiB)."""
    pinned = memory.allocator_pinned() if pinned is None else pinned
    order = [p.name for p in ALL_PROVIDERS]
    out = []
    for op in OPS:
        for n in sorted({r["N"] for r in records if r["op"] == op}):
            rows = [r for r in records if r["op"] == op and r["N"] == n]
            times = {(r["D"], r["K"], r["L"] or 1, r["provider"]): r for r in rows if r["metric"] == "time_ms"}
            ratios = {(r["D"], r["K"], r["L"] or 1, r["provider"]): r for r in rows if r["metric"] == "time_ratio"}
            mems = {(r["D"], r["K"], r["L"] or 1, r["provider"]): r for r in rows if r["metric"] == "peak_mem_bytes"}
            shown = {k[3] for k, r in times.items() if r["value"] is not None or r["status"] in ("wrong", "error")}
            providers = sorted(shown, key=lambda p: order.index(p) if p in order else len(order))
            others = [p for p in providers if p != BASELINE]
            keys = sorted({k[:3] for k in times})
            lvl = ["L"] if op == "residual_quantize" else []
            header = ["D", "K", *lvl, *(f"{p} ms" for p in providers), *(f"{p}/torch" for p in others)]
            mheader = ["D", "K", *lvl, *(f"{p} MiB" for p in providers)]
            out += [f"### {op} (N = {n:,}; median ms; ratio = provider time / fastrq torch time, median of "
                    "per-round ratios)\n", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
            mem_lines = []
            for key in keys:
                cells = [str(key[0]), str(key[1])] + ([str(key[2])] if lvl else [])
                row = cells + [_fmt_ms(times.get((*key, p))) for p in providers]
                row += [f"{ratios[(*key, p)]['value']:.2f}" if (*key, p) in ratios else "" for p in others]
                out.append("| " + " | ".join(row) + " |")
                mem = [f"{mems[(*key, p)]['value'] / memory.MEBI:.0f}{'*' if mems[(*key, p)]['extrapolated'] else ''}"
                       if (*key, p) in mems else "" for p in providers]
                mem_lines.append("| " + " | ".join(cells + mem) + " |")
            out += ["", f"Peak extra memory of one call ({op}, N = {n:,}, MiB; `*` = measured on the naive row "
                    f"subsample; {'exact, allocator pinned' if pinned else 'a lower bound: default allocator'}):\n",
                    "| " + " | ".join(mheader) + " |", "|" + "---:|" * len(mheader), *mem_lines, ""]
    out.append("`*` naive: timed on a row subsample and scaled linearly to N (an extrapolation). `ᶜn`: the peer ran "
               "its rows in n chunks to stay under the memory cap. WRONG: failed the correctness check, not timed.")
    out += ["", targets_summary(records)]
    return "\n".join(out)


def targets_summary(records: list[dict]) -> str:
    """The issue's performance targets, checked on this run's ratios."""
    lines = ["### Targets (issue 2), from this run", ""]
    ratio = {(r["op"], r["provider"], r["D"], r["K"], r["L"], r["N"]): r["value"] for r in records
             if r["metric"] == "time_ratio" and r["baseline"] == BASELINE}
    for r in records:
        if r["provider"] != BASELINE or r["metric"] != "time_ms" or not r["value"]:
            continue
        key = (r["D"], r["K"], r["L"], r["N"])
        where = f"D={r['D']} K={r['K']}" + (f" L={r['L']}" if r["L"] else "") + f" N={r['N']}"
        if r["op"] == "nearest_code":
            faiss = ratio.get(("nearest_code", "faiss-flat", *key))
            if faiss:
                limit = 3.0 if r["D"] < 64 else 1.5
                lines.append(f"- nearest_code {where}: torch/faiss = {1 / faiss:.2f} (target ≤ {limit}) "
                             f"{'met' if 1 / faiss <= limit else 'NOT met'}")
            continue
        vqp, frq, floor = (ratio.get(("residual_quantize", p, *key)) for p in ("vqp", "faiss-rq", "gemm-floor"))
        parts = []
        if vqp:
            parts.append(f"vqp/torch = {vqp:.1f} (target ≥ 10) {'met' if vqp >= 10 else 'NOT met'}")
        if frq:
            parts.append(f"faiss-rq/torch = {frq:.2f} (target > 1) {'met' if frq > 1 else 'NOT met'}")
        if vqp and floor:
            parts.append(f"vqp/gemm-floor = {vqp / floor:.1f} (the most a float32-GEMM search can reach)")
        if parts:
            lines.append(f"- residual_quantize {where}: " + "; ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- main
def build_cases(args: argparse.Namespace) -> list[Case]:
    return [Case(op, dim, num_codes, levels, n) for n in args.n for op in args.ops for dim in args.dims
            for num_codes in args.ks for levels in (args.levels if op == "residual_quantize" else (1,))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<date>)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=None, help="(preset default: all)")
    parser.add_argument("--providers", nargs="+", default=None, help="subset of: " +
                        " ".join(p.name for p in ALL_PROVIDERS))
    parser.add_argument("--n", type=int, nargs="+", help="rows of x, one or more (preset default)")
    parser.add_argument("--dims", type=int, nargs="+", help="D values")
    parser.add_argument("--ks", type=int, nargs="+", help="K values")
    parser.add_argument("--levels", type=int, nargs="+", help="L values (residual_quantize)")
    parser.add_argument("--reps", type=int, help="repetitions per provider and case (at most)")
    parser.add_argument("--budget-s", type=float, help="time budget per provider and case: stop repeating beyond it")
    parser.add_argument("--naive-rows", type=int, help="rows the naive provider runs (scaled to N)")
    parser.add_argument("--mem-cap-gib", type=float, default=4.0,
                        help="peers that build rows×K matrices run in row chunks above this working set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--exact-memory", action="store_true",
                        help="re-execute with glibc's mmap threshold pinned (benchmarks/memory.py) so the peak-memory "
                             "column is exact; that setting makes every allocation > 128 KiB an mmap with fresh page "
                             "faults and slows allocation-heavy providers, so time without it (the default: timings "
                             "under the default allocator, peak memory a lower bound)")
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    preset["n"] = preset.pop("ns")
    preset.setdefault("ops", list(OPS))
    preset.setdefault("providers", None)
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    known = {p.name for p in ALL_PROVIDERS}
    if args.providers:
        unknown = set(args.providers) - known
        if unknown:
            parser.error(f"unknown providers {sorted(unknown)}; choose from {sorted(known)}")
        if BASELINE not in args.providers:
            args.providers = [BASELINE, *args.providers]  # the ratios need it
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    harness.set_threads(args.threads)
    settings = dict(n=list(args.n), reps=args.reps, budget_s=args.budget_s, naive_rows=args.naive_rows,
                    seed=args.seed, threads=args.threads, mem_cap_bytes=int(args.mem_cap_gib * (1 << 30)))
    providers = [p for p in ALL_PROVIDERS if args.providers is None or p.name in args.providers]
    for p in providers:
        if p.unavailable_reason():
            print(f"note: provider {p.name} skipped: {p.unavailable_reason()}")
    if memory.peak_supported() is not None:
        print(f"note: peak memory not measured: {memory.peak_supported()}")
    meta = harness.collect_metadata(f"ops_{args.preset}", {"preset": args.preset, **settings})
    meta["preset"] = args.preset
    print(f"fastrq ops benchmark, preset {args.preset}: N={args.n}, threads={args.threads}, reps≤{args.reps}, "
          f"budget {args.budget_s}s/provider/case, git {(meta['git_revision'] or '?')[:10]}")
    records = []
    started = time.perf_counter()
    for case in build_cases(args):
        print(case.describe())
        records += run_case(case, providers, settings)
    meta["wall_s"] = time.perf_counter() - started
    name = f"ops_{args.preset}"
    tables = markdown_tables(records)
    path = harness.write_results(name, records, meta, f"# fastrq ops benchmark ({args.preset})\n\n{tables}\n", args.out)
    print()
    print(tables)
    result = {"meta": meta, "records": records, "path": str(path)}
    if not args.no_plot:
        from .plot import plot_results

        plot_results(result, path.with_suffix(".png"))
    print(f"\nwrote {path}, {name}.md{'' if args.no_plot else f', {name}.png'} ({meta['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    if "--exact-memory" in sys.argv[1:]:
        memory.ensure_allocator_env("benchmarks.ops_bench", sys.argv[1:])
    main()
