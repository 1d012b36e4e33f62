"""Train the RQ-Transformer prior on the codes of a trained RQ-VAE: :func:`train_prior` on a
:class:`PriorTrainConfig` (``fastrq train --model rqtransformer --rqvae runs/rqvae ...`` builds one from its flags).

1. The RQ-VAE checkpoint (a run folder, its ``checkpoints/`` or one checkpoint folder) is loaded and the whole
   training split (and the test split) is encoded once: codes ``[N, h, w, L]`` → ``[N, h·w, L]``.
2. :class:`~fastrq.models.networks.rq_transformer.RQTransformer` is trained with AdamW, linear warm-up then cosine
   decay, cross-entropy over every code, in :class:`~.loop.TrainingLoop` (exact resume, stop requests, NaN guard).
3. Outputs in ``out`` (default ``runs/rqtransformer``): ``run.json``, ``metrics.jsonl`` (train loss, per-depth test
   NLL in bits per code), ``checkpoints/`` (atomic, see :mod:`.checkpoint`) and ``final.json``. (``fastrq train``
   then draws ``samples.png``, + ``samples_by_class.png`` for a class-conditional prior: see
   :func:`fastrq.models.study.sampling.write_run_samples`.)

``max_minutes`` stops training (with a checkpoint) once that much training time has passed: the CPU-budget knob.
The defaults (dim 128, 4 spatial + 2 depth layers, 4 heads, no dropout, batch 128, AdamW lr 2e-3, 5 epochs) with
``max_minutes=29`` are the configuration measured to meet issue 6's sample-quality targets on 2 CPU cores
(README, "RQ-Transformer prior"); sample it with temperature 1 at depth 0 and 0 at the later depths.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import InvalidArgumentError

from ..networks.autoencoders import encode_images
from ..networks.rq_transformer import PriorConfig, RQTransformer, flatten_codes
from .checkpoint import Checkpoint, atomic_write_text
from .data import batch_indices, epoch_order, load_splits
from .loaders import load_rqvae
from .loop import LoopState, TrainingLoop, TrainingTask
from .metrics_log import MetricsLog

__all__ = ["PriorTrainConfig", "train_prior"]


@dataclass
class PriorTrainConfig:
    """How to train the prior. The defaults are ``fastrq train --model rqtransformer``'s.

    ``rqvae``: the trained RQ-VAE (run folder, checkpoints/ or a checkpoint folder); ``out``: run folder; data:
    ``dataset``, ``data_dir``, ``train_subset`` / ``test_subset`` (first N images, 0: all; the test split gives the
    NLL); network: ``dim``, ``heads``, ``spatial_layers``, ``depth_layers``, ``dropout``, ``class_cond`` (condition on
    the label), ``class_dropout`` (label → "no class" probability in training); training: ``epochs`` (also sets the
    LR schedule's length), ``max_steps`` (0: none), ``max_minutes`` (training time, 0: none), ``batch_size``,
    AdamW ``lr`` / ``weight_decay``, ``warmup_steps``, ``seed``, ``threads`` (0: leave as is), ``log_every``,
    ``checkpoint_every`` (steps; also at each epoch end), ``keep_checkpoints``, ``resume``, ``progress``."""

    rqvae: str
    out: str = "runs/rqtransformer"
    dataset: str = "mnist"
    data_dir: str | None = None
    train_subset: int = 0
    test_subset: int = 0
    dim: int = 128
    heads: int = 4
    spatial_layers: int = 4
    depth_layers: int = 2
    dropout: float = 0.0
    class_cond: bool = False
    class_dropout: float = 0.1
    epochs: int = 5
    max_steps: int = 0
    max_minutes: float = 0.0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    seed: int = 0
    threads: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = False
    progress: bool = True


def _schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10 % of the peak
    return factor


class _PriorTask(TrainingTask):
    """AdamW (β = 0.9, 0.95) with gradient clipping at 1 and the warm-up + cosine schedule; evaluation = per-depth
    test NLL, at each epoch end and at the end (an evaluation at a step already evaluated is not repeated)."""

    name = "prior"

    def __init__(self, config: PriorTrainConfig, prior_config: PriorConfig, train_codes: torch.Tensor,
                 labels: torch.Tensor | None, test_codes: torch.Tensor, test_labels: torch.Tensor | None,
                 total_steps: int, metrics: MetricsLog):
        self.config, self.prior_config, self.metrics = config, prior_config, metrics
        self.train_codes, self.labels, self.test_codes, self.test_labels = train_codes, labels, test_codes, test_labels
        self.positions = prior_config.num_positions
        torch.manual_seed(config.seed)
        self.model = RQTransformer(prior_config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(0.9, 0.95))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config.warmup_steps, total_steps))
        self.last_eval: dict[str, Any] = {}

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        if checkpoint.config.get("prior_config") != self.prior_config.to_dict():
            raise InvalidArgumentError(f"--resume: {checkpoint.path} was trained with "
                                       f"{checkpoint.config.get('prior_config')}, not {self.prior_config.to_dict()}")

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return batch_indices(epoch_order(len(self.train_codes), self.config.seed, epoch), self.config.batch_size)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.loss(self.train_codes[batch], None if self.labels is None else self.labels[batch])

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()

    def train_record(self, state: LoopState, loss: float) -> dict[str, Any]:
        return {"loss": loss, "lr": self.scheduler.get_last_lr()[0], "time_train_s": state.train_seconds}

    def progress_postfix(self, loss: float) -> dict[str, str]:
        return {"loss": f"{loss:.3f}"}

    def evaluation(self, step: int, epochs_completed: int) -> dict[str, Any]:
        """The "eval" record at ``step`` (written once per step)."""
        if self.last_eval.get("step") != step:
            bits = self.model.nll_per_depth(self.test_codes, self.test_labels)
            self.last_eval = {"kind": "eval", "step": step, "epoch": epochs_completed,
                              "test_bits_per_code": bits.tolist(),
                              "test_bits_per_image": float(bits.sum() * self.positions)}
            self.metrics.write(self.last_eval)
        return self.last_eval

    def end_epoch(self, state: LoopState) -> None:
        self.evaluation(state.step, state.epoch + 1)

    def state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state(self, extra: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(extra["scheduler"])


def train_prior(config: PriorTrainConfig) -> dict[str, Any]:
    """Train as configured; returns the final metrics (final.json).

    Raises :class:`~.interrupt.TrainingInterrupted` after saving a checkpoint when SIGINT/SIGTERM arrived, and
    :class:`~.loop.TrainingDivergedError` on a non-finite loss."""
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    rqvae = load_rqvae(config.rqvae)
    train_split, test_split = load_splits(config)
    tick = time.perf_counter()
    train_image_codes = encode_images(rqvae, train_split.images)
    test_codes = flatten_codes(encode_images(rqvae, test_split.images))
    encode_seconds = time.perf_counter() - tick
    _, height, width, depth = train_image_codes.shape
    train_codes = flatten_codes(train_image_codes)
    prior_config = PriorConfig(
        codebook_size=int(rqvae.config.codebook_size), depth=depth, num_positions=height * width, dim=config.dim,
        heads=config.heads, spatial_layers=config.spatial_layers, depth_layers=config.depth_layers,
        dropout=config.dropout, num_classes=10 if config.class_cond else 0, class_dropout=config.class_dropout,
    )
    run_config = {"model": "rqtransformer", "prior_config": prior_config.to_dict(), "height": height, "width": width,
                  "rqvae": str(Path(config.rqvae).resolve()), "train_config": asdict(config)}
    epoch_steps = config.epochs * len(batch_indices(torch.arange(len(train_codes)), config.batch_size))
    max_steps = min(config.max_steps, epoch_steps) if config.max_steps else 0
    metrics = MetricsLog(out / "metrics.jsonl")
    task = _PriorTask(config, prior_config, train_codes, train_split.labels if config.class_cond else None,
                      test_codes, test_split.labels if config.class_cond else None, max_steps or epoch_steps, metrics)
    loop = TrainingLoop(task, out=out, run_config=run_config, epochs=config.epochs, max_steps=max_steps,
                        max_minutes=config.max_minutes, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
                        resume=config.resume, progress=config.progress, metrics=metrics)
    stopped_by = loop.run()
    s = loop.state
    final = task.evaluation(s.step, s.epoch)
    result = {
        "steps": s.step, "epochs_completed": s.epoch, "stopped_by": stopped_by, "time_train_s": s.train_seconds,
        "time_encode_s": encode_seconds, "train_images": len(train_codes), "test_images": len(test_codes),
        "test_bits_per_code": final["test_bits_per_code"], "test_bits_per_image": final["test_bits_per_image"],
        "prior_config": prior_config.to_dict(),
    }
    metrics.write({"kind": "final", "step": s.step, **{k: v for k, v in result.items() if k != "prior_config"}})
    atomic_write_text(out / "final.json", json.dumps(result, indent=2))
    return result
