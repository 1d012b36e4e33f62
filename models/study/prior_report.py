"""The generative evaluation of a trained RQ-Transformer prior: :func:`prior_report` (``fastrq generative-eval``;
``fastrq reproduce`` calls it for its prior section).

≥ 1,000 unconditional samples and RQ-VAE reconstructions of as many test images, both judged by the classifier
(:mod:`.generative_metrics`: confident fraction, class-histogram entropy, classifier-feature FID); the per-depth test
NLL (bits per code); the targets of issue 6; an optional sweep of sampling settings scored on fresh draws; sample
grids. Written as ``prior_report.json`` and ``prior_report.md`` in the report folder.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import InvalidArgumentError

from ..networks.autoencoders import RQVAE, decode_images, encode_images
from ..networks.classifier import MNISTClassifier, predict
from ..networks.rq_transformer import flatten_codes
from ..training.data import load_dataset
from ..training.loaders import LoadedPrior, load_classifier, load_prior, load_rqvae
from .generative_metrics import image_metrics
from .sampling import generate_codes, save_grid, write_sample_grids

__all__ = ["prior_report", "render_markdown", "TARGETS"]

# issue 6 targets (for a configuration that trains in ≤ 30 minutes on 2 CPU cores)
TARGETS = {"confident_fraction": 0.8, "class_entropy": 0.95 * math.log(10), "fid_ratio_to_reconstructions": 3.0}


class _Judged:
    """Samples of one prior, decoded by its RQ-VAE and scored by the classifier against the test set's features."""

    def __init__(self, prior: LoadedPrior, rqvae: RQVAE, judge: MNISTClassifier, reference_features: torch.Tensor,
                 num_samples: int, batch_size: int):
        self.prior, self.rqvae, self.judge, self.reference = prior, rqvae, judge, reference_features
        self.num_samples, self.batch_size = num_samples, batch_size
        self.reconstruction_fid = math.nan  # set once the reconstructions are scored

    def draw(self, setting: dict[str, Any], seed: int) -> tuple[torch.Tensor, float]:
        """``num_samples`` decoded images [N, 1, 28, 28] and the seconds spent sampling their codes."""
        tick = time.perf_counter()
        codes = generate_codes(self.prior, self.num_samples, batch_size=self.batch_size, seed=seed, **setting)
        seconds = time.perf_counter() - tick
        return decode_images(self.rqvae, codes), seconds

    def score(self, images: torch.Tensor) -> dict[str, Any]:
        return image_metrics(self.judge, images, self.reference)

    def fid_ratio(self, metrics: dict[str, Any]) -> float:
        """Classifier FID of ``metrics`` over that of the reconstructions."""
        return metrics["classifier_fid"] / max(self.reconstruction_fid, 1e-12)

    def sweep_row(self, setting: dict[str, Any], seed: int) -> dict[str, Any]:
        setting = {"temperature": 1.0, "top_k": None, "top_p": None, **setting}
        metrics = self.score(self.draw(setting, seed)[0])
        metrics["fid_ratio_to_reconstructions"] = self.fid_ratio(metrics)
        return {"sampling": setting, **metrics, "targets_met": _targets_met(metrics, self.fid_ratio(metrics))}


def prior_report(out_dir: str | Path, *, prior: str | Path, classifier: str | Path, rqvae: str | Path | None = None,
                 num_samples: int = 1000, dataset: str = "mnist", data_dir: str | None = None, test_subset: int = 0,
                 temperature: Any = 1.0, top_k: Any = None, top_p: Any = None, seed: int = 0,
                 batch_size: int = 250, sweep: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluate a trained prior and write ``prior_report.json``, ``prior_report.md`` and sample grids into ``out_dir``.

    ``prior``, ``classifier``, ``rqvae``: run folders or checkpoints (``rqvae`` defaults to the one the prior was
    trained on). Samples are unconditional (a class-conditional prior is sampled with its "no class" token, and also
    gets ``samples_by_class.png``). Reconstructions: the first ``num_samples`` test images through the RQ-VAE.
    ``sweep``: further sampling settings (dicts of temperature / top_k / top_p), each scored on ``num_samples`` samples
    drawn with seed ``seed + 1``, so that a setting chosen from the sweep is then reported on fresh draws (the headline
    numbers use ``seed``). Returns the report dict (also the JSON file's content)."""
    if num_samples < 2:
        raise InvalidArgumentError(f"num_samples must be ≥ 2 (a covariance needs two points), got {num_samples}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_prior(prior)
    rqvae_path = rqvae or loaded.rqvae_path
    if not rqvae_path:
        raise InvalidArgumentError("the prior checkpoint names no RQ-VAE; pass rqvae=")
    autoencoder, judge = load_rqvae(rqvae_path), load_classifier(classifier)
    test = load_dataset(dataset, data_dir=data_dir, train=False, subset=test_subset or None)
    reference = predict(judge, test.images)
    judged = _Judged(loaded, autoencoder, judge, reference["features"], num_samples, batch_size)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)

    samples, sampling_seconds = judged.draw(sampling, seed)
    reconstructions = decode_images(autoencoder, encode_images(autoencoder, test.images[:num_samples]))
    sample_metrics, recon_metrics = judged.score(samples), judged.score(reconstructions)
    judged.reconstruction_fid = recon_metrics["classifier_fid"]
    test_codes = flatten_codes(encode_images(autoencoder, test.images))
    bits = loaded.model.nll_per_depth(test_codes, test.labels if loaded.model.config.num_classes else None)

    grids = {"samples_first_64": save_grid(samples[:64], out_dir / "prior_samples.png", nrow=8)}
    if loaded.model.config.num_classes:
        grids.update(write_sample_grids(loaded, autoencoder, out_dir / "prior_grids", num=64, seed=seed, **sampling))
    grids["reconstructions_first_64"] = save_grid(reconstructions[:64], out_dir / "prior_reconstructions.png", nrow=8)
    report = {
        "num_samples": num_samples,
        "dataset": test.name,
        "sampling": dict(sampling),
        "time_sampling_s": sampling_seconds,
        "samples": sample_metrics,
        "reconstructions": recon_metrics,
        "test_set_classifier_accuracy": float((reference["probs"].argmax(-1) == test.labels).double().mean()),
        "fid_ratio_to_reconstructions": judged.fid_ratio(sample_metrics),
        "test_bits_per_code_by_depth": bits.tolist(),
        "test_bits_per_image": float(bits.sum() * test_codes.shape[1]),
        "targets": TARGETS,
        "targets_met": _targets_met(sample_metrics, judged.fid_ratio(sample_metrics)),
        "sweep": [judged.sweep_row(setting, seed + 1) for setting in sweep or []],
        "prior": str(prior), "rqvae": str(rqvae_path), "classifier": str(classifier),
        "prior_training": _training_summary(prior),
        "grids": {k: str(v) for k, v in grids.items()},
    }
    (out_dir / "prior_report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "prior_report.md").write_text(render_markdown(report))
    return report


def _targets_met(metrics: dict[str, Any], fid_ratio: float) -> dict[str, bool]:
    return {
        "confident_fraction": metrics["confident_fraction"] >= TARGETS["confident_fraction"],
        "class_entropy": metrics["class_entropy"] >= TARGETS["class_entropy"],
        "fid_ratio_to_reconstructions": fid_ratio <= TARGETS["fid_ratio_to_reconstructions"],
    }


def _training_summary(prior: str | Path) -> dict[str, Any] | None:
    final = Path(prior) / "final.json"
    if final.is_file():
        data = json.loads(final.read_text())
        return {k: data.get(k) for k in ("steps", "epochs_completed", "stopped_by", "time_train_s", "prior_config")}
    return None


def render_markdown(report: dict[str, Any]) -> str:
    """prior_report.md from the report dict."""
    s, r, t, met = report["samples"], report["reconstructions"], report["targets"], report["targets_met"]
    ok = {True: "met", False: "NOT met"}
    lines = [
        "## RQ-Transformer prior: generative evaluation",
        "",
        f"{report['num_samples']} unconditional samples vs RQ-VAE reconstructions of the first {r['num_images']} test "
        f"images, judged by our classifier trained on {report.get('dataset') or 'MNIST'} (test accuracy "
        f"{report['test_set_classifier_accuracy']:.4f}); "
        "FID in the classifier's 128-d feature space against the whole test set.",
        "",
        "| | confident (p ≥ 0.9) | class-histogram entropy (nats) | classifier FID |",
        "|---|---:|---:|---:|",
        f"| samples | {s['confident_fraction']:.3f} | {s['class_entropy']:.3f} | {s['classifier_fid']:.3f} |",
        f"| reconstructions | {r['confident_fraction']:.3f} | {r['class_entropy']:.3f} | {r['classifier_fid']:.3f} |",
        f"| target (samples) | ≥ {t['confident_fraction']:.2f} ({ok[met['confident_fraction']]}) | "
        f"≥ {t['class_entropy']:.3f} ({ok[met['class_entropy']]}) | ≤ {t['fid_ratio_to_reconstructions']:.0f}× reconstructions "
        f"= {t['fid_ratio_to_reconstructions'] * r['classifier_fid']:.3f} ({ok[met['fid_ratio_to_reconstructions']]}) |",
        "",
        "Per-depth test NLL (bits per code): "
        + ", ".join(f"depth {i}: {b:.3f}" for i, b in enumerate(report["test_bits_per_code_by_depth"]))
        + f"; {report['test_bits_per_image']:.1f} bits per image.",
        "",
        f"Sample class histogram: {s['class_histogram']}. Sampling settings: {report['sampling']}; "
        f"sampling time {report['time_sampling_s']:.1f} s.",
    ]
    if report.get("sweep"):
        lines += ["", f"Sampling sweep ({report['num_samples']} samples each, drawn with the next seed; every setting tried "
                      "is listed):", "",
                  "| temperature | top-k | top-p | confident | entropy | classifier FID | FID / recon | all targets |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for row in report["sweep"]:
            sm = row["sampling"]
            lines.append(f"| {sm['temperature']} | {sm['top_k'] or '–'} | {sm['top_p'] or '–'} | "
                         f"{row['confident_fraction']:.3f} | {row['class_entropy']:.3f} | {row['classifier_fid']:.3f} | "
                         f"{row['fid_ratio_to_reconstructions']:.2f} | {'yes' if all(row['targets_met'].values()) else 'no'} |")
    if report.get("prior_training"):
        p = report["prior_training"]
        lines += ["", f"Prior training: {p.get('steps')} steps, {p.get('epochs_completed')} epochs, "
                      f"{(p.get('time_train_s') or 0) / 60:.1f} min, stopped by {p.get('stopped_by')}."]
    lines += ["", *[f"![{name}]({Path(path).name if Path(path).parent.name != 'prior_grids' else 'prior_grids/' + Path(path).name})"
                   for name, path in report["grids"].items()], ""]
    return "\n".join(lines)
