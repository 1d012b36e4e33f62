"""GPU benchmark of the Triton kernels against the torch backend, the naive reference and peers, with a roofline.

``python -m benchmarks.gpu_bench`` (CUDA required for measurements) times, per grid point (N, D, K, L):

- ``triton-<mode>``: :func:`fastrq.kernels.search.residual_quantize` (one launch for all levels, the per-call
  codebook preparation included) per precision mode;
- ``torch``: :mod:`fastrq.ops.torch_backend` (tiled addmm + running argmin, one level at a time);
- ``naive``: :mod:`fastrq.ops.reference` (full N×K distance matrix per level; skipped where it would not fit);
- ``vqp``: vector-quantize-pytorch ``ResidualVQ`` eval forward (if installed), our codebooks copied into its layers.

with ``triton.testing.do_bench`` (medians, quantiles 0.2 / 0.8; inputs built outside the timed region), and reports
TFLOP/s (work = 2·N·K·D·L FLOPs) and the fraction of the roofline time. ``--model-only`` prints the roofline
model without timing anything (works without a GPU); ``--csv PATH`` writes the long-format results.

Roofline model (per grid point, for a device spec): the kernel cannot be faster than the largest of

- **MMA** (tensor-core modes): 2·N·K·D_pad·L / peak dot throughput of the mode (tf32x3 = three TF32 products),
  D_pad = D padded to a power of two ≥ 8 (TF32) or ≥ 16 (bf16),
- **epilogue**: ≈ 4 CUDA-core instructions per (row, code, level) after the dot (add the norm, compare, two
  selects of the running min/argmin): 4·N·K·L / (fp32 instruction rate = fp32 peak FLOP/s ÷ 2); it overlaps the MMA,
- **CUDA cores** (``ieee``: the broadcast-FMA path for D ≤ 4, tl.dot's FMA lowering above): products and epilogue
  share the CUDA cores, so (N·K·D·L FMAs + 4·N·K·L) / instruction rate,
- **memory**: minimal bytes (N·D in + N·D out) · itemsize + N·L·8 (codes) + L·K·D · itemsize over HBM bandwidth,
- **launch**: ≈ 4 µs per launch (one here).

The largest term names the expected bound (``mma``, ``epilogue``, ``memory`` or ``launch``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass

import torch

GRID = [  # (N, D, K, L): the field notes' anchors plus nearest-code (L = 1) points
    (65536, 4, 256, 8),
    (65536, 64, 1024, 8),
    (65536, 256, 1024, 4),
    (65536, 64, 8192, 4),
    (65536, 4, 8192, 1),
    (65536, 64, 1024, 1),
    (65536, 256, 8192, 1),
    (4096, 64, 1024, 8),
]
MODES = ("ieee", "tf32x3", "tf32", "bf16", "certified")
LAUNCH_S = 4e-6
EPILOGUE_OPS = 4


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    hbm_bytes_s: float
    fp32_flops: float  # CUDA-core fp32 FMA peak (2 FLOPs per FMA)
    tf32_flops: float  # dense tensor-core TF32
    bf16_flops: float  # dense tensor-core BF16

    def dot_flops(self, mode: str) -> float:
        return {"ieee": self.fp32_flops, "tf32x3": self.tf32_flops / 3, "tf32": self.tf32_flops,
                "bf16": self.bf16_flops}[mode]


SPECS = {
    "H100": DeviceSpec("H100 SXM", 3.35e12, 67e12, 495e12, 990e12),
    "H200": DeviceSpec("H200 SXM", 4.8e12, 67e12, 495e12, 990e12),
    "A100": DeviceSpec("A100 SXM", 2.04e12, 19.5e12, 156e12, 312e12),
}


def device_spec() -> DeviceSpec:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "H100"
    for key, spec in SPECS.items():
        if key in name:
            return spec
    return SPECS["H100"]  # unknown device: the H100 numbers, stated in the output


def roofline(n: int, d: int, k: int, levels: int, mode: str, spec: DeviceSpec, itemsize: int = 4) -> dict:
    """The lower bounds (seconds) and the name of the largest.

    Tensor-core modes (tf32x3 / tf32 / bf16, any D): the dot runs on tensor cores over D padded to a power of two
    (at least 8 for TF32 operands, 16 for bf16: Triton's smallest dot K), overlapping the CUDA-core epilogue, so the
    two are separate bounds. ``ieee`` runs the products *and* the epilogue on the same CUDA cores (D FMAs per pair
    for D ≤ 4, the padded D above): one bound, ``cuda-cores``, for their sum.
    """
    pow2 = 1 << max(d - 1, 0).bit_length()
    instr_rate = spec.fp32_flops / 2  # CUDA-core instructions per second (an FMA is 2 FLOPs)
    epilogue = EPILOGUE_OPS * n * k * levels / instr_rate
    memory = ((2 * n * d + levels * k * d) * itemsize + n * levels * 8) / spec.hbm_bytes_s
    if mode == "ieee":
        fmas = d if d <= 4 else max(8, pow2)
        terms = {"cuda-cores": (n * k * fmas * levels) / instr_rate + epilogue}
    else:
        d_pad = max(16 if mode == "bf16" else 8, pow2)
        terms = {"mma": 2 * n * k * d_pad * levels / spec.dot_flops(mode), "epilogue": epilogue}
    terms.update(memory=memory, launch=LAUNCH_S)
    bound = max(terms, key=terms.get)
    return {**terms, "bound": bound, "time": terms[bound]}


def model_table(spec: DeviceSpec, static: str | None = None) -> str:
    """The roofline per grid point; with ``static`` (a ``benchmarks/kernel_report.py --json`` file) also the
    issue bound predicted from the compiled code: SASS instructions per (row, code) pair of the search's inner loop
    (sm_90) × N·K·L / the CUDA-core instruction rate, and the predicted time max(MMA, issue, memory, launch)."""
    records = {}
    if static:
        import json

        with open(static) as handle:
            for r in json.load(handle):
                if r["kernel"] == "search" and r["target"] == "sm_90" and r["op"] == "train" and r["dtype"] == "float32":
                    records[(r["dim"], r["precision"])] = r
    head = "| N | D | K | L | mode | MMA | epilogue | CUDA cores (FMA + epilogue) | memory | launch | bound |"
    if static:
        head += " SASS/pair (sm_90) | issue bound | predicted | % of bound |"
    lines = [f"roofline model for {spec.name}: lower bounds in µs (largest = expected bound)", head,
             "|" + "---|" * (15 if static else 11)]
    instr_rate = spec.fp32_flops / 2
    for n, d, k, levels in GRID:
        for mode in ("tf32x3", "bf16", "ieee"):
            r = roofline(n, d, k, levels, mode, spec)
            cell = lambda key: f"{r[key] * 1e6:.1f}" if key in r else "–"  # noqa: E731
            line = (f"| {n} | {d} | {k} | {levels} | {mode} | {cell('mma')} | {cell('epilogue') if 'mma' in r else '–'} "
                    f"| {cell('cuda-cores')} | {cell('memory')} | {cell('launch')} | {r['bound']} |")
            if static:
                rec = records.get((d, mode))
                if rec and rec["sass_per_pair"] > 0:
                    issue = rec["sass_per_pair"] * n * k * levels / instr_rate
                    predicted = max(issue, r.get("mma", 0.0), r["memory"], r["launch"])
                    line += (f" {rec['sass_per_pair']:.2f} | {issue * 1e6:.1f} | {predicted * 1e6:.1f} | "
                             f"{100 * r['time'] / predicted:.0f}% |")
                else:
                    line += " – | – | – | – |"
            lines.append(line)
    return "\n".join(lines)


def _providers(x, codebooks):
    from fastrq.ops import reference, torch_backend
    from fastrq.kernels import search

    n, d = x.shape
    levels, k, _ = codebooks.shape
    out = {}
    for mode in MODES:  # the codebook preparation (centring, split / rounding, norms) is part of every call
        out[f"triton-{mode}"] = lambda mode=mode: search.residual_quantize(x, codebooks, precision=mode)
    out["torch"] = lambda: torch_backend.residual_quantize(x, codebooks)
    if n * k * 4 * 3 < torch.cuda.mem_get_info()[0] // 2:
        out["naive"] = lambda: reference.residual_quantize(x, codebooks)
    try:
        from vector_quantize_pytorch import ResidualVQ

        rvq = ResidualVQ(dim=d, num_quantizers=levels, codebook_size=k, kmeans_init=False).to(x.device).eval()
        with torch.no_grad():
            for layer, book in zip(rvq.layers, codebooks):
                layer._codebook.embed.copy_(book[None])
        out["vqp"] = lambda: rvq(x[None])
    except Exception as exc:  # peer not installed or incompatible: say so
        print(f"vector-quantize-pytorch skipped: {exc}", file=sys.stderr)
    return out


def measure(csv_path: str | None) -> None:
    import triton

    torch.backends.cuda.matmul.allow_tf32 = False  # the torch provider in exact fp32, like triton-ieee
    spec = device_spec()
    print(f"device: {torch.cuda.get_device_name()} (roofline with {spec.name} numbers)")
    results = []
    for n, d, k, levels in GRID:
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(n, d, device="cuda", generator=gen)
        codebooks = torch.randn(levels, k, d, device="cuda", generator=gen)
        flops = 2 * n * k * d * levels
        for name, fn in _providers(x, codebooks).items():
            with torch.no_grad():
                p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
            mode = name.split("-", 1)[1] if name.startswith("triton-") else "ieee"
            mode = "bf16" if mode == "certified" else mode  # its first pass; the exact re-search is extra
            bound = roofline(n, d, k, levels, mode, spec)
            row = dict(n=n, d=d, k=k, levels=levels, provider=name, ms_p50=p50, ms_p20=p20, ms_p80=p80,
                       tflops=flops / (p50 * 1e-3) / 1e12, roofline_pct=100 * bound["time"] / (p50 * 1e-3),
                       bound=bound["bound"], device=torch.cuda.get_device_name(), torch=torch.__version__,
                       triton=triton.__version__)
            results.append(row)
            print(f"N={n} D={d} K={k} L={levels} {name:14s} {p50:9.3f} ms  {row['tflops']:7.2f} TFLOP/s  "
                  f"{row['roofline_pct']:5.1f}% of roofline ({bound['bound']})", flush=True)
        base = {r["provider"]: r["ms_p50"] for r in results if (r["n"], r["d"], r["k"], r["levels"]) == (n, d, k, levels)}
        if "torch" in base:
            print("  speed-up vs torch: " + ", ".join(f"{p} {base['torch'] / t:.2f}x" for p, t in base.items()))
    if csv_path:
        with open(csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(results[0]))
            writer.writeheader()
            writer.writerows(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-only", action="store_true", help="print the roofline model, time nothing")
    parser.add_argument("--device", choices=sorted(SPECS), help="device numbers for --model-only")
    parser.add_argument("--static", help="a kernel_report --json file: add the issue bound of the compiled code")
    parser.add_argument("--csv")
    args = parser.parse_args(argv)
    if args.model_only:
        print(model_table(SPECS[args.device or "H100"], args.static))
        return 0
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        print("no CUDA device (or TRITON_INTERPRET=1): nothing measured; --model-only prints the roofline model")
        return 0
    measure(args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
