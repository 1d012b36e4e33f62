"""Train the MNIST autoencoders (VAE / VQ-VAE / RQ-VAE): :func:`train_autoencoder` on an
:class:`AutoencoderTrainConfig` (``fastrq train --model {vae,vqvae,rqvae}`` builds one from its flags).

Outputs in ``config.out`` (default ``runs/<model>``)::

    run.json               the run's configuration
    metrics.jsonl          one record per ``log_every`` steps ("kind": "train": loss, recon MSE, and for quantized
                           models the batch's codebook usage and perplexity per level), per epoch ("epoch") and
                           per evaluation ("eval"), and a last "final" record
    final.json             final test metrics (reconstruction MSE, PSNR, per-level residual error, usage,
                           perplexity) and the measured training throughput
    checkpoints/           atomic checkpoints (see :mod:`.checkpoint`); ``resume=True`` continues from the newest

(``fastrq train`` then draws ``plots/``, see :func:`fastrq.models.study.plots.plot_trained_run`.)

Exact resume: the batch order of an epoch is a pure function of (seed, epoch) and a checkpoint stores the model
(weights and quantizer buffers, incl. its counter-based RNG), the optimizer, every RNG state, the position in the
epoch and the running epoch sums, so a run killed at any point and resumed ends with the same final metrics as an
uninterrupted run with the same seed (on a deterministic device, with the same thread count and number of processes).
Stop requests, the NaN guard and checkpoints: :mod:`.loop`.

Multi-process (``torchrun --nproc-per-node 2 -m fastrq.models.train ...``): DDP, gloo on CPU, nccl on CUDA. Each
rank trains on its share of every global batch; the quantizer all-reduces its own EMA statistics; rank 0 evaluates,
logs and checkpoints, and the final weights of all ranks are compared (``ranks_consistent`` in final.json).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import InvalidArgumentError

from ..networks.autoencoders import Autoencoder, ModelConfig, build_model
from .checkpoint import Checkpoint, atomic_write_text
from .data import ImageSplit, batch_indices, epoch_order, load_splits
from .distributed import Distributed, state_digest
from .evaluation import evaluate
from .loop import LoopState, TrainingLoop, TrainingTask
from .metrics_log import MetricsLog

__all__ = ["AutoencoderTrainConfig", "train_autoencoder"]


@dataclass
class AutoencoderTrainConfig:
    """How to train one autoencoder. The defaults are ``fastrq train``'s.

    ``model``: the network (:meth:`ModelConfig.for_model` gives the study's per-model defaults); ``out``: run
    folder (None: ``runs/<model>``); data: ``dataset``, ``data_dir`` (None: ``$FASTRQ_DATA`` or ./data),
    ``download``, ``train_subset`` / ``test_subset`` (the first N images, 0: all); optimisation: ``epochs``,
    ``max_steps`` (0: no limit), ``batch_size`` (per process), Adam ``lr``, ``seed``; execution: ``device``,
    ``threads`` (0: torch's default), ``eval_every`` (steps, 0: at epoch ends only), ``eval_batch_size``,
    ``log_every``, ``checkpoint_every`` (steps; also at epoch ends), ``keep_checkpoints``, ``resume``, ``progress``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    out: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = False
    train_subset: int = 0
    test_subset: int = 0
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    eval_every: int = 0
    eval_batch_size: int = 1000
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    resume: bool = False
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.model.model}")


def _stats_postfix(stats: dict[str, torch.Tensor] | None, loss: float) -> dict[str, str]:
    postfix = {"loss": f"{loss:.4f}"}
    if stats:
        postfix["usage"] = "/".join(f"{u:.2f}" for u in stats["usage"].tolist())
        postfix["ppl"] = "/".join(f"{p:.0f}" for p in stats["perplexity"].tolist())
    return postfix


class _AutoencoderTask(TrainingTask):
    """Adam on ``loss`` = reconstruction MSE + quantizer loss (or KL). Per step it keeps the batch's loss terms and
    quantizer statistics for the train record; per epoch this rank's Σ loss·B and Σ recon·B."""

    def __init__(self, config: AutoencoderTrainConfig, dist: Distributed, train: ImageSplit, test: ImageSplit,
                 metrics: MetricsLog):
        self.config, self.dist, self.metrics = config, dist, metrics
        self.name = config.model.model
        self.train_images = train.images.to(dist.device)
        self.test_images = test.images.to(dist.device)
        self.num_train = len(train)
        torch.manual_seed(config.seed)  # same initial weights and quantizer RNG seed on every rank
        self.model: Autoencoder = build_model(config.model).to(dist.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.train_model = dist.wrap(self.model)
        self.epoch_sums = torch.zeros(2, dtype=torch.float64)  # Σ loss·B, Σ recon·B over this epoch on this rank
        self.images_seen = 0  # by all ranks, for the throughput
        self.output: dict[str, Any] = {}
        self.batch_size = 0
        self.last_eval: tuple[int, dict[str, Any]] | None = None  # (step, test metrics) of the latest evaluation

    def fresh_start(self) -> None:
        torch.manual_seed(self.config.seed * 7919 + self.dist.rank)  # per-rank noise (VAE sampling) from here on

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        saved = checkpoint.config.get("model_config", {})
        ours = self.config.model.to_dict()
        # the backend may change on resume (e.g. continue on a GPU with triton); the model may not
        if {k: v for k, v in saved.items() if k != "backend"} != {k: v for k, v in ours.items() if k != "backend"}:
            raise InvalidArgumentError(f"--resume: the checkpoint in {checkpoint.path} was trained with {saved}, "
                                       f"not {ours}")

    def batches(self, epoch: int) -> list[torch.Tensor]:
        order = epoch_order(self.num_train, self.config.seed, epoch)
        return batch_indices(order, self.config.batch_size, self.dist.rank, self.dist.world)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.train_images[batch.to(self.dist.device)]
        self.batch_size = x.shape[0]
        self.output = self.train_model(x, return_stats=True)
        return self.output["loss"]

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)  # the step's time is measured

    def after_step(self, loss: float) -> None:
        b = self.batch_size
        self.images_seen += b * self.dist.world
        self.epoch_sums += torch.tensor([loss * b, float(self.output["recon_loss"].detach()) * b], dtype=torch.float64)

    def train_record(self, state: LoopState, loss: float) -> dict[str, Any]:
        record = {"loss": loss, "recon_mse": float(self.output["recon_loss"].detach()),
                  "aux_loss": float(self.output["aux_loss"].detach())}
        # per level: the batch's mse, codebook usage, perplexity and dead codes
        record.update({f"batch_{k}": v for k, v in (self.output.get("stats") or {}).items()})
        return record

    def progress_postfix(self, loss: float) -> dict[str, str]:
        return _stats_postfix(self.output.get("stats"), loss)

    def _evaluate(self, step: int, epoch: int) -> None:
        if self.dist.main:
            result = evaluate(self.model, self.test_images, self.config.eval_batch_size)
            self.last_eval = (step, result)
            self.metrics.write({"kind": "eval", "step": step, "epoch": epoch, **result})
        self.dist.barrier()

    def evaluate(self, state: LoopState) -> None:
        self._evaluate(state.step, state.epoch)

    def end_epoch(self, state: LoopState) -> None:
        sums = self.dist.sum_(self.epoch_sums.clone())
        seen = state.batch_in_epoch * self.config.batch_size * self.dist.world
        if self.dist.main:
            self.metrics.write({"kind": "epoch", "step": state.step, "epoch": state.epoch,
                                "train_loss": float(sums[0]) / seen, "train_recon_mse": float(sums[1]) / seen})
        self._evaluate(state.step, state.epoch)
        self.epoch_sums.zero_()

    def state(self) -> dict[str, Any]:
        return {"epoch_sums": self.dist.gather_objects(self.epoch_sums.clone()), "images_seen": self.images_seen}

    def load_state(self, extra: dict[str, Any]) -> None:
        saved_sums = extra["epoch_sums"]
        if len(saved_sums) == self.dist.world:
            self.epoch_sums = saved_sums[self.dist.rank].clone()
        else:  # another world size: keep the epoch totals right (rank 0 carries them); the order differs anyway
            self.epoch_sums = (torch.stack(saved_sums).sum(0) if self.dist.main
                               else torch.zeros(2, dtype=torch.float64))
        self.images_seen = int(extra.get("images_seen", 0))


def train_autoencoder(config: AutoencoderTrainConfig) -> dict[str, Any]:
    """Train as configured; returns the final metrics (final.json) on rank 0, ``{}`` on the other ranks.

    Raises :class:`~.interrupt.TrainingInterrupted` after saving a checkpoint when SIGINT/SIGTERM arrived, and
    :class:`~.loop.TrainingDivergedError` on a non-finite loss."""
    if config.threads:
        torch.set_num_threads(config.threads)
    dist = Distributed.from_environment(config.device)
    try:
        result = _train(config, dist)
    except BaseException:
        dist.close(failed=True)
        raise
    dist.close()
    return result


def _train(config: AutoencoderTrainConfig, dist: Distributed) -> dict[str, Any]:
    if not dist.main:
        dist.barrier()  # rank 0 loads (and with download=True fetches) first
    train_split, test_split = load_splits(config, download=config.download and dist.main)
    if dist.main:
        dist.barrier()
    out = config.run_dir
    run_config = {"model_config": config.model.to_dict(),
                  "train_config": {k: v for k, v in asdict(config).items() if k != "model"}, "world_size": dist.world}
    metrics = MetricsLog(out / "metrics.jsonl", enabled=dist.main)
    task = _AutoencoderTask(config, dist, train_split, test_split, metrics)
    loop = TrainingLoop(task, out=out, run_config=run_config, epochs=config.epochs, max_steps=config.max_steps,
                        log_every=config.log_every, eval_every=config.eval_every,
                        checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
                        resume=config.resume, progress=config.progress, metrics=metrics, dist=dist)
    loop.run()

    # DDP: every rank must hold the same weights and quantizer state (gradients all-reduced by DDP, EMA statistics
    # by the quantizer); a mismatch means a sync bug, so it is checked rather than assumed.
    digests = dist.gather_objects(state_digest(task.model))
    result: dict[str, Any] = {}
    if dist.main:
        s = loop.state
        if task.last_eval is not None and task.last_eval[0] == s.step:  # the epoch-end evaluation of this state
            final = task.last_eval[1]
        else:
            final = evaluate(task.model, task.test_images, config.eval_batch_size)
        result = {
            "model": config.model.model,
            "model_config": config.model.to_dict(),
            "steps": s.step,
            "epochs": s.epoch,
            "world_size": dist.world,
            "ranks_consistent": all(d == digests[0] for d in digests),
            "train_images": len(train_split),
            "test_images": len(test_split),
            "test": final,
            "train_images_per_s": task.images_seen / s.train_seconds if s.train_seconds > 0 else None,
            "device": str(dist.device),
            "backend": config.model.backend,
        }
        metrics.write({"kind": "final", "step": s.step, "epoch": s.epoch, **final})
        atomic_write_text(out / "final.json", json.dumps(result, indent=2))
    dist.barrier()  # ranks leave together: none tears its process group down while another still works
    return result
