"""Training-step benchmark: fastrq.ResidualQuantizer vs vector-quantize-pytorch ResidualVQ, same settings.

One step = forward (search, straight-through output, commitment loss, EMA update) + backward of
``(quantized · g).sum() + loss``. Settings shared by both: EMA codebooks on, decay equal, commitment weight 0.25,
k-means init off, dead-code restarts off, no rotation trick (VQP ``rotation_trick=False``), fp32, CPU.

Method: inputs built outside the timed region; A B A B interleaving (the machine is shared and its speed drifts),
one warm-up step each, medians and the median ratio; threads pinned (torch, faiss). Peak memory: peak RSS above the
pre-step RSS during one step (sampled every millisecond), in a fresh subprocess per provider so one provider's
peak does not hide the other's.

    python benchmarks/train_step.py --n 65536 --dim 64 --codebook-size 1024 --levels 8 --repeats 5

Measured on the shared 2-core development machine (2026-11-23, 4 other jobs running; torch 2.14.1 CPU, VQP 1.32.0):

| N | threads | fastrq ms (median) | VQP ms (median) | median of pair ratios | peak RSS growth fastrq / VQP |
| --- | --- | --- | --- | --- | --- |
| 65,536 | 1 | 1,793 | 23,702 | 12.4× (pairs 6.7–14.0×) | – |
| 65,536 | 2, quiet window (first 2 pairs) | 718, 771 | 9,827, 16,647 | 13.7×, 21.6× | 99–112 MiB / 2,135–2,228 MiB |
| 65,536 | 2, under load | 5,549 | 27,980 | 5.0× (0.7× in the worst run) | |
| 16,384 | 1 | 601 | 6,679 | 12.9× | 29 MiB / 471 MiB |

Re-measured 2026-11-24 on a quiet machine after the row-block-outer ``residual_quantize`` (D = 64, K = 1024, L = 8,
2 threads, 3 pairs, two runs): median pair ratio 20.4× and 16.5×; second run fastrq 666–923 ms (median 772),
VQP 12.4–14.0 s (median 12.8 s); peak RSS growth 104 MiB / 2,144 MiB.

Under load, 2-thread runs swing 10–30× (the search alone went from 0.7 s to 22 s between pairs): the GEMM search
suffers from CPU oversubscription far more than VQP's memory-bound work. Compare ratios from quiet runs.
The ``search`` provider shows that the module adds ~5–12% over ``fastrq.residual_quantize`` itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch


def build(provider: str, args):
    torch.manual_seed(0)
    if provider == "fastrq":
        import fastrq

        return fastrq.ResidualQuantizer(
            args.dim, args.codebook_size, args.levels, ema=True, decay=args.decay, commitment_weight=0.25,
            backend=args.backend,
        ).train()
    if provider == "search":
        return _SearchOnly(args)
    from vector_quantize_pytorch import ResidualVQ

    return ResidualVQ(
        dim=args.dim, codebook_size=args.codebook_size, num_quantizers=args.levels, decay=args.decay,
        commitment_weight=0.25, kmeans_init=False, rotation_trick=False, threshold_ema_dead_code=0,
    ).train()


class _SearchOnly(torch.nn.Module):
    """Provider ``search``: only ``fastrq.residual_quantize`` (no grad, no update) on the fastrq module's
    codebooks, to show how much of a fastrq step is the search itself."""

    def __init__(self, args):
        super().__init__()
        import fastrq

        self.codebooks = fastrq.ResidualQuantizer(args.dim, args.codebook_size, args.levels).codebooks.detach().clone()
        self.backend = args.backend

    def forward(self, x):
        import fastrq

        with torch.no_grad():
            quantized, codes = fastrq.residual_quantize(x, self.codebooks, backend=self.backend)
        return quantized, codes, x.new_zeros(())


def step(module, x, upstream):
    if isinstance(module, _SearchOnly):
        return module(x)[1]
    x = x.detach().requires_grad_()
    quantized, codes, loss = module(x)
    loss = loss.sum()  # VQP returns per-level losses
    ((quantized * upstream).sum() + loss).backward()
    return codes


def _threads(n):
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(provider, args) -> int:
    """Bytes of peak RSS above the pre-step RSS during one training step, in this (fresh) process: a sampling
    thread reads /proc/self/statm every millisecond (the process-wide high-water mark is useless here: importing
    torch's CUDA build peaks higher than a step)."""
    _threads(args.threads)
    module = build(provider, args)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.n, args.dim, generator=gen)
    upstream = torch.randn(args.n, args.dim, generator=gen)
    step(module, x[:1024], upstream[:1024])  # warm-up at a small size: allocator and lazy imports
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    step(module, x, upstream)
    done.set()
    sampler.join()
    return max(peak[0], _rss_bytes()) - base


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--decay", type=float, default=0.99)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--providers", default="fastrq,vqp", help="comma list of fastrq, vqp, search")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(peak_memory_child(args.memory_child, args))
        return
    _threads(args.threads)
    providers = args.providers.split(",")
    modules = {p: build(p, args) for p in providers}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.n, args.dim, generator=gen)
    upstream = torch.randn(args.n, args.dim, generator=gen)
    for p in providers:
        step(modules[p], x, upstream)  # warm-up
    times = {p: [] for p in providers}
    for _ in range(args.repeats):
        for p in providers:  # interleaved A B A B
            t0 = time.perf_counter()
            step(modules[p], x, upstream)
            times[p].append(time.perf_counter() - t0)
    result = {
        "shape": dict(n=args.n, dim=args.dim, codebook_size=args.codebook_size, levels=args.levels),
        "threads": args.threads,
        "torch": torch.__version__,
        "median_ms": {p: 1e3 * statistics.median(t) for p, t in times.items()},
        "all_ms": {p: [round(1e3 * v, 1) for v in t] for p, t in times.items()},
    }
    for slow, fast in (("vqp", "fastrq"), ("fastrq", "search")):
        if slow in times and fast in times:  # ratio of each interleaved pair, then the median
            ratios = [b / a for a, b in zip(times[fast], times[slow])]
            result[f"median_ratio_{slow}_over_{fast}"] = statistics.median(ratios)
    if not args.no_memory:
        result["peak_rss_growth_MiB"] = {}
        for p in providers:
            cmd = [sys.executable, __file__, "--memory-child", p] + [
                f"--n={args.n}", f"--dim={args.dim}", f"--codebook-size={args.codebook_size}",
                f"--levels={args.levels}", f"--threads={args.threads}", f"--backend={args.backend}",
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, check=True).stdout
            result["peak_rss_growth_MiB"][p] = round(int(out.strip().splitlines()[-1]) / 2**20, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
