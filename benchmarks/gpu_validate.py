"""GPU validation kit of the Triton kernels: one run, one results folder. Started by ``benchmarks/gpu_validate.sh``.

On a CUDA GPU (designed for one H100 / H200 in ≤ 6 minutes, no internet):

1. **precompile**: every launch of the sweep is built on meta tensors and compiled ahead in parallel worker processes
   (``JITFunction.warmup``) into Triton's cache; kernels the JIT still compiles afterwards are counted;
2. **selfcheck**: the first-use self-check of every configuration the sweep uses;
3. **correctness**: ``quantize_for_training`` over D ∈ {1, 4, 16, 17, 32, 64, 100, 128, 256} × K ∈ {1, 33, 256, 1024,
   8192} × L ∈ {1, 8} at N = 65,543 in float32 (tf32x3, ieee, bf16, certified) and float64: codes near-optimal on a
   float64 subsample (every level, along the kernel's own residuals), quantized bitwise equal to the decode of the
   codes, level errors / commit_dir / counts / sums against float64 recomputations, agreement with the torch
   backend on CUDA;
4. **ties** (integer data, duplicate rows across tiles: the smallest index in every mode) and **offset** data
   (1000 + N(0, 1));
5. **determinism**: 3 bitwise reruns of every output, and no host sync in a warm call; **certified**: how many rows
   the certified mode proves and how many programs re-search (Gaussian and separated data);
6. **int64**: N·D > 2³¹ (D = 128, registers kernel; D = 256, large kernel);
7. **registers**: the run-time registers / spills of every kernel launched (the driver's count) against cuobjdump of
   the same binary, and whether the static path of ``benchmarks/kernel_report.py`` rebuilds that very binary;
8. **timing** (``triton.testing.do_bench``, p20 / p50 / p80): the 9-point D × K grid at L = 8 (residual quantization,
   codebook preparation included) for every triton precision, the torch backend on CUDA and vector-quantize-pytorch
   on CUDA (our codebooks copied in), and the module-step shapes (the fused training step against the torch
   backend's), as TFLOP/s, % of the roofline (``benchmarks/gpu_bench.py``) and the bf16 : tf32 : tf32x3 time ratio.

``--dry-run`` runs the same sections on the CPU under ``TRITON_INTERPRET=1`` with tiny shapes (CI runs it); the
precompile, int64 and register sections need a GPU and are skipped there. Results: ``results.json`` and
``report.md`` in ``--out`` (default ``benchmarks/results/gpu_<date>/``), rewritten after every section, so a run
stopped by a time limit keeps what it measured. A global time budget (``--budget`` seconds) skips what no longer fits
and says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # benchmarks.gpu_bench; appended, so an installed fastrq stays first

GRID_D = (1, 4, 16, 17, 32, 64, 100, 128, 256)
GRID_K = (1, 33, 256, 1024, 8192)
GRID_L = (1, 8)
N_ROWS = 65543
FP32_MODES = ("tf32x3", "ieee", "bf16", "certified")
# near-optimality tolerance (relative to ‖r − c‖² + max ‖e − c‖², c the codebook mean) per precision
TOLERANCE = {"ieee": 2e-6, "tf32x3": 4e-6, "certified": 4e-6, "tf32": 2e-3, "bf16": 1.6e-2, "fp64": 1e-12}
SUBSAMPLE = 1024
TIMING_D = (4, 64, 256)
TIMING_K = (256, 1024, 8192)
MODULE_STEPS = [(6272, 4, 256, 1), (6272, 4, 128, 2), (6272, 4, 128, 3), (4096, 8, 1024, 9), (4800, 128, 1024, 8)]
TIMING_MODES = ("bf16", "tf32", "tf32x3", "ieee", "certified")


class Budget:
    """The run's time budget: sections and their items ask before starting."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def allows(self, need: float = 0.0) -> bool:
        return self.left() > need


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------- checks


def _problem(seed: int, n: int, dim: int, k: int, levels: int, dtype, device, offset: float = 0.0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64) + offset
    scales = 0.5 ** torch.arange(levels, dtype=torch.float64)[:, None, None]
    books = torch.randn(levels, k, dim, generator=gen, dtype=torch.float64) * scales
    books[0] += offset
    return x.to(dtype).to(device), books.to(dtype).to(device)


def _residuals64(x, books, codes):
    """float64 residuals r_0..r_L along the given codes (−1 skipped)."""
    r = x.double()
    out = [r]
    for level in range(codes.shape[1]):
        c = codes[:, level]
        chosen = books[level].double()[c.clamp(min=0)]
        r = r - torch.where((c >= 0)[:, None], chosen, torch.zeros_like(chosen))
        out.append(r)
    return out


def near_optimal(x, books, codes, tol: float, rows) -> dict:
    """Worst excess of the chosen code's float64 distance over the best, as a fraction of the allowed tolerance,
    per level, over the subsample ``rows`` (1.0 = at the tolerance; ≤ 1 passes)."""
    xs, cs = x[rows], codes[rows]
    res = _residuals64(xs, books, cs)
    worst = 0.0
    for level in range(cs.shape[1]):
        book = books[level].double()
        centre = book.mean(0)
        r = res[level]
        dist = (r.square().sum(1, keepdim=True) - 2 * r @ book.T + book.square().sum(1)[None, :])
        direct_chosen = (r - book[cs[:, level]]).square().sum(1)
        excess = direct_chosen - dist.min(1).values
        scale = (r - centre).square().sum(1) + (book - centre).square().sum(1).max()
        worst = max(worst, float((excess / (tol * scale)).max()))
    return {"worst_excess_over_tolerance": worst, "ok": worst <= 1.0}


def check_training_outputs(x, books, out, tol, rows) -> dict:
    from fastrq.kernels import backend
    from fastrq.ops import reference

    quantized, codes, level_sqerr, commit, counts, sums = out
    num_levels, num_codes, dim = books.shape
    result = near_optimal(x, books, codes, tol, rows)
    decoded_ref = reference.residual_decode(codes, books)
    result["quantized_bitwise_decode"] = bool(torch.equal(quantized, decoded_ref))
    result["quantized_bitwise_triton_decode"] = bool(torch.equal(quantized, backend.residual_decode(codes, books)))
    res = _residuals64(x, books, codes)
    want_err = torch.stack([res[level + 1].square().sum() for level in range(num_levels)])
    want_commit = sum(res[1:])
    rel = lambda got, want: float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-300))  # noqa: E731
    result["level_sqerr_rel"] = rel(level_sqerr, want_err)
    result["commit_rel"] = rel(commit, want_commit)
    flat = (codes + torch.arange(num_levels, device=codes.device) * num_codes).reshape(-1)
    want_counts = torch.bincount(flat, minlength=num_levels * num_codes).view(num_levels, num_codes)
    result["counts_exact"] = bool(torch.equal(counts.long(), want_counts))
    want_sums = torch.zeros(num_levels * num_codes, dim, dtype=torch.float64, device=x.device)
    for level in range(num_levels):
        want_sums.index_add_(0, flat.view(-1, num_levels)[:, level], res[level])
    result["sums_rel"] = rel(sums.reshape(-1, dim), want_sums)
    limit = 1e-9 if x.dtype == torch.float64 else 2e-4
    result["ok"] = bool(result["ok"] and result["quantized_bitwise_decode"] and result["counts_exact"]
                        and result["level_sqerr_rel"] <= limit and result["commit_rel"] <= limit
                        and result["sums_rel"] <= limit * 10)
    return result


def _modes(dtype):
    return ("fp64",) if dtype == torch.float64 else FP32_MODES


def _run_training(x, books, precision: str):
    from fastrq.kernels import backend

    prec = None if precision == "fp64" else precision
    return backend._quantize_for_training(x, books, [books.shape[1]] * books.shape[0], books.shape[0], None,
                                          precision=prec)


# ---------------------------------------------------------------------------------------------------- sections


def section_environment(ctx) -> dict:
    import triton

    import fastrq

    dev = ctx["device"]
    info = dict(python=platform.python_version(), torch=torch.__version__, triton=triton.__version__,
                fastrq=getattr(fastrq, "__version__", "?"), device=str(dev), interpreter=ctx["dry"],
                date=datetime.datetime.now().isoformat(timespec="seconds"))
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gb=round(props.total_memory / 2**30, 1))
    try:
        import vector_quantize_pytorch

        info["vector_quantize_pytorch"] = getattr(vector_quantize_pytorch, "__version__", "installed")
    except Exception as exc:  # reported: the timing section then has no vqp column
        info["vector_quantize_pytorch"] = f"unavailable: {exc}"
    return info


def _grid(ctx):
    if ctx["dry"]:
        return [(d, k, l) for d in (4, 17) for k in (33,) for l in (1, 2)] + [(1, 1, 1)], 67
    return [(d, k, l) for d in GRID_D for k in GRID_K for l in GRID_L], N_ROWS


def _launches_for_grid(ctx) -> list:
    """Every (search, statistics) launch of the correctness and determinism sections, built on meta tensors."""
    from fastrq.kernels import search, statistics
    from fastrq.kernels.prepare import prepare_codebooks

    grid, n = _grid(ctx)
    jobs = []
    arch = search.device_arch(ctx["device"])
    sms = torch.cuda.get_device_properties(ctx["device"]).multi_processor_count
    for dim, k, levels in grid:
        for dtype in (torch.float32, torch.float64):
            for precision in _modes(dtype):
                prec = "ieee" if precision == "fp64" else precision
                mode = search.kernel_mode(dim, dtype, prec)
                cfg = search.choose_config(dim, dtype, prec, arch, num_codes=k, num_rows=n, num_sms=sms)
                dp = search.padded_dim(dim, mode, dtype)
                x = torch.empty(n, dim, dtype=dtype, device="meta")
                prep = prepare_codebooks(torch.empty(levels, k, dim, dtype=dtype, device="meta"), [k] * levels, mode,
                                         cfg.block_k, dp, search.fallback_mode())
                launch = search.search_launch(x, prep, cfg, num_active=levels, want_quantized=True,
                                              want_commit=True, want_level_err=True, fallback=search.fallback_mode())
                jobs.append((launch.kernel, launch.args, launch.constexprs))
            codes = torch.empty(n, levels, dtype=torch.int64, device="meta")
            fn, args, kwargs, _ = statistics.stats_launch(x, codes, torch.empty(levels, k, dim, dtype=dtype,
                                                                                   device="meta"), k)
            jobs.append((fn, args, kwargs))
    return jobs


def _compile_job(job):
    """Compile one launch into Triton's cache in a worker process: ``JITFunction.warmup`` on the launch's own
    arguments (meta tensors: the specialization reads only their dtype and address), the JIT's public compile-only
    path, so the main process finds the binary in the cache."""
    fn_name, args, kwargs = job
    from fastrq.kernels import search_kernels, statistics

    fn = {"rq_search_kernel": search_kernels.rq_search_kernel, "rq_large_kernel": search_kernels.rq_large_kernel,
          "level_sums_kernel": statistics.level_sums_kernel}[fn_name]
    try:
        fn.warmup(*args, grid=(1,), **kwargs)
        return None
    except Exception as exc:  # reported per launch
        return f"{fn_name}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def _cache_entries() -> int:
    from triton import knobs

    path = knobs.cache.dir if hasattr(knobs, "cache") else os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return len(os.listdir(path)) if os.path.isdir(path) else 0


def section_precompile(ctx) -> dict:
    """Compile every launch of the sweep ahead, in parallel worker processes, into Triton's cache (one compile per
    distinct launch instead of a serial compile at each first call); new cache entries counted afterwards show what
    the JIT still compiled itself."""
    if ctx["dry"]:
        return {"skipped": "interpreter: nothing is compiled"}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from fastrq.kernels.static_check import TARGETS

    cc = torch.cuda.get_device_capability(ctx["device"])
    target = {80: "sm_80", 86: "sm_80", 89: "sm_80", 90: "sm_90", 100: "sm_100", 120: "sm_120"}.get(
        cc[0] * 10 + cc[1], "sm_90")
    start = time.monotonic()
    launches = _launches_for_grid(ctx)
    unique = {}
    for fn, args, kwargs in launches:
        key = (fn.__name__, tuple((a.dtype, tuple(a.shape)) if isinstance(a, torch.Tensor) else a for a in args),
               tuple(sorted(kwargs.items())))
        unique.setdefault(key, (fn.__name__, args, kwargs))
    workers = max(1, min(14, (os.cpu_count() or 2) - 2))
    before = _cache_entries()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        errors = [e for e in pool.map(_compile_job, list(unique.values()), chunksize=2) if e]
    ctx["cache_after_precompile"] = _cache_entries()
    return {"launches": len(launches), "distinct": len(unique), "workers": workers, "target": target,
            "static_target_known": target in TARGETS, "errors": errors[:20], "error_count": len(errors),
            "new_cache_entries": ctx["cache_after_precompile"] - before, "seconds": time.monotonic() - start,
            "ok": not errors}


def section_correctness(ctx) -> dict:
    from fastrq.kernels import selfcheck

    device, budget = ctx["device"], ctx["budget"]
    grid, n = _grid(ctx)
    gen = torch.Generator().manual_seed(7)
    rows = torch.randperm(n, generator=gen)[: min(SUBSAMPLE, n)].to(device)
    runs, skipped, configs = [], 0, {}
    for index, (dim, k, levels) in enumerate(grid):
        if not budget.allows(ctx["reserve"]):
            skipped += 1
            continue
        torch_codes = None
        for dtype in (torch.float32, torch.float64):
            x, books = _problem(index, n, dim, k, levels, dtype, device)
            for precision in _modes(dtype):
                entry = dict(D=dim, K=k, L=levels, N=n, precision=precision)
                try:
                    start = time.monotonic()
                    out = _run_training(x, books, precision)
                    _sync(device)
                    entry["seconds"] = time.monotonic() - start
                    entry.update(check_training_outputs(x, books, out, TOLERANCE[precision], rows))
                    if precision in ("ieee", "fp64"):
                        if torch_codes is None or dtype == torch.float64:
                            torch_codes = selfcheck.torch_fallback("residual_quantize", x, books)[1]
                            tnear = near_optimal(x, books, torch_codes, TOLERANCE[precision], rows)
                            entry["torch_near_optimal"] = tnear["ok"]
                        entry["torch_agreement"] = float((out[1] == torch_codes).double().mean())
                    configs.setdefault((str(dtype), precision, dim, k), x.shape[0])
                except Exception as exc:
                    entry.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
                runs.append(entry)
        if index % 10 == 0:
            _log(f"correctness: {index + 1}/{len(grid)} shapes, {sum(not r['ok'] for r in runs)} failing")
    failing = [r for r in runs if not r["ok"]]
    return {"runs": runs, "failing": len(failing), "skipped_shapes": skipped, "ok": not failing and not skipped}


def section_selfcheck(ctx) -> dict:
    """The first-use self-check of the configurations of a few representative calls (on the GPU: the kernels'
    first GPU run is compared with the torch backend here)."""
    from fastrq.kernels import backend, search, selfcheck

    device = ctx["device"]
    results = []
    dims = (17,) if ctx["dry"] else (1, 4, 16, 64, 128, 256)
    for dtype in (torch.float32, torch.float64):
        for precision in _modes(dtype):
            for dim in dims:
                prec = "ieee" if precision == "fp64" else precision
                x = torch.zeros(ctx["grid_n"], dim, dtype=dtype, device=device)
                _, mode, cfg = search.resolve_config(dim, dtype, device, 1024, x.shape[0], prec)
                reason = selfcheck.check("quantize_for_training", x, 1024, backend._quantize_for_training, cfg, prec)
                results.append(dict(D=dim, precision=precision, mode=mode, config=str(cfg), ok=reason is None,
                                    reason=reason))
    return {"checks": results, "ok": all(r["ok"] for r in results)}


def section_ties(ctx) -> dict:
    device = ctx["device"]
    n = 67 if ctx["dry"] else N_ROWS
    k = 40 if ctx["dry"] else 1024
    out = []
    for dtype in (torch.float32, torch.float64):
        for precision in _modes(dtype):
            for dim in ((17,) if ctx["dry"] else (4, 16, 64)):
                gen = torch.Generator().manual_seed(dim)
                distinct = torch.randint(-2, 3, (9, dim), generator=gen)
                books = distinct[torch.randint(0, 9, (k,), generator=gen)][None].to(dtype).to(device)
                x = torch.randint(-3, 4, (n, dim), generator=gen).to(dtype).to(device)
                dist = (x.double()[:, None, :] - books[0].double()[None]).square().sum(-1) if ctx["dry"] else \
                    x.double().square().sum(1, keepdim=True) - 2 * x.double() @ books[0].double().T + \
                    books[0].double().square().sum(1)[None]
                first_min = (dist == dist.min(1, keepdim=True).values).int().argmax(1)
                codes = _run_training(x, books, precision)[1][:, 0]
                out.append(dict(D=dim, precision=precision, mismatches=int((codes != first_min).sum()),
                                ok=bool(torch.equal(codes, first_min))))
    return {"cases": out, "ok": all(c["ok"] for c in out)}


def section_offset(ctx) -> dict:
    device = ctx["device"]
    n = 67 if ctx["dry"] else N_ROWS
    rows = torch.arange(min(n, SUBSAMPLE), device=device)
    out = []
    for precision in FP32_MODES:
        for dim, k, levels in (((17, 33, 2),) if ctx["dry"] else ((4, 1024, 1), (64, 1024, 1),
                                                                             (256, 1024, 1), (64, 1024, 8))):
            x, books = _problem(dim + k, n, dim, k, levels, torch.float32, device, offset=1000.0)
            res = _run_training(x, books, precision)
            check = near_optimal(x, books, res[1], TOLERANCE[precision], rows)
            out.append(dict(D=dim, K=k, L=levels, precision=precision, **check))
    return {"cases": out, "ok": all(c["ok"] for c in out)}


def section_determinism(ctx) -> dict:
    device = ctx["device"]
    shapes = ((17, 33, 2),) if ctx["dry"] else ((4, 256, 8), (64, 1024, 8), (256, 1024, 8))
    n = 67 if ctx["dry"] else N_ROWS
    out = []
    for dtype in (torch.float32, torch.float64):
        for precision in _modes(dtype):
            for dim, k, levels in shapes:
                x, books = _problem(3, n, dim, k, levels, dtype, device)
                first = _run_training(x, books, precision)
                same = True
                for _ in range(2):
                    again = _run_training(x, books, precision)
                    same = same and all(torch.equal(a, b) for a, b in zip(first, again))
                no_sync = None
                if device.type == "cuda":  # a warm call must not synchronise with the host
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        _run_training(x, books, precision)
                        no_sync = True
                    except RuntimeError as exc:
                        no_sync = f"synchronised: {exc}"[:300]
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                out.append(dict(D=dim, K=k, L=levels, precision=precision, bitwise_identical=same, no_host_sync=no_sync))
    return {"cases": out, "ok": all(c["bitwise_identical"] and c["no_host_sync"] in (True, None) for c in out)}


def section_certified(ctx) -> dict:
    """How often the certified mode proves its rows: uncertified rows and programs that ran the exact re-search,
    on Gaussian data (near-ties common) and on separated data (rows near one code), one level."""
    from fastrq.kernels import search

    device = ctx["device"]
    n = 256 if ctx["dry"] else N_ROWS
    out = []
    for dim, k in ((16, 256), (64, 1024)):
        for kind in ("gaussian", "separated"):
            gen = torch.Generator().manual_seed(dim + k)
            books = torch.randn(1, k, dim, generator=gen)
            if kind == "gaussian":
                x = torch.randn(n, dim, generator=gen)
            else:
                x = books[0][torch.randint(0, k, (n,), generator=gen)] + 0.05 * torch.randn(n, dim, generator=gen)
            x, books = x.to(device), books.to(device)
            _, _, cfg = search.resolve_config(dim, torch.float32, device, k, n, "certified")
            res = search.search_walk(x, books, None, 1, None, precision="certified", config=cfg, want_diag=True)
            diag = res["diag"][:, 0]
            exact, _ = search.nearest_code(x, books[0], precision="ieee")
            out.append(dict(D=dim, K=k, N=n, data=kind, config=str(cfg),
                            uncertified_rows=float(diag.sum()) / n, programs_re_searched=float((diag > 0).double().mean()),
                            agrees_with_ieee=float((res["codes"][:, 0] == exact).double().mean())))
    return {"cases": out, "ok": True}


def section_int64(ctx) -> dict:
    if ctx["dry"]:
        return {"skipped": "needs a GPU (N·D > 2³¹ elements)"}
    device = ctx["device"]
    out = []
    for dim in (128, 256):
        n = (2**31) // dim + 4099
        gen = torch.Generator(device=device).manual_seed(dim)
        x = torch.randn(n, dim, device=device, generator=gen)
        books = torch.randn(2, 256, dim, device=device, generator=gen) * torch.tensor([1.0, 0.5], device=device)[:, None, None]
        res = _run_training(x, books, "tf32x3")
        tail = torch.arange(n - 2048, n, device=device)
        check = near_optimal(x, books, res[1], TOLERANCE["tf32x3"], tail)
        from fastrq.ops import reference

        decoded = reference.residual_decode(res[1][tail], books)
        out.append(dict(D=dim, N=n, elements=n * dim, near_optimal_tail=check["ok"],
                        worst=check["worst_excess_over_tolerance"],
                        quantized_tail_bitwise=bool(torch.equal(res[0][tail], decoded)),
                        counts_total=int(res[4][0].sum()) == n))
        del x, res
        torch.cuda.empty_cache()
    return {"cases": out, "ok": all(c["near_optimal_tail"] and c["quantized_tail_bitwise"] and c["counts_total"]
                                    for c in out)}


def section_registers(ctx) -> dict:
    """Run-time registers / spills / shared memory of the kernels launched (from Triton's compiled kernel),
    against cuobjdump of a static compile of the same launch."""
    if ctx["dry"]:
        return {"skipped": "needs a GPU"}
    import re
    import subprocess
    import tempfile

    from fastrq.kernels import static_check

    target = ctx["precompile"].get("target", "sm_90")
    out = []
    for (name, constexprs), (launch, compiled) in list(ctx["launched"].items())[:60]:
        entry = dict(kernel=name, constexprs=constexprs, runtime_registers=getattr(compiled, "n_regs", None),
                     runtime_spills=getattr(compiled, "n_spills", None),
                     runtime_shared=int(getattr(compiled.metadata, "shared", -1)))
        def usage(cubin: bytes):
            with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
                handle.write(cubin)
            text = subprocess.run([static_check.cuobjdump_path(), "--dump-resource-usage", handle.name],
                                  capture_output=True, text=True).stdout
            os.unlink(handle.name)
            m = re.search(r"REG:(\d+)\s+STACK:(\d+)", text)
            return (int(m.group(1)), int(m.group(2))) if m else (None, None)

        try:  # the run-time binary read the static way: the driver's count against cuobjdump's
            entry["cubin_registers"], entry["cubin_stack"] = usage(compiled.asm["cubin"])
            entry["ok"] = entry["cubin_registers"] == entry["runtime_registers"] and not entry["runtime_spills"]
        except Exception as exc:
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        try:  # the static path (kernel_report's): does it rebuild the very binary the JIT built?
            static, _ = static_check.jit_compile(launch.kernel, launch.args, launch.constexprs, target)
            entry.update(static_registers=usage(static.asm["cubin"])[0], static_shared=int(static.metadata.shared),
                         static_same_binary=getattr(static, "hash", None) == getattr(compiled, "hash", 0))
        except Exception as exc:  # a triton version whose JIT internals differ: reported, not a failure
            entry["static_error"] = f"{type(exc).__name__}: {exc}"[:300]
        out.append(entry)
    new_entries = _cache_entries() - ctx.get("cache_after_precompile", _cache_entries())
    return {"kernels": out, "jit_compiled_after_precompile": new_entries, "ok": all(e["ok"] for e in out)}


def _bench(fn, ctx) -> tuple[float, float, float]:
    """(p20, p50, p80) in ms: triton.testing.do_bench on a GPU, a few perf_counter repeats under the interpreter."""
    if ctx["dry"]:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        return times[0], times[1], times[2]
    import triton

    p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=10, rep=40)
    return p20, p50, p80


def _vqp_call(x, books, train: bool):
    from vector_quantize_pytorch import ResidualVQ

    levels, k, dim = books.shape
    module = ResidualVQ(dim=dim, num_quantizers=levels, codebook_size=k, kmeans_init=False).to(x.device)
    with torch.no_grad():
        for layer, book in zip(module.layers, books):
            layer._codebook.embed.copy_(book[None])
    module.train(train)

    def call():
        if train:
            return module(x[None])
        with torch.no_grad():
            return module(x[None])

    return call


def section_timing(ctx) -> dict:
    from benchmarks.gpu_bench import SPECS, device_spec, roofline

    from fastrq.kernels import backend, search, selfcheck

    device, budget = ctx["device"], ctx["budget"]
    spec = device_spec() if device.type == "cuda" else SPECS["H100"]
    rows = []
    if ctx["dry"]:
        grid = [(64, 17, 33, 2)]
        steps = [(67, 4, 33, 1)]
    else:
        grid = [(65536, d, k, 8) for d in TIMING_D for k in TIMING_K]
        steps = MODULE_STEPS
    for n, dim, k, levels in grid:
        if not budget.allows(20):
            rows.append(dict(N=n, D=dim, K=k, L=levels, skipped="time budget"))
            continue
        x, books = _problem(dim * k, n, dim, k, levels, torch.float32, device)
        providers = {f"triton-{m}": (lambda m=m: search.residual_quantize(x, books, precision=m), m)
                     for m in TIMING_MODES}
        providers["torch"] = (lambda: selfcheck.torch_fallback("residual_quantize", x, books), "ieee")
        try:
            providers["vqp"] = (_vqp_call(x, books, train=False), "ieee")
        except Exception as exc:
            rows.append(dict(N=n, D=dim, K=k, L=levels, provider="vqp", error=str(exc)[:200]))
        point = {}
        for name, (fn, mode) in providers.items():
            try:
                p20, p50, p80 = _bench(fn, ctx)
            except Exception as exc:
                rows.append(dict(N=n, D=dim, K=k, L=levels, provider=name, error=f"{type(exc).__name__}: {exc}"[:300]))
                continue
            bound = roofline(n, dim, k, levels, mode if mode != "certified" else "bf16", spec)
            flops = 2 * n * k * dim * levels
            point[name] = p50
            rows.append(dict(N=n, D=dim, K=k, L=levels, provider=name, op="residual_quantize", ms_p20=p20,
                             ms_p50=p50, ms_p80=p80, tflops=flops / (p50 * 1e-3) / 1e12,
                             roofline_pct=100 * bound["time"] / (p50 * 1e-3), bound=bound["bound"]))
        if all(f"triton-{m}" in point for m in ("bf16", "tf32", "tf32x3")):
            base = point["triton-bf16"]
            rows.append(dict(N=n, D=dim, K=k, L=levels, provider="ratio bf16:tf32:tf32x3",
                             ratio=f"1 : {point['triton-tf32'] / base:.2f} : {point['triton-tf32x3'] / base:.2f}"))
        _log(f"timing N={n} D={dim} K={k} L={levels}: " + ", ".join(f"{p} {t:.3f} ms" for p, t in point.items()))
    for n, dim, k, levels in steps:
        if not budget.allows(10):
            rows.append(dict(N=n, D=dim, K=k, L=levels, op="training step", skipped="time budget"))
            continue
        x, books = _problem(n + dim, n, dim, k, levels, torch.float32, device)
        sizes = [k] * levels
        providers = {"triton (fused)": lambda: backend._quantize_for_training(x, books, sizes, levels, None),
                     "torch": lambda: selfcheck.torch_fallback("quantize_for_training", x, books, sizes, levels, None)}
        try:
            providers["vqp (train forward)"] = _vqp_call(x, books, train=True)
        except Exception as exc:
            rows.append(dict(N=n, D=dim, K=k, L=levels, provider="vqp", error=str(exc)[:200]))
        for name, fn in providers.items():
            try:
                p20, p50, p80 = _bench(fn, ctx)
            except Exception as exc:
                rows.append(dict(N=n, D=dim, K=k, L=levels, provider=name, error=f"{type(exc).__name__}: {exc}"[:300]))
                continue
            rows.append(dict(N=n, D=dim, K=k, L=levels, provider=name, op="training step", ms_p20=p20, ms_p50=p50,
                             ms_p80=p80, tflops=2 * n * k * dim * levels / (p50 * 1e-3) / 1e12))
    return {"rows": rows, "spec": spec.name, "ok": not any("error" in r and r.get("provider", "").startswith("triton")
                                                           for r in rows)}


SECTIONS = [("environment", section_environment), ("precompile", section_precompile),
            ("selfcheck", section_selfcheck), ("correctness", section_correctness), ("ties", section_ties),
            ("offset", section_offset), ("determinism", section_determinism), ("certified", section_certified),
            ("int64", section_int64),
            ("registers", section_registers), ("timing", section_timing)]


# ---------------------------------------------------------------------------------------------------- report


def markdown(results: dict) -> str:
    env = results.get("environment", {})
    lines = [f"# GPU validation of the Triton kernels ({env.get('date', '?')})", "",
             f"Device: {env.get('name', env.get('device'))}, torch {env.get('torch')}, triton {env.get('triton')}"
             f"{' (DRY RUN: CPU interpreter, tiny shapes)' if env.get('interpreter') else ''}.", "",
             "| section | status | notes |", "|---|---|---|"]
    for name, _ in SECTIONS[1:]:
        part = results.get(name)
        if part is None:
            lines.append(f"| {name} | not run | |")
            continue
        status = "skipped" if "skipped" in part else ("error" if "error" in part else ("ok" if part.get("ok") else "FAILED"))
        note = part.get("skipped") or part.get("error", "")[:120]
        if name == "correctness" and "runs" in part:
            note = f"{len(part['runs'])} runs, {part['failing']} failing, {part['skipped_shapes']} shapes skipped"
        if name == "precompile" and "distinct" in part:
            note = f"{part['distinct']} kernels in {part['seconds']:.0f} s, {part['error_count']} errors"
        if name == "registers" and "kernels" in part:
            note = f"{len(part['kernels'])} kernels; JIT compiled {part['jit_compiled_after_precompile']} beyond the precompiled set"
        lines.append(f"| {name} | {status} | {note} |")
    failing = [r for r in results.get("correctness", {}).get("runs", []) if not r.get("ok")]
    if failing:
        lines += ["", "## Failing correctness runs", "", "| D | K | L | precision | detail |", "|---|---|---|---|---|"]
        for r in failing[:40]:
            detail = r.get("error") or ", ".join(f"{k}={v}" for k, v in r.items() if k in (
                "worst_excess_over_tolerance", "quantized_bitwise_decode", "counts_exact", "level_sqerr_rel",
                "commit_rel", "sums_rel"))
            lines.append(f"| {r['D']} | {r['K']} | {r['L']} | {r['precision']} | {detail} |")
    timing = results.get("timing", {}).get("rows", [])
    if timing:
        lines += ["", "## Timing (p50 ms; TFLOP/s; % of roofline)", "",
                  "| op | N | D | K | L | provider | p20 | p50 | p80 | TFLOP/s | % roofline |", "|" + "---|" * 11]
        for r in timing:
            if "ms_p50" in r:
                lines.append(f"| {r.get('op')} | {r['N']} | {r['D']} | {r['K']} | {r['L']} | {r['provider']} | "
                             f"{r['ms_p20']:.3f} | {r['ms_p50']:.3f} | {r['ms_p80']:.3f} | {r['tflops']:.2f} | "
                             f"{r.get('roofline_pct', float('nan')):.1f} |")
            elif "ratio" in r:
                lines.append(f"| ratio | {r['N']} | {r['D']} | {r['K']} | {r['L']} | bf16 : tf32 : tf32x3 | "
                             f"{r['ratio']} | | | | |")
            else:
                lines.append(f"| {r.get('op', '')} | {r['N']} | {r['D']} | {r['K']} | {r['L']} | "
                             f"{r.get('provider', '')} | {r.get('skipped') or r.get('error', '')[:60]} | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU interpreter, tiny shapes (what CI runs)")
    parser.add_argument("--out", help="results folder (default benchmarks/results/gpu_<date>)")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run (default 330)")
    parser.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    args = parser.parse_args(argv)
    if args.dry_run and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("--dry-run needs TRITON_INTERPRET=1 set before Python starts (gpu_validate.sh --dry-run sets it)")
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run (CPU interpreter) or on a GPU")
        return 2
    os.environ.setdefault("FASTRQ_TRITON_SELFCHECK", "1")
    torch.backends.cuda.matmul.allow_tf32 = False  # the torch backend in exact fp32
    date = datetime.date.today().isoformat()
    out_dir = args.out or os.path.join(ROOT, "benchmarks", "results", f"gpu_{date}")
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    from fastrq.kernels import search

    ctx = dict(device=device, dry=args.dry_run, budget=Budget(args.budget), reserve=90.0 if not args.dry_run else 0.0,
               grid_n=_grid(dict(dry=args.dry_run))[1], launched={}, precompile={})

    def record_launch(launch, compiled):
        key = (launch.kernel.__name__, json.dumps({k: v for k, v in launch.constexprs.items()}, sort_keys=True,
                                                  default=str))
        ctx["launched"].setdefault(key, (launch, compiled))

    search.LAUNCH_HOOKS.append(record_launch)
    results: dict = {}
    only = {s for s in args.only.split(",") if s}
    for name, fn in SECTIONS:
        if only and name not in only and name != "environment":
            continue
        _log(f"section {name} ({ctx['budget'].left():.0f} s left)")
        start = time.monotonic()
        try:
            results[name] = fn(ctx)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:],
                             "ok": False}
        results[name]["section_seconds"] = time.monotonic() - start
        if name == "precompile":
            ctx["precompile"] = results[name]
        with open(os.path.join(out_dir, "results.json"), "w") as handle:
            json.dump(results, handle, indent=1, default=str)
        with open(os.path.join(out_dir, "report.md"), "w") as handle:
            handle.write(markdown(results))
    bad = [n for n, part in results.items() if n != "environment" and not part.get("ok", "skipped" in part)
           and "skipped" not in part]
    _log(f"done in {ctx['budget'].seconds - ctx['budget'].left():.0f} s; results in {out_dir}; "
         f"{'all sections passed' if not bad else 'FAILED: ' + ', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
