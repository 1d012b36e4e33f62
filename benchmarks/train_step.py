"""Training-step benchmark at one shape: ``fastrq.ResidualQuantizer`` vs vector-quantize-pytorch ``ResidualVQ``.

    python -m benchmarks.train_step [--n 65536] [--dim 64] [--codebook-size 1024] [--levels 8] [--repeats 3]
                                    [--threads 2] [--providers fastrq,vqp,search] [--out DIR]

The module-step benchmark (:mod:`benchmarks.module_step`: same step, settings, gate and interleaved timing) at one
custom shape, by default the large one quoted in the README (N = 65,536, D = 64, K = 1,024, L = 8); writes
``train_step.json`` / ``.md`` into ``benchmarks/results/<date>/``. One step = forward (search, straight-through
output, commitment loss, EMA update) + backward of ``(quantized · g).sum() + loss``; shared settings: EMA, decay
0.99, commitment weight 0.25, no k-means, no dead-code restarts, no rotation trick, fp32, CPU. Providers: those of
:mod:`benchmarks.module_step` (``search`` shows how much of a fastrq step is the search itself).

Under load, 2-thread runs swing 10–30× (the GEMM search suffers from CPU oversubscription far more than ResidualVQ's
memory-bound work): compare ratios from quiet runs (the metadata records the load average).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/train_step.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import module_step  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--providers", default="fastrq,vqp,search",
                        help="comma list of " + ", ".join(module_step.PROVIDERS))
    parser.add_argument("--mem-cap-gib", type=float, default=6.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    return module_step.main([
        "--custom", f"{args.dim},{args.codebook_size},{args.levels}", "--n", str(args.n), "--reps", str(args.repeats),
        "--budget-s", "inf", "--threads", str(args.threads), "--providers", *args.providers.split(","), "--share",
        "--mem-cap-gib", str(args.mem_cap_gib), "--name", "train_step", *(["--out", args.out] if args.out else []),
    ])


if __name__ == "__main__":
    main()
