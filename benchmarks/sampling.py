"""KV-cached vs uncached RQ-Transformer sampling: same tokens, how much faster.

    python -m benchmarks.sampling [--batch 1 8 32] [--repeats 3] [--threads 2] [--out DIR]

For each batch size: a randomly initialised RQ-Transformer (default: the MNIST prior's shape: 7×7 positions,
2 depths, 128 codes, dim 128, 4 spatial + 2 depth layers, 4 heads), the uniform variates drawn once, and two
providers on :mod:`benchmarks.harness`: ``cached`` (:meth:`sample`, KV caches) and ``uncached``
(:meth:`sample_uncached`: a full forward over the prefix for every token, the stronger baseline than re-running the
whole padded sequence). The reference answer is one uncached draw made beforehand: the gate checks that both
providers return exactly its tokens (a sampler that differs is reported wrong and not timed); then they are timed
interleaved. Reported: median seconds per draw, images/s, and the speed-up = per-round ratio uncached / cached.
Writes ``sampling.json`` / ``.md`` into ``benchmarks/results/<date>/``. Exit status 1 if any sampler failed.
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch

from . import harness

__all__ = ["run", "render_table", "main"]


def _prior():
    """The one place that imports the prior."""
    from fastrq.models.networks.rq_transformer import PriorConfig, RQTransformer

    return PriorConfig, RQTransformer


def run(batch_sizes: list[int], repeats: int, config, seed: int = 0, log: Callable[[str], None] = print) -> list[dict]:
    """Gate and time both samplers at every batch size; the long-format records."""
    _, transformer = _prior()
    torch.manual_seed(seed)
    model = transformer(config).eval()
    records = []
    for batch in batch_sizes:
        u = torch.rand(batch, config.num_positions, config.depth, generator=torch.Generator().manual_seed(seed + batch))
        reference = model.sample_uncached(batch, u=u)

        def same_tokens(codes, reference=reference):
            same = bool(torch.equal(codes, reference))
            return same, "the same tokens as the uncached reference draw" if same else (
                f"{int((codes != reference).sum())} of {reference.numel()} tokens differ from the uncached draw")

        contenders = [
            harness.Contender("cached", lambda b=batch, u=u: model.sample(b, u=u), same_tokens,
                              label="RQTransformer.sample (KV caches)"),
            harness.Contender("uncached", lambda b=batch, u=u: model.sample_uncached(b, u=u), same_tokens,
                              label="RQTransformer.sample_uncached (full forward over the prefix per token)"),
        ]
        outcomes = harness.run(contenders, reps=repeats, log=log)
        found = harness.timing_records({"batch": batch}, outcomes, [("uncached", "cached")])
        cached = outcomes["cached"].summary()
        if cached["median_ms"]:
            found.append({"batch": batch, "provider": "cached", "metric": "images_per_s", "unit": "1/s",
                          "value": batch / (cached["median_ms"] / 1e3), "status": "ok"})
        records += found
        speedup = harness.select(found, metric="time_ratio")
        log(f"batch {batch:>4}: " + ", ".join(
            f"{o.name} {o.summary()['median_ms'] / 1e3:.3f} s" if o.times else f"{o.name} {o.status}: {o.detail}"
            for o in outcomes.values()) + (f", speed-up {speedup[0]['value']:.1f}×" if speedup else ""))
    return records


def render_table(document: dict) -> str:
    """The markdown table of a sampling results document."""
    records = document["records"]
    lines = ["| batch | cached s | uncached s | speed-up (uncached / cached) | same tokens |", "|---:|---:|---:|---:|:---:|"]
    for batch in sorted({r["batch"] for r in records}):
        rows = harness.select(records, batch=batch)
        ms = {p: harness.select(rows, metric="time_ms", provider=p)[0] for p in ("cached", "uncached")}
        speedup = harness.select(rows, metric="time_ratio")
        same = all(r["status"] == "ok" for r in ms.values())
        cell = {p: "–" if r["value"] is None else f"{r['value'] / 1e3:.3f}" for p, r in ms.items()}
        ratio = f"{speedup[0]['value']:.1f}×" if speedup else "–"
        busy = " †" if any(harness.contended(r) for r in ms.values()) else ""
        lines.append(f"| {batch}{busy} | {cell['cached']} | {cell['uncached']} | {ratio} | {'yes' if same else 'NO'} |")
    if any(harness.contended(r) for r in records if r["metric"] == "time_ms"):
        lines += ["", "† contended: other processes took the cores during this row: its times and speed-up are "
                  "unreliable; re-measure on a quiet machine."]
    meta = document["meta"]
    lines += ["", f"Run of {meta.get('date')} ({meta.get('cpu_count')} cores): load average "
              f"{(meta.get('load_average') or ['?'])[0]} at the start, {(meta.get('load_average_end') or ['?'])[0]} "
              "at the end."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--codebook-size", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--positions", type=int, default=49)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--spatial-layers", type=int, default=4)
    p.add_argument("--depth-layers", type=int, default=2)
    p.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<date>)")
    args = p.parse_args(argv)
    harness.set_threads(args.threads)
    prior_config, _ = _prior()
    config = prior_config(codebook_size=args.codebook_size, depth=args.depth, num_positions=args.positions,
                          dim=args.dim, heads=args.heads, spatial_layers=args.spatial_layers,
                          depth_layers=args.depth_layers)
    meta = harness.collect_metadata("sampling", {"batch": args.batch, "repeats": args.repeats, "config": config.to_dict()})
    records = run(args.batch, args.repeats, config)
    meta["load_average_end"] = harness.load_average()
    document = {"meta": meta, "records": [{**r, "threads": args.threads} for r in records]}
    table = render_table(document)
    path = harness.write_results("sampling", records, meta, "# RQ-Transformer sampling: KV-cached vs uncached\n\n"
                                 + table, args.out)
    print(f"\n{table}\n\nwrote {path}")
    return 0 if all(r["status"] == "ok" for r in records if r["metric"] == "time_ms") else 1


if __name__ == "__main__":
    raise SystemExit(main())
