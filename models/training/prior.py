"""Train the RQ-Transformer prior on the codes of a trained RQ-VAE.

``fastrq train --model rqtransformer --rqvae runs/rqvae [--class-cond] [--epochs N] [--max-minutes M]`` or
``fastrq.models.prior.main(argv)``.

1. The RQ-VAE checkpoint (a run folder, its ``checkpoints/`` or one checkpoint folder) is loaded and the whole
   training split (and the test split) is encoded once: codes ``[N, h, w, L]`` → ``[N, h·w, L]``.
2. :class:`~fastrq.models.rq_transformer.RQTransformer` is trained with AdamW, linear warm-up then cosine decay,
   cross-entropy over every code. Batches follow :func:`fastrq.models.data.epoch_order` (a pure function of seed and
   epoch), so ``--resume`` continues exactly where a killed run stopped.
3. Outputs in ``--out`` (default ``runs/rqtransformer``): ``run.json``, ``metrics.jsonl`` (train loss, per-depth test
   NLL in bits per code), ``checkpoints/`` (atomic, see :mod:`fastrq.models.checkpoint`), ``final.json`` and
   ``samples.png`` (+ ``samples_by_class.png`` for a class-conditional prior).

``--max-minutes`` stops training (with a checkpoint) once that much training time has passed: the CPU-budget knob.
The defaults (dim 128, 4 spatial + 2 depth layers, 4 heads, no dropout, batch 128, AdamW lr 2e-3, 5 epochs) with
``--max-minutes 29`` are the configuration measured to meet issue 6's sample-quality targets on 2 CPU cores
(README, "RQ-Transformer prior"); sample it with temperature 1 at depth 0 and 0 at the later depths.
SIGINT/SIGTERM: the current step finishes, a checkpoint is written, exit status 130.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import FastRQError, InvalidArgumentError, StateDictError

from ..networks.autoencoders import RQVAE, build_model
from .checkpoint import (
    atomic_write_text,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from .data import batch_indices, default_data_dir, epoch_order, load_dataset
from .interrupt import StopRequest
from .metrics_log import MetricsLog
from ..networks.rq_transformer import PriorConfig, RQTransformer, flatten_codes

__all__ = ["build_parser", "train", "main", "load_rqvae", "load_prior", "encode_split", "LoadedPrior"]

INTERRUPTED_EXIT_CODE = 130


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def load_rqvae(path: str | Path) -> RQVAE:
    """A trained RQ-VAE (or VQ-VAE) from a run folder / checkpoint folder, eval mode. StateDictError otherwise."""
    ckpt = load_checkpoint(_checkpoint_dir(path))
    config = ckpt.config.get("model_config")
    if not config or config.get("model") not in ("rqvae", "vqvae"):
        raise StateDictError(f"{ckpt.path} is not an RQ-VAE / VQ-VAE checkpoint (model_config={config})")
    model = build_model(config)
    load_model_weights(model, ckpt)
    return model.eval()


class LoadedPrior:
    """A trained prior with what is needed to turn its codes into images: ``model``, ``height``, ``width``,
    ``rqvae_path`` (as recorded at training time), ``config`` (the checkpoint's config.json)."""

    def __init__(self, model: RQTransformer, height: int, width: int, rqvae_path: str | None, config: dict[str, Any]):
        self.model, self.height, self.width, self.rqvae_path, self.config = model, height, width, rqvae_path, config


def load_prior(path: str | Path) -> LoadedPrior:
    ckpt = load_checkpoint(_checkpoint_dir(path))
    if "prior_config" not in ckpt.config:
        raise StateDictError(f"{ckpt.path} is not an RQ-Transformer prior checkpoint")
    model = RQTransformer(PriorConfig.from_dict(ckpt.config["prior_config"]))
    load_model_weights(model, ckpt)
    return LoadedPrior(model.eval(), int(ckpt.config["height"]), int(ckpt.config["width"]), ckpt.config.get("rqvae"), ckpt.config)


@torch.no_grad()
def encode_split(rqvae: RQVAE, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Images ``[N, 1, 28, 28]`` → image-shaped codes int64 ``[N, h, w, L]``."""
    chunks = [rqvae.encode_codes(images[s:s + batch_size]) for s in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrq train --model rqtransformer", description="train the RQ-Transformer prior")
    p.add_argument("--rqvae", required=True, help="trained RQ-VAE: run folder, checkpoints/ or a checkpoint folder")
    p.add_argument("--out", default="runs/rqtransformer", help="run folder")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=("mnist", "synthetic"), default="mnist")
    d.add_argument("--data-dir", default=None, help=f"folder holding MNIST/raw (default: $FASTRQ_DATA or {default_data_dir()})")
    d.add_argument("--train-subset", type=int, default=0, help="first N training images (0 = all)")
    d.add_argument("--test-subset", type=int, default=0, help="first N test images for the NLL (0 = all)")
    m = p.add_argument_group("model")
    m.add_argument("--dim", type=int, default=128)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--spatial-layers", type=int, default=4)
    m.add_argument("--depth-layers", type=int, default=2)
    m.add_argument("--dropout", type=float, default=0.0)
    m.add_argument("--class-cond", action="store_true", help="condition on the MNIST label")
    m.add_argument("--class-dropout", type=float, default=0.1, help="label → 'no class' probability in training")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = no limit)")
    t.add_argument("--max-minutes", type=float, default=0.0, help="stop after this much training time (0 = no limit)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-steps", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (and at each epoch end)")
    t.add_argument("--keep-checkpoints", type=int, default=2)
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--grid-samples", type=int, default=64, help="samples drawn into samples.png at the end (0 = none)")
    return p


def _schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10 % of the peak
    return factor


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train as configured by ``args`` (see :func:`build_parser`); returns the final metrics."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    rqvae = load_rqvae(args.rqvae)
    train_split = load_dataset(args.dataset, data_dir=args.data_dir, train=True, subset=args.train_subset or None)
    test_split = load_dataset(args.dataset, data_dir=args.data_dir, train=False, subset=args.test_subset or None)
    tick = time.perf_counter()
    train_image_codes = encode_split(rqvae, train_split.images)
    test_codes = flatten_codes(encode_split(rqvae, test_split.images))
    encode_seconds = time.perf_counter() - tick
    _, height, width, depth = train_image_codes.shape
    train_codes = flatten_codes(train_image_codes)
    prior_config = PriorConfig(
        codebook_size=int(rqvae.config.codebook_size), depth=depth, num_positions=height * width, dim=args.dim,
        heads=args.heads, spatial_layers=args.spatial_layers, depth_layers=args.depth_layers, dropout=args.dropout,
        num_classes=10 if args.class_cond else 0, class_dropout=args.class_dropout,
    )
    run_config = {
        "model": "rqtransformer", "prior_config": prior_config.to_dict(), "height": height, "width": width,
        "rqvae": str(Path(args.rqvae).resolve()), "args": vars(args),
    }
    labels = train_split.labels if args.class_cond else None
    test_labels = test_split.labels if args.class_cond else None

    torch.manual_seed(args.seed)
    model = RQTransformer(prior_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.95))
    steps_per_epoch = len(batch_indices(torch.arange(len(train_codes)), args.batch_size))
    total_steps = args.epochs * steps_per_epoch if not args.max_steps else min(args.max_steps, args.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(args.warmup_steps, total_steps))

    step, epoch, batch_in_epoch, train_seconds = 0, 0, 0, 0.0
    metrics = MetricsLog(out / "metrics.jsonl")
    resumed_from = None
    if args.resume and (newest := latest_checkpoint(ckpt_dir)) is not None:
        ckpt = load_checkpoint(newest)
        if ckpt.config.get("prior_config") != prior_config.to_dict():
            raise InvalidArgumentError(f"--resume: {newest} was trained with {ckpt.config.get('prior_config')}, "
                                       f"not {prior_config.to_dict()}")
        load_model_weights(model, ckpt)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        extra = ckpt.state["extra"]
        scheduler.load_state_dict(extra["scheduler"])
        step, epoch, batch_in_epoch = int(extra["step"]), int(extra["epoch"]), int(extra["batch_in_epoch"])
        train_seconds = float(extra["train_seconds"])
        restore_rng_state(ckpt.state["rng"][0])
        metrics.truncate_after(step, drop_at_step=("final",))
        resumed_from = str(newest)
    else:
        if args.resume:
            print(f"fastrq train --model rqtransformer: --resume: no checkpoint in {ckpt_dir}; starting from scratch",
                  file=sys.stderr)
        if (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run.json", json.dumps({**run_config, "resumed_from": resumed_from}, indent=2, default=str))

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_dir, step=step, model=model, optimizer=optimizer, keep=args.keep_checkpoints,
            config=json.loads(json.dumps(run_config, default=str)), rng_states=[capture_rng_state()],
            extra={"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "train_seconds": train_seconds,
                   "scheduler": scheduler.state_dict()},
        )

    last_eval: dict[str, Any] = {}

    def evaluate() -> dict[str, Any]:
        if last_eval.get("step") == step:  # the epoch-end evaluation already covers this step
            return last_eval
        bits = model.nll_per_depth(test_codes, test_labels)
        record = {"kind": "eval", "step": step, "epoch": epoch, "test_bits_per_code": bits.tolist(),
                  "test_bits_per_image": float(bits.sum() * height * width)}
        metrics.write(record)
        last_eval.clear()
        last_eval.update(record)
        return record

    use_progress = not args.no_progress
    if use_progress:
        from tqdm.auto import tqdm
    budget = args.max_minutes * 60 if args.max_minutes > 0 else math.inf
    stopped_by = "epochs"
    model.train()
    with StopRequest() as stop:
        while epoch < args.epochs and step < total_steps:
            batches = batch_indices(epoch_order(len(train_codes), args.seed, epoch), args.batch_size)
            bar = tqdm(total=len(batches), initial=batch_in_epoch, desc=f"prior epoch {epoch + 1}/{args.epochs}",
                       leave=False, file=sys.stderr, dynamic_ncols=True) if use_progress else None
            while batch_in_epoch < len(batches) and step < total_steps:
                index = batches[batch_in_epoch]
                tick = time.perf_counter()
                loss = model.loss(train_codes[index], None if labels is None else labels[index])
                value = float(loss.detach())
                if not math.isfinite(value):  # before the update: the weights stay as they were
                    raise FastRQError(f"prior training diverged: loss {value} at step {step + 1}; "
                                      f"the last checkpoint in {ckpt_dir} is intact")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                train_seconds += time.perf_counter() - tick
                step += 1
                batch_in_epoch += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.3f}")
                if step % args.log_every == 0:
                    metrics.write({"kind": "train", "step": step, "epoch": epoch, "loss": value,
                                   "lr": scheduler.get_last_lr()[0], "time_train_s": train_seconds})
                if stop.requested():
                    checkpoint()
                    raise KeyboardInterrupt
                if train_seconds >= budget:
                    stopped_by = "max_minutes"
                    break
                if step % args.checkpoint_every == 0:
                    checkpoint()
            if bar is not None:
                bar.close()
            if batch_in_epoch >= len(batches):
                epoch, batch_in_epoch = epoch + 1, 0
                evaluate()
                checkpoint()
            if stopped_by == "max_minutes":
                break
    if step >= total_steps and stopped_by == "epochs" and args.max_steps:
        stopped_by = "max_steps"
    checkpoint()
    final = evaluate()
    result = {
        "steps": step, "epochs_completed": epoch, "stopped_by": stopped_by, "time_train_s": train_seconds,
        "time_encode_s": encode_seconds, "train_images": len(train_codes), "test_images": len(test_codes),
        "test_bits_per_code": final["test_bits_per_code"], "test_bits_per_image": final["test_bits_per_image"],
        "prior_config": prior_config.to_dict(),
    }
    metrics.write({"kind": "final", "step": step, **{k: v for k, v in result.items() if k != "prior_config"}})
    atomic_write_text(out / "final.json", json.dumps(result, indent=2))
    if args.grid_samples > 0:
        from ..study.sampling import write_sample_grids

        write_sample_grids(LoadedPrior(model.eval(), height, width, run_config["rqvae"], run_config), rqvae, out,
                           num=args.grid_samples, seed=args.seed)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = train(args)
    except KeyboardInterrupt:
        print("fastrq train --model rqtransformer: interrupted; checkpoint saved, --resume continues", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except FastRQError as exc:
        print(f"fastrq train --model rqtransformer: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "prior_config"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
