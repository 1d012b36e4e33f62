"""The measurements that chose the reference models' codebook defaults (issue 11): one round of plan.json.

    python benchmarks/results/2026-12-01_reproduce_full/defaults_sweep/sweep.py --round s4 --data-dir ../shared/data

Each configuration of the round is trained with ``fastrq.models.training.train_autoencoder`` (one thread, batch
128, Adam lr 2e-3, the round's first-N training images and epochs; 2,000 test images) and one JSON line per
(configuration, seed) is appended to ``<round>.jsonl``: test recon MSE, usage and perplexity per level, training
images/s, wall seconds. Every quantizer lever is set explicitly in plan.json, so later default changes do not change
what a round trains. summarize.py turns the files into summary.md.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from fastrq.models.networks.autoencoders import ModelConfig
from fastrq.models.training.autoencoder import AutoencoderTrainConfig, train_autoencoder

HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser()
parser.add_argument("--round", required=True, help="s1, s2, s3 or s4 (plan.json)")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--runs", default="runs/defaults_sweep", help="run folders (not kept)")
parser.add_argument("--only", nargs="*", help="configurations (default: all of the round)")
args = parser.parse_args()
plan = json.loads((HERE / "plan.json").read_text())[args.round]
torch.set_num_threads(1)
for seed in plan["seeds"]:
    for name, options in plan["configs"].items():
        if args.only and name not in args.only:
            continue
        options = dict(options)
        model = ModelConfig.for_model(options.pop("model"), **options)
        tick = time.perf_counter()
        config = AutoencoderTrainConfig(
            model=model, out=f"{args.runs}/{args.round}/{name}_s{seed}", data_dir=args.data_dir,
            train_subset=plan["train_subset"], test_subset=2000, epochs=plan["epochs"], seed=seed, threads=1,
            progress=False, eval_every=0, checkpoint_every=0)
        test = train_autoencoder(config)["test"]
        record = {"name": name, "seed": seed, "recon_mse": test["recon_mse"], "usage": test["usage"],
                  "perplexity": test["perplexity"], "wall": time.perf_counter() - tick,
                  "round": args.round, "train_subset": plan["train_subset"], "epochs": plan["epochs"]}
        print(json.dumps(record), flush=True)
        with open(HERE / f"{args.round}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
