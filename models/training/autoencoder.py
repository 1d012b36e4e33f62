"""Train the MNIST autoencoders: ``fastrq train --model {vae,vqvae,rqvae} ...`` or ``python -m fastrq.models.train``.

Outputs in ``--out`` (default ``runs/<model>``)::

    run.json               the run's configuration
    metrics.jsonl          one record per --log-every steps ("kind": "train") and per evaluation ("kind": "eval")
    final.json             final test metrics (reconstruction MSE, PSNR, per-level residual error, usage,
                           perplexity) and the measured training throughput
    checkpoints/           atomic checkpoints (see fastrq.models.checkpoint); --resume continues from the newest
    plots/curves.png, plots/reconstructions.png

Exact resume: the batch order of an epoch is a pure function of (seed, epoch) and a checkpoint stores the model
(weights and quantizer buffers, incl. its counter-based RNG), the optimizer, every RNG state, the position in the
epoch and the running epoch sums, so a run killed at any point and resumed ends with the same final metrics as an
uninterrupted run with the same seed (on a deterministic device, with the same thread count and number of processes).
SIGINT/SIGTERM: the current step finishes, a checkpoint is saved, the process exits with status 130.

Multi-process: ``torchrun --nproc-per-node 2 -m fastrq.models.train ...`` (DDP; gloo on CPU, nccl on CUDA). Each
rank trains on its share of every global batch; the quantizer all-reduces its own EMA statistics; rank 0 evaluates,
logs and checkpoints.

``--model rqtransformer`` / ``--model classifier`` are handed to ``fastrq.models.prior.main`` /
``fastrq.models.classifier.main`` with the remaining arguments (``--model X`` removed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import FastRQError, InvalidArgumentError

from ..networks.autoencoders import MODEL_NAMES, Autoencoder, ModelConfig, build_model
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

__all__ = ["main", "build_parser", "train", "evaluate", "resolve_device", "DELEGATED_MODELS"]

DELEGATED_MODELS = {"rqtransformer": "fastrq.models.training.prior", "classifier": "fastrq.models.networks.classifier"}
INTERRUPTED_EXIT_CODE = 130


# ------------------------------------------------------------------------------------------------ arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastrq train",
        description="Train a VAE / VQ-VAE / RQ-VAE on MNIST with fastrq quantizers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=(*MODEL_NAMES, *DELEGATED_MODELS), default="rqvae")
    p.add_argument("--out", default=None, help="run folder (default: runs/<model>)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=("mnist", "synthetic"), default="mnist",
                   help="'synthetic': small generated digit-like images (tests, no files needed)")
    g.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $FASTRQ_DATA or ./data)")
    g.add_argument("--download", action="store_true", help="download MNIST if it is missing (needs network)")
    g.add_argument("--train-subset", type=int, default=0, help="use the first N training images (0: all)")
    g.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test images (0: all)")
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=4, help="codebook vector size D (latent channels)")
    g.add_argument("--hidden", type=int, nargs=2, default=(32, 64), metavar=("H1", "H2"))
    g.add_argument("--codebook-size", type=int, default=None, help="codes per level (default: 256 vqvae, 128 rqvae)")
    g.add_argument("--num-quantizers", type=int, default=2, help="RQ levels (rqvae)")
    g.add_argument("--learned-codebook", action="store_true", help="gradient-learned codebooks instead of EMA")
    g.add_argument("--decay", type=float, default=0.99, help="EMA decay")
    g.add_argument("--beta", type=float, default=0.25, help="commitment weight β")
    g.add_argument("--kmeans-init", action="store_true")
    g.add_argument("--dead-code-threshold", type=float, default=0.0)
    g.add_argument("--kl-weight", type=float, default=0.02,
                   help="VAE KL weight on the per-pixel scale (= 2σ² of a Gaussian decoder)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: no limit)")
    g.add_argument("--batch-size", type=int, default=128, help="per process")
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("execution")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--backend", default="auto", help="fastrq backend: auto, torch, triton, reference")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    g.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: at epoch ends only)")
    g.add_argument("--eval-batch-size", type=int, default=1000)
    g.add_argument("--log-every", type=int, default=10, help="train metrics record every N steps")
    g.add_argument("--checkpoint-every", type=int, default=200, help="checkpoint every N steps (and at epoch ends)")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    if args.codebook_size is None:
        codebook_size = 128 if args.model == "rqvae" else 256
    else:
        codebook_size = args.codebook_size
    return ModelConfig(
        model=args.model,
        hidden=tuple(args.hidden),
        latent_dim=args.latent_dim,
        codebook_size=codebook_size,
        num_quantizers=args.num_quantizers if args.model == "rqvae" else 1,
        ema=not args.learned_codebook,
        decay=args.decay,
        commitment_weight=args.beta,
        kmeans_init=args.kmeans_init,
        dead_code_threshold=args.dead_code_threshold,
        kl_weight=args.kl_weight,
        backend=args.backend,
    )


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {name}: CUDA is not available here (use --device cpu or auto)")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


# ------------------------------------------------------------------------------------------------ distributed


class _Dist:
    """Rank/world of this process; initialises the default process group when launched by torchrun."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_name, self.local_rank)
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ evaluation


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, bytes): equal digests = bit-identical states."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1]: 10·log10(1 / mse)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Test metrics of ``model`` (eval mode; changes no state) on ``images`` ``[N, 1, H, W]``.

    Returns ``loss`` (recon + aux), ``recon_mse`` (per-pixel MSE of the raw output), ``psnr`` (mean per-image PSNR
    of the output clamped to [0, 1]), ``aux_loss``; for quantized models also per level ``usage`` (fraction of the
    level's codes used on the whole set), ``perplexity`` (of the level's code histogram on the whole set),
    ``level_mse`` (mean squared latent residual after each level) and ``residual_norm`` (mean L2 norm of the latent
    residual per latent vector, before any level and after each level: L+1 values)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    levels = model.num_levels
    totals = {"loss": 0.0, "recon_mse": 0.0, "aux_loss": 0.0, "psnr": 0.0}
    counts = None
    norm_sums = torch.zeros(levels + 1, dtype=torch.float64)
    sq_sums = torch.zeros(levels, dtype=torch.float64)
    vectors = 0
    n = images.shape[0]
    for start in range(0, n, batch_size):
        x = images[start:start + batch_size].to(device)
        out = model(x)
        b = x.shape[0]
        totals["loss"] += float(out["loss"]) * b
        totals["recon_mse"] += float(out["recon_loss"]) * b
        totals["aux_loss"] += float(out["aux_loss"]) * b
        per_image = (out["recon"].clamp(0, 1) - x).pow(2).flatten(1).mean(1)
        totals["psnr"] += float(psnr_from_mse(per_image).sum())
        if levels:
            codes = out["codes"].reshape(-1, levels)
            size = model.quantizer.codebook_size
            hist = torch.stack([torch.bincount(codes[:, l].clamp_min(0), minlength=size) for l in range(levels)])
            counts = hist.cpu() if counts is None else counts + hist.cpu()
            z = model.encoder(x).movedim(1, -1).reshape(-1, model.config.latent_dim).float()
            residual = z
            norm_sums[0] += residual.norm(dim=-1).double().sum().cpu()
            codebooks = model.quantizer.codebooks.detach()
            for l in range(levels):
                residual = residual - codebooks[l][codes[:, l]]
                norm_sums[l + 1] += residual.norm(dim=-1).double().sum().cpu()
                sq_sums[l] += residual.pow(2).double().sum().cpu()
            vectors += z.shape[0]
    result: dict[str, Any] = {k: v / n for k, v in totals.items()}
    if levels:
        sizes = torch.tensor(model.quantizer.level_sizes, dtype=torch.float64)
        probs = counts.double() / counts.sum(-1, keepdim=True).clamp_min(1)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
        result["usage"] = ((counts > 0).sum(-1).double() / sizes).tolist()
        result["perplexity"] = entropy.exp().tolist()
        result["level_mse"] = (sq_sums / max(vectors * model.config.latent_dim, 1)).tolist()
        result["residual_norm"] = (norm_sums / max(vectors, 1)).tolist()
    model.train(was_training)
    return result


# ------------------------------------------------------------------------------------------------ training


def _delegate(model: str, argv: list[str]) -> int:
    rest, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--model":
            skip = True
            continue
        if arg.startswith("--model="):
            continue
        rest.append(arg)
    module_name = DELEGATED_MODELS[model]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"fastrq train: --model {model} needs {module_name}, which is not available: {exc}", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def _stats_postfix(stats: dict[str, torch.Tensor] | None, loss: float) -> dict[str, str]:
    postfix = {"loss": f"{loss:.4f}"}
    if stats:
        postfix["usage"] = "/".join(f"{u:.2f}" for u in stats["usage"].tolist())
        postfix["ppl"] = "/".join(f"{p:.0f}" for p in stats["perplexity"].tolist())
    return postfix


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run training as configured by ``args`` (see :func:`build_parser`); returns the final metrics (rank 0) or {}.

    Raises :class:`KeyboardInterrupt` after saving a checkpoint when SIGINT/SIGTERM arrived."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = _Dist(args.device)
    device = dist.device
    out = Path(args.out or f"runs/{args.model}")
    ckpt_dir = out / "checkpoints"
    config = model_config_from_args(args)
    run_config = {
        "model_config": config.to_dict(),
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "world_size": dist.world,
    }

    if not dist.main:
        dist.barrier()  # rank 0 loads (and with --download fetches) first
    train_split = load_dataset(args.dataset, data_dir=args.data_dir, train=True, download=args.download and dist.main,
                               subset=args.train_subset or None)
    test_split = load_dataset(args.dataset, data_dir=args.data_dir, train=False, download=args.download and dist.main,
                              subset=args.test_subset or None)
    if dist.main:
        dist.barrier()
    train_images = train_split.images.to(device)
    test_images = test_split.images.to(device)
    batches_per_epoch = len(batch_indices(torch.arange(len(train_split)), args.batch_size, 0, dist.world))

    torch.manual_seed(args.seed)  # same initial weights and quantizer RNG seed on every rank
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    step, epoch, batch_in_epoch = 0, 0, 0
    epoch_sums = torch.zeros(2, dtype=torch.float64)  # Σ loss·B, Σ recon·B over this epoch's steps on this rank
    metrics = MetricsLog(out / "metrics.jsonl", enabled=dist.main)
    resumed_from = None
    if args.resume:
        newest = latest_checkpoint(ckpt_dir)
        if newest is None:
            if dist.main:
                print(f"fastrq train: --resume: no checkpoint in {ckpt_dir}; starting from scratch", file=sys.stderr)
        else:
            ckpt = load_checkpoint(newest)
            saved = ckpt.config.get("model_config", {})
            # the backend may change on resume (e.g. continue on a GPU with triton); the model may not
            if {k: v for k, v in saved.items() if k != "backend"} != {k: v for k, v in config.to_dict().items() if k != "backend"}:
                raise InvalidArgumentError(
                    f"--resume: the checkpoint in {newest} was trained with {saved}, not {config.to_dict()}"
                )
            load_model_weights(model, ckpt)
            optimizer.load_state_dict(ckpt.state["optimizer"])
            extra = ckpt.state["extra"]
            step, epoch, batch_in_epoch = int(extra["step"]), int(extra["epoch"]), int(extra["batch_in_epoch"])
            saved_sums = extra["epoch_sums"]
            if len(saved_sums) == dist.world:
                epoch_sums = saved_sums[dist.rank].clone()
            else:  # another world size: keep the epoch totals right (rank 0 carries them); the order differs anyway
                epoch_sums = torch.stack(saved_sums).sum(0) if dist.main else torch.zeros(2, dtype=torch.float64)
            rng = ckpt.state["rng"]
            restore_rng_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
            # records the interrupted process wrote after this checkpoint are written again by this one
            metrics.truncate_after(step, drop_at_step=("final",))
            resumed_from = str(newest)
    if not args.resume or resumed_from is None:
        torch.manual_seed(args.seed * 7919 + dist.rank)  # per-rank noise (VAE sampling) from here on
        if dist.main and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()  # a fresh run starts a fresh log
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "run.json", json.dumps({**run_config, "resumed_from": resumed_from}, indent=2))

    train_model: torch.nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # The quantizer keeps its EMA buffers consistent itself (one all-reduce per step): no buffer broadcast.
        with warnings.catch_warnings():  # torch ≥ 2.14 deprecates the name, but its replacement still syncs at init
            warnings.simplefilter("ignore", FutureWarning)
            train_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )

    last_saved = step if resumed_from else -1

    def checkpoint() -> None:
        nonlocal last_saved
        last_saved = step
        rng_states = dist.gather_objects(capture_rng_state())
        sums = dist.gather_objects(epoch_sums.clone())
        if dist.main:
            save_checkpoint(
                ckpt_dir, step=step, model=model, optimizer=optimizer, keep=args.keep_checkpoints,
                config={**run_config, "epoch": epoch, "batch_in_epoch": batch_in_epoch},
                rng_states=rng_states,
                extra={"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "epoch_sums": sums},
            )
        dist.barrier()

    def run_eval(kind: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if dist.main:
            result = evaluate(model, test_images, args.eval_batch_size)
            metrics.write({"kind": kind, "step": step, "epoch": epoch, **result})
        dist.barrier()
        return result

    progress = None
    use_progress = dist.main and not args.no_progress
    if use_progress:
        from tqdm.auto import tqdm
    train_seconds, train_images_seen = 0.0, 0
    max_steps = args.max_steps or math.inf
    interrupted = False
    model.train()
    with StopRequest() as stop:
        while epoch < args.epochs and step < max_steps and not interrupted:
            order = epoch_order(len(train_split), args.seed, epoch)
            batches = batch_indices(order, args.batch_size, dist.rank, dist.world)
            if use_progress:
                progress = tqdm(total=len(batches), initial=batch_in_epoch, desc=f"{args.model} epoch {epoch + 1}/{args.epochs}",
                                dynamic_ncols=True, leave=False, file=sys.stderr)
            while batch_in_epoch < len(batches) and step < max_steps:
                x = train_images[batches[batch_in_epoch].to(device)]
                tick = time.perf_counter()
                output = train_model(x, return_stats=True)
                optimizer.zero_grad(set_to_none=True)
                output["loss"].backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_seconds += time.perf_counter() - tick
                train_images_seen += x.shape[0] * dist.world
                step += 1
                batch_in_epoch += 1
                loss = float(output["loss"].detach())
                if not math.isfinite(loss):
                    raise FastRQError(f"training diverged: loss is {loss} at step {step} (epoch {epoch})")
                epoch_sums += torch.tensor([loss * x.shape[0], float(output["recon_loss"].detach()) * x.shape[0]], dtype=torch.float64)
                stats = output.get("stats")
                if step % args.log_every == 0:
                    record = {"kind": "train", "step": step, "epoch": epoch, "loss": loss,
                              "recon_mse": float(output["recon_loss"].detach()), "aux_loss": float(output["aux_loss"].detach())}
                    if stats:
                        record.update({f"batch_{k}": v for k, v in stats.items()})
                    metrics.write(record)
                if progress is not None:
                    progress.update(1)
                    if step % args.log_every == 0 or batch_in_epoch == 1:
                        progress.set_postfix(_stats_postfix(stats, loss), refresh=False)
                if args.eval_every and step % args.eval_every == 0 and batch_in_epoch < len(batches):
                    run_eval("eval")
                if stop.requested(sync=dist.enabled):
                    interrupted = True
                    break
                # (the step that ends an epoch is checkpointed after the epoch's records, below)
                if args.checkpoint_every and step % args.checkpoint_every == 0 and batch_in_epoch < len(batches):
                    checkpoint()
            if progress is not None:
                progress.close()
            if interrupted:
                break
            if batch_in_epoch >= len(batches):  # epoch complete
                sums = dist.sum_(epoch_sums.clone())
                seen = len(batches) * args.batch_size * dist.world
                if dist.main:
                    metrics.write({"kind": "epoch", "step": step, "epoch": epoch,
                                   "train_loss": float(sums[0]) / seen, "train_recon_mse": float(sums[1]) / seen})
                run_eval("eval")
                epoch, batch_in_epoch = epoch + 1, 0
                epoch_sums.zero_()
                checkpoint()
        if interrupted:
            checkpoint()
            dist.close()
            raise KeyboardInterrupt(f"interrupted at step {step}; checkpoint saved in {ckpt_dir}")

    result: dict[str, Any] = {}
    if last_saved != step:  # stopped by --max-steps mid-epoch
        checkpoint()
    # DDP: every rank must hold the same weights and quantizer state (gradients all-reduced by DDP, EMA statistics
    # by the quantizer); a mismatch means a sync bug, so it is checked rather than assumed.
    digests = dist.gather_objects(state_digest(model))
    ranks_consistent = all(d == digests[0] for d in digests)
    if dist.main:
        final = evaluate(model, test_images, args.eval_batch_size)
        result = {
            "model": args.model,
            "model_config": config.to_dict(),
            "steps": step,
            "epochs": epoch,
            "world_size": dist.world,
            "ranks_consistent": ranks_consistent,
            "train_images": len(train_split),
            "test_images": len(test_split),
            "test": final,
            "train_images_per_s": train_images_seen / train_seconds if train_seconds > 0 else None,
            "device": str(device),
            "backend": args.backend,
        }
        metrics.write({"kind": "final", "step": step, "epoch": epoch, **final})
        atomic_write_text(out / "final.json", json.dumps(result, indent=2))
        if not args.no_plots:
            from ..study import plots

            plots.plot_run(out, model, test_images[:16])
    dist.barrier()  # ranks leave together: none tears its process group down while another still works
    dist.close()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    known, _ = peek.parse_known_args(argv)
    if known.model in DELEGATED_MODELS:  # their own options: do not parse them here
        return _delegate(known.model, argv)
    args = build_parser().parse_args(argv)
    if args.data_dir is None:
        args.data_dir = default_data_dir()
    try:
        result = train(args)
    except KeyboardInterrupt as exc:
        print(f"fastrq train: {exc or 'interrupted'}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except FastRQError as exc:
        print(f"fastrq train: error: {exc}", file=sys.stderr)
        return 2
    if result:
        test = result["test"]
        line = f"final test: recon MSE {test['recon_mse']:.5f}, PSNR {test['psnr']:.2f} dB"
        if "perplexity" in test:
            line += ", usage " + "/".join(f"{u:.2f}" for u in test["usage"])
            line += ", perplexity " + "/".join(f"{p:.1f}" for p in test["perplexity"])
        if result["train_images_per_s"]:
            line += f"; {result['train_images_per_s']:.0f} images/s"
        print(line)
        print(f"run folder: {Path(args.out or f'runs/{args.model}').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
