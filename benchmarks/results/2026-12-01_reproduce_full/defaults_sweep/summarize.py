"""summary.md from the rounds' JSON lines (mean ± sample std over the seeds of each configuration)."""

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
plan = json.loads((HERE / "plan.json").read_text())


def pm(values, fmt):
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.fmean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def per_level(rows, key, fmt):
    levels = len(rows[0][key])
    return " / ".join(pm([r[key][l] for r in rows], fmt) for l in range(levels))


def levers(options):
    parts = []
    if not options.get("ema", True):
        parts.append("learned")
    if options["dead_code_threshold"]:
        parts.append(f"dead-code {options['dead_code_threshold']:g}")
    parts.append(f"decay {options['decay']:g}")
    for key, label in (("kmeans_init", "k-means++"), ("rotation_trick", "rotation"), ("use_cosine_sim", "cosine")):
        if options[key]:
            parts.append(label)
    if options["codebook_dim"]:
        parts.append(f"codebook_dim {options['codebook_dim']}")
    return ", ".join(parts)


def model(options):
    if options["model"] == "vqvae":
        return f"VQ {options.get('codebook_size', 256)}"
    return f"RQ {options.get('num_quantizers', 2)}×{options.get('codebook_size', 128)}"


lines = ["# Codebook defaults: the measurements", "",
         "Test set (first 2,000 MNIST test images): usage = fraction of a level's codes used, perplexity = exp(entropy)"
         " of its code histogram, recon MSE per pixel. Mean ± sample std over the seeds listed (one value: one seed). "
         "One thread per run, batch 128, Adam lr 2e-3; runs of a round differ only in the quantizer. Written by "
         "summarize.py from s*.jsonl (sweep.py).", ""]
for name, round_plan in plan.items():
    path = HERE / f"{name}.jsonl"
    if not path.is_file():
        continue
    groups = defaultdict(list)
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "error" not in record:
            groups[record["name"]].append(record)
    steps = round_plan["train_subset"] // 128 * round_plan["epochs"]
    lines += [f"## Round {name}: first {round_plan['train_subset']} training images, {round_plan['epochs']} epoch(s) "
              f"({steps} steps)", "",
              "| model | levers | seeds | usage per level | perplexity per level | recon MSE |",
              "| --- | --- | --- | --- | --- | ---: |"]
    for config, rows in groups.items():
        options = round_plan["configs"][config]
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {model(options)} | {levers(options)} | {seeds} | {per_level(rows, 'usage', '.3f')} | "
                     f"{per_level(rows, 'perplexity', '.1f')} | {pm([r['recon_mse'] for r in rows], '.5f')} |")
    lines.append("")
(HERE / "summary.md").write_text("\n".join(lines))
print("\n".join(lines))
