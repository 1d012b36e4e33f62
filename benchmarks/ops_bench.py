"""The ops benchmark: fastrq against the naive reference and its peers, side by side in one process.

    python -m benchmarks.ops_bench --preset quick|full [--out DIR] [--ops ...] [--providers ...] [--n N] ...

For every case (op, D, K, L; N rows of x ~ N(0, 1), codebooks ~ N(0, 1) scaled by 0.75^level, fixed seed) each
available provider is prepared outside the timed region, warmed up on a few rows, then timed in interleaved rounds
(round r runs the providers in an order rotated by r: A B C, B C A, ...) until it has ``reps`` repetitions or has
spent its per-case budget (at least one repetition). Reported: median, 20th and 80th percentile in ms, and the peak
extra memory of the first timed call (:mod:`benchmarks.memory`). The first timed result of every provider is checked
against fastrq's torch backend before any more of its time is taken (:func:`check_nearest`, :func:`check_residual`):
a provider that returns a wrong answer is reported as wrong, not timed.

Providers: ``naive`` (fastrq backend="reference": the full rows×K matrix with the direct difference; run on the
first ``naive_rows`` rows and scaled linearly to N, marked ``*`` / ``"extrapolated": true``), ``torch`` (fastrq
backend="torch", ``FASTRQ_FAISS=auto``), ``torch-pure`` (``FASTRQ_FAISS=0``: no faiss anywhere), ``triton`` (CUDA
only) and the peers of :mod:`benchmarks.peers` when importable. Outputs in ``--out``: ``results.json`` (long format:
one record per op × provider × case with versions, git revision, host and CPU), ``results.md`` (the printed tables) and
``ops_bench.png`` (:mod:`benchmarks.plot`). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import fastrq

from . import memory
from .peers import PEERS, NotApplicable, Prepared, Provider, peer_versions, set_threads

OPS = ("nearest_code", "residual_quantize")

PRESETS = {
    # ≤ ~1 minute on 2 cores: the CI-sized grid (run by the README's main-job command)
    "quick": dict(n=8192, dims=(4, 64), ks=(256, 1024), levels=(1, 4), reps=3, budget_s=0.5, naive_rows=256),
    # the grid, bounded (≈ 20–25 minutes on 2 cores, dominated by vector-quantize-pytorch at K = 8192)
    "full": dict(n=65536, dims=(4, 64, 256), ks=(256, 1024, 8192), levels=(1, 4, 8), reps=5, budget_s=12.0,
                 naive_rows=2048),
}
CHECK_SAMPLE = 256  # rows checked against the float64 reference's true minimum
TOLERANCE = 1e-5  # relative to ‖x‖² + ‖e‖²: float32 expanded-distance rounding is ~1e-7 of that
MEAN_ERROR_TOLERANCE = 1e-3  # relative agreement of the mean final RQ error (greedy paths may split on near-ties)


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


# ------------------------------------------------------------------------------------------- fastrq's providers
def _fastrq_call(op: str, x: torch.Tensor, codebooks: torch.Tensor, backend: str, faiss_mode: str | None):
    book = codebooks[0] if op == "nearest_code" else codebooks
    fn = fastrq.nearest_code if op == "nearest_code" else fastrq.residual_quantize

    def call():
        if faiss_mode is not None:
            os.environ["FASTRQ_FAISS"] = faiss_mode
        return fn(x, book, backend=backend)

    return call


def _fastrq_codes(op: str):
    return (lambda out: out[0]) if op == "nearest_code" else (lambda out: out[1])


def _prepare_backend(backend: str, faiss_mode: str | None):
    def prepare(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
        return Prepared(_fastrq_call(op, x, codebooks, backend, faiss_mode), _fastrq_codes(op), rows=x.shape[0])

    return prepare


def _prepare_naive(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    rows = min(x.shape[0], settings["naive_rows"])
    sub = x[:rows].contiguous()
    return Prepared(_fastrq_call(op, sub, codebooks, "reference", None), _fastrq_codes(op), rows=rows)


def _prepare_triton(op: str, x: torch.Tensor, codebooks: torch.Tensor, settings: dict) -> Prepared:
    x_dev, books_dev = x.cuda(), codebooks.cuda()
    inner = _fastrq_call(op, x_dev, books_dev, "triton", None)

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
    Provider("torch-pure", "fastrq torch, FASTRQ_FAISS=0", OPS, lambda: None, _prepare_backend("torch", "0")),
    Provider("triton", "fastrq triton (CUDA)", OPS, _triton_reason, _prepare_triton),
    Provider("gemm-floor", "float32 GEMM only (a floor, no answer)", OPS, lambda: None, _prepare_gemm_floor),
)
ALL_PROVIDERS = FASTRQ_PROVIDERS + PEERS
BASELINE = "torch"


# ------------------------------------------------------------------------------------------------------- inputs
def make_inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D] ~ N(0, 1); codebooks [L, K, D] ~ N(0, 1) · 0.75^level (residuals shrink level by level)."""
    gen = torch.Generator().manual_seed(seed + 7919 * case.dim + 104729 * case.num_codes + case.levels)
    x = torch.randn(case.n, case.dim, generator=gen)
    scale = 0.75 ** torch.arange(case.levels, dtype=torch.float32)[:, None, None]
    codebooks = torch.randn(case.levels, case.num_codes, case.dim, generator=gen) * scale
    return x, codebooks


# ----------------------------------------------------------------------------------------------- correctness
def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().sum(dim=1)


def _tolerance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return TOLERANCE * (a.square().sum(dim=1) + b.square().sum(dim=1)) + 1e-12


class _TrueMinimum:
    """Float64 true minimum distances of the baseline's greedy path on a row sample, per level, cached so that
    another provider's check only recomputes rows whose earlier codes differ from the baseline's."""

    def __init__(self, x64: torch.Tensor, books64: torch.Tensor, base_codes: torch.Tensor, sample: torch.Tensor):
        self.books64, self.sample = books64, sample
        self.base = base_codes[sample]
        residual = x64[sample]
        self.minimum = []
        for level, book in enumerate(books64):
            _, dist = fastrq.nearest_code(residual, book, backend="reference")
            self.minimum.append(dist)
            residual = residual - book[self.base[:, level]]

    def minimum_for(self, level: int, codes: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """True minimum at ``level`` for sample rows whose codes [S, L] led to ``residual`` [S, D]."""
        same = (codes[:, :level] == self.base[:, :level]).all(dim=1)
        minimum = self.minimum[level].clone()
        if not bool(same.all()):
            _, dist = fastrq.nearest_code(residual[~same], self.books64[level], backend="reference")
            minimum[~same] = dist
        return minimum


def check_nearest(x: torch.Tensor, book: torch.Tensor, codes: torch.Tensor, base_codes: torch.Tensor,
                  truth: _TrueMinimum) -> tuple[bool, str]:
    """Codes of the first ``len(codes)`` rows agree with the baseline's by distance (float64, relative tolerance
    :data:`TOLERANCE` of ‖x‖² + ‖e‖²) on every row, and with the true minimum on the sampled rows."""
    rows = codes.shape[0]
    if codes.shape != (rows,) or codes.dtype != torch.int64:
        return False, f"codes have shape {tuple(codes.shape)} / {codes.dtype}, expected [{rows}] int64"
    if rows and (int(codes.min()) < 0 or int(codes.max()) >= book.shape[0]):
        return False, "codes out of range"
    x64, book64 = x[:rows].double(), book.double()
    chosen, base = book64[codes], book64[base_codes[:rows]]
    d_p, d_b = _sqdist(x64, chosen), _sqdist(x64, base)
    bad = ((d_p - d_b).abs() > _tolerance(x64, chosen)).sum().item()
    sample = truth.sample[truth.sample < rows]
    in_sample = torch.isin(truth.sample, sample)
    minimum = truth.minimum[0][in_sample]
    bad_true = (d_p[sample] > minimum + _tolerance(x64[sample], chosen[sample])).sum().item()
    differ = (codes != base_codes[:rows]).sum().item()
    detail = f"{differ} of {rows} codes differ from torch's; all within tolerance" if not (bad or bad_true) else (
        f"{bad} of {rows} rows farther than torch's choice, {bad_true} of {sample.numel()} sampled rows farther "
        "than the true minimum")
    return not (bad or bad_true), detail


def check_residual(x: torch.Tensor, books: torch.Tensor, codes: torch.Tensor, base_codes: torch.Tensor,
                   truth: _TrueMinimum) -> tuple[bool, str]:
    """Greedy-RQ codes [rows, L]: level 0 agrees with the baseline by distance on every row; on the sampled rows
    every level's choice is within tolerance of the true minimum for that provider's own residual (a valid greedy
    path, even where it split from the baseline's on a near-tie); the mean final squared error matches the
    baseline's within :data:`MEAN_ERROR_TOLERANCE` (relative)."""
    rows, levels = codes.shape[0], books.shape[0]
    if codes.shape != (rows, levels) or codes.dtype != torch.int64:
        return False, f"codes have shape {tuple(codes.shape)} / {codes.dtype}, expected [{rows}, {levels}] int64"
    if rows and (int(codes.min()) < 0 or int(codes.max()) >= books.shape[1]):
        return False, "codes out of range"
    ok0, detail0 = check_nearest(x, books[0], codes[:, 0].contiguous(), base_codes[:, 0], truth)
    if not ok0:
        return False, "level 0: " + detail0
    books64 = books.double()
    sample = truth.sample[truth.sample < rows]
    if sample.numel() != truth.sample.numel():
        return False, "internal: the check sample must lie in the provider's rows"
    residual = x[:rows].double()
    residual_base = residual.clone()
    sample_codes = codes[sample]
    bad_levels = []
    for level, book in enumerate(books64):
        chosen = book[codes[:, level]]
        minimum = truth.minimum_for(level, sample_codes, residual[sample])
        d = _sqdist(residual[sample], chosen[sample])
        if bool((d > minimum + _tolerance(residual[sample], chosen[sample])).any()):
            bad_levels.append(level)
        residual = residual - chosen
        residual_base = residual_base - book[base_codes[:rows, level]]
    err_p = residual.square().sum(dim=1).mean().item()
    err_b = residual_base.square().sum(dim=1).mean().item()
    rel = abs(err_p - err_b) / max(err_b, 1e-300)
    split = (codes != base_codes[:rows]).any(dim=1).sum().item()
    ok = not bad_levels and rel <= MEAN_ERROR_TOLERANCE
    detail = (f"mean final error {err_p:.6g} vs torch {err_b:.6g} (rel {rel:.1e}); {split} of {rows} rows took "
              f"another greedy path")
    if bad_levels:
        detail += f"; not the nearest code at levels {bad_levels} on sampled rows"
    return ok, detail


# ------------------------------------------------------------------------------------------------------ timing
@dataclass
class _Run:
    provider: Provider
    prepared: Prepared | None = None
    times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    status: str = "ok"  # ok | wrong | error | skipped
    detail: str = ""
    done: bool = False


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(len(ordered) - 1, int(pos) + 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_case(case: Case, providers: list[Provider], settings: dict, log=print) -> list[dict]:
    """Time every provider on one case; returns one record per provider (skipped ones included, with the reason)."""
    x, codebooks = make_inputs(case, settings["seed"])
    runs = []
    for provider in providers:
        run = _Run(provider)
        runs.append(run)
        if case.op not in provider.ops:
            run.status, run.detail, run.done = "skipped", f"does not implement {case.op}", True
            continue
        reason = provider.unavailable_reason()
        if reason is not None:
            run.status, run.detail, run.done = "skipped", reason, True
            continue
        try:
            warm = min(case.n, 256)
            provider.prepare(case.op, x[:warm].contiguous(), codebooks, settings).call()  # lazy init, untimed
            run.prepared = provider.prepare(case.op, x, codebooks, settings)
        except NotApplicable as why:
            run.status, run.detail, run.done = "skipped", str(why), True
        except Exception as error:  # a peer failing must not stop the benchmark: report it
            run.status, run.detail, run.done = "error", f"{type(error).__name__}: {error}", True

    # the baseline answers first (round 0 order), so every other provider can be checked against it
    runs.sort(key=lambda run: run.provider.name != BASELINE)
    base_codes = None
    if not any(r.provider.name == BASELINE and r.prepared for r in runs):
        base_codes = _fastrq_codes(case.op)(_fastrq_call(case.op, x, codebooks, "torch", "auto")())
    truth = None
    rounds = 0
    while not all(run.done for run in runs):
        order = runs[rounds % len(runs):] + runs[: rounds % len(runs)] if rounds else runs
        for run in order:
            if run.done:
                continue
            gc.collect()
            first = not run.times
            with memory.PeakMemory(cuda=run.prepared.cuda) if first else _nothing() as peak:
                start = time.perf_counter()
                try:
                    out = run.prepared.call()
                except Exception as error:
                    run.status, run.detail, run.done = "error", f"{type(error).__name__}: {error}", True
                    continue
                elapsed = time.perf_counter() - start
            if first and run.prepared.floor:
                run.peak_bytes, run.detail = peak.extra_bytes, "a floor: not an answer, not checked"
            elif first:
                run.peak_bytes = peak.extra_bytes
                codes = run.prepared.to_codes(out)
                if base_codes is None:  # this is the baseline's first result
                    base_codes = codes
                if truth is None:
                    checked_rows = min(r.prepared.rows for r in runs if r.prepared is not None)
                    sample = torch.randperm(checked_rows, generator=torch.Generator().manual_seed(1))[:CHECK_SAMPLE]
                    truth = _TrueMinimum(x.double(), codebooks.double(),
                                         base_codes if base_codes.dim() == 2 else base_codes[:, None], sample.sort().values)
                check = check_nearest if case.op == "nearest_code" else check_residual
                book = codebooks[0] if case.op == "nearest_code" else codebooks
                ok, run.detail = check(x, book, codes, base_codes, truth)
                if not ok:
                    run.status, run.done = "wrong", True
                    log(f"  !! {run.provider.name}: WRONG ANSWER, not timed: {run.detail}")
                    continue
            del out
            run.times.append(elapsed)
            if len(run.times) >= settings["reps"] or sum(run.times) + elapsed > settings["budget_s"]:
                run.done = True
        rounds += 1

    records = []
    for run in runs:
        record = {
            "op": case.op, "provider": run.provider.name, "label": run.provider.label, "D": case.dim,
            "K": case.num_codes, "L": case.levels if case.op == "residual_quantize" else None, "N": case.n,
            "status": run.status, "check": run.detail,
        }
        if run.times:
            scale = case.n / run.prepared.rows
            ms = [t * 1000 * scale for t in run.times]
            record.update(
                rows_timed=run.prepared.rows, extrapolated=run.prepared.rows < case.n,
                median_ms=statistics.median(ms), p20_ms=_percentile(ms, 0.2), p80_ms=_percentile(ms, 0.8),
                reps=len(ms), times_ms=ms, peak_mem_bytes=run.peak_bytes,
                peak_mem_mib=None if run.peak_bytes is None else run.peak_bytes / memory.MEBI,
                peak_mem_device="cuda" if run.prepared.cuda else "host",
                chunks=run.prepared.chunks, note=run.prepared.note,
            )
        else:
            record.update(median_ms=None, reps=0)
        records.append(record)
        if run.times:
            star = "*" if record["extrapolated"] else ""
            mem = "n/a" if run.peak_bytes is None else f"{record['peak_mem_mib']:.1f} MiB"
            log(f"  {run.provider.name:<11} {record['median_ms']:>11.2f} ms{star} (reps {record['reps']}, "
                f"peak {mem}{', chunks ' + str(run.prepared.chunks) if run.prepared.chunks > 1 else ''})  "
                f"{run.detail}")
        else:
            log(f"  {run.provider.name:<11} {run.status}: {run.detail}")
    return records


class _nothing:
    extra_bytes = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


# ---------------------------------------------------------------------------------------------------- tables
def _fmt_ms(record: dict | None) -> str:
    if record is None:
        return ""
    if record.get("median_ms") is None:
        return {"wrong": "WRONG", "error": "error"}.get(record["status"], "–")
    text = f"{record['median_ms']:.1f}" if record["median_ms"] >= 10 else f"{record['median_ms']:.2f}"
    if record.get("extrapolated"):
        text += "*"
    if record.get("chunks", 1) > 1:
        text += f"ᶜ{record['chunks']}"
    return text


def markdown_tables(records: list[dict]) -> str:
    """One table per op: median ms per provider, then each provider's time divided by fastrq torch's ("x/torch":
    above 1 means fastrq torch is faster); then peak extra memory (MiB)."""
    out = []
    for op in OPS:
        rows = [r for r in records if r["op"] == op]
        if not rows:
            continue
        providers = [p.name for p in ALL_PROVIDERS if any(r["provider"] == p.name and r.get("median_ms") for r in rows)]
        wrong = sorted({r["provider"] for r in rows if r["status"] in ("wrong", "error")})
        providers += [p for p in wrong if p not in providers]
        keys = sorted({(r["D"], r["K"], r["L"] or 1) for r in rows})
        others = [p for p in providers if p != BASELINE]
        header = ["D", "K"] + (["L"] if op == "residual_quantize" else []) + [f"{p} ms" for p in providers]
        header += [f"{p}/torch" for p in others]
        out.append(f"### {op} (N = {rows[0]['N']:,}; median ms; ratio = provider time / fastrq torch time)\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---:|" * len(header))
        mem_lines = []
        for dim, num_codes, levels in keys:
            found = {r["provider"]: r for r in rows if (r["D"], r["K"], r["L"] or 1) == (dim, num_codes, levels)}
            base = found.get(BASELINE, {}).get("median_ms")
            cells = [str(dim), str(num_codes)] + ([str(levels)] if op == "residual_quantize" else [])
            cells += [_fmt_ms(found.get(p)) for p in providers]
            for p in others:
                t = (found.get(p) or {}).get("median_ms")
                cells.append(f"{t / base:.2f}" if t and base else "")
            out.append("| " + " | ".join(cells) + " |")
            mem = [str(dim), str(num_codes)] + ([str(levels)] if op == "residual_quantize" else [])
            for p in providers:
                r = found.get(p) or {}
                mib = r.get("peak_mem_mib")
                mem.append("" if mib is None else f"{mib:.0f}{'*' if r.get('extrapolated') else ''}")
            mem_lines.append("| " + " | ".join(mem) + " |")
        out.append("")
        mheader = ["D", "K"] + (["L"] if op == "residual_quantize" else []) + [f"{p} MiB" for p in providers]
        out.append(f"Peak extra memory of one call ({op}, MiB; `*` = measured on the naive row subsample; "
                   f"{'exact, allocator pinned' if _allocator_pinned() else 'a lower bound: default allocator'}):\n")
        out.append("| " + " | ".join(mheader) + " |")
        out.append("|" + "---:|" * len(mheader))
        out.extend(mem_lines)
        out.append("")
    out.append("`*` naive: timed on a row subsample and scaled linearly to N. `ᶜn`: the peer ran its rows in n chunks "
               "to stay under the memory cap. WRONG: failed the correctness check, not timed.")
    out.append("")
    out.append(targets_summary(records))
    return "\n".join(out)


def targets_summary(records: list[dict]) -> str:
    """The issue's performance targets, checked on this run's ratios."""
    lines = ["### Targets (issue 2), from this run", ""]
    by = {(r["op"], r["provider"], r["D"], r["K"], r["L"]): r.get("median_ms") for r in records}
    for r in records:
        if r["provider"] != BASELINE or not r.get("median_ms"):
            continue
        key = (r["D"], r["K"], r["L"])
        t = r["median_ms"]
        if r["op"] == "nearest_code":
            faiss_t = by.get(("nearest_code", "faiss-flat", *key))
            if faiss_t:
                limit = 3.0 if r["D"] < 64 else 1.5
                ok = t <= limit * faiss_t
                lines.append(f"- nearest_code D={r['D']} K={r['K']}: torch/faiss = {t / faiss_t:.2f} "
                             f"(target ≤ {limit}) {'met' if ok else 'NOT met'}")
        else:
            vqp_t = by.get(("residual_quantize", "vqp", *key))
            frq_t = by.get(("residual_quantize", "faiss-rq", *key))
            parts = []
            if vqp_t:
                parts.append(f"vqp/torch = {vqp_t / t:.1f} (target ≥ 10) {'met' if vqp_t >= 10 * t else 'NOT met'}")
            if frq_t:
                parts.append(f"faiss-rq/torch = {frq_t / t:.2f} (target > 1) {'met' if frq_t > t else 'NOT met'}")
            floor_t = by.get(("residual_quantize", "gemm-floor", *key))
            if vqp_t and floor_t:
                parts.append(f"vqp/gemm-floor = {vqp_t / floor_t:.1f} (the most a float32-GEMM search can reach)")
            if parts:
                lines.append(f"- residual_quantize D={r['D']} K={r['K']} L={r['L']}: " + "; ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ metadata
def run_metadata(args: argparse.Namespace, settings: dict) -> dict:
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).resolve().parent.parent).stdout.strip() or None
        except Exception:
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), None)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__, "fastrq": fastrq.__version__,
                "numpy": __import__("numpy").__version__, **peer_versions()}
    if importlib.util.find_spec("triton") is not None and torch.cuda.is_available():
        versions["triton"] = __import__("triton").__version__
    return {
        "preset": args.preset, "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--", "fastrq", "kernels")),
        "hostname": socket.gethostname(), "cpu": cpu, "cpu_count": os.cpu_count(), "threads": settings["threads"],
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions, "settings": {k: v for k, v in settings.items() if k != "mem_cap_bytes"},
        "mem_cap_gib": settings["mem_cap_bytes"] / (1 << 30),
        "peak_memory_method": "host: VmHWM growth over the first timed call after /proc/self/clear_refs reset, "
                              + ("glibc mmap threshold pinned (exact; benchmarks/memory.py)" if _allocator_pinned()
                                 else "default allocator (a lower bound: blocks freed by earlier calls are reused "
                                      "without new page faults; --exact-memory pins it)")
                              + "; cuda: max_memory_allocated growth",
    }


def _allocator_pinned() -> bool:
    return all(os.environ.get(key) == value for key, value in memory.ALLOCATOR_ENV.items())


# ------------------------------------------------------------------------------------------------------- main
def build_cases(args: argparse.Namespace) -> list[Case]:
    cases = []
    for op in args.ops:
        for dim in args.dims:
            for num_codes in args.ks:
                for levels in (args.levels if op == "residual_quantize" else (1,)):
                    cases.append(Case(op, dim, num_codes, levels, args.n))
    return cases


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--out", default=None, help="output folder (default: reports/ops_bench/<preset>)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--providers", nargs="+", default=None, help="subset of: " +
                        " ".join(p.name for p in ALL_PROVIDERS))
    parser.add_argument("--n", type=int, help="rows of x (preset default)")
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
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    known = {p.name for p in ALL_PROVIDERS}
    if args.providers:
        unknown = set(args.providers) - known
        if unknown:
            parser.error(f"unknown providers {sorted(unknown)}; choose from {sorted(known)}")
        if BASELINE not in args.providers:
            args.providers = [BASELINE, *args.providers]  # the ratios and the check need it
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    saved_faiss = os.environ.get("FASTRQ_FAISS")
    settings = dict(n=args.n, reps=args.reps, budget_s=args.budget_s, naive_rows=args.naive_rows, seed=args.seed,
                    threads=args.threads, mem_cap_bytes=int(args.mem_cap_gib * (1 << 30)))
    out_dir = Path(args.out or Path("reports") / "ops_bench" / args.preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    providers = [p for p in ALL_PROVIDERS if args.providers is None or p.name in args.providers]
    for p in providers:
        reason = p.unavailable_reason()
        if reason:
            print(f"note: provider {p.name} skipped: {reason}")
    if memory.peak_supported() is not None:
        print(f"note: peak memory not measured: {memory.peak_supported()}")
    meta = run_metadata(args, settings)
    print(f"fastrq ops benchmark, preset {args.preset}: N={args.n}, threads={args.threads}, reps≤{args.reps}, "
          f"budget {args.budget_s}s/provider/case, git {meta['git_revision'] and meta['git_revision'][:10]}")
    records = []
    started = time.perf_counter()
    try:
        for case in build_cases(args):
            print(f"{case.describe()}")
            records += run_case(case, providers, settings)
    finally:
        if saved_faiss is None:
            os.environ.pop("FASTRQ_FAISS", None)
        else:
            os.environ["FASTRQ_FAISS"] = saved_faiss
    meta["wall_s"] = time.perf_counter() - started
    for record in records:
        record.update(preset=args.preset, versions=meta["versions"], git_revision=meta["git_revision"],
                      hostname=meta["hostname"], cpu=meta["cpu"], threads=args.threads)
    result = {"meta": meta, "results": records}
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    tables = markdown_tables(records)
    (out_dir / "results.md").write_text(f"# fastrq ops benchmark ({args.preset})\n\n{tables}\n")
    print()
    print(tables)
    if not args.no_plot:
        from .plot import plot_results

        plot_results(result, out_dir / "ops_bench.png")
    print(f"\nwrote {out_dir}/results.json, results.md{'' if args.no_plot else ', ops_bench.png'} "
          f"({meta['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    if "--exact-memory" in sys.argv[1:]:
        memory.ensure_allocator_env("benchmarks.ops_bench", sys.argv[1:])
    main()
