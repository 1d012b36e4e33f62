"""Offline evaluation of generated MNIST digits with our own classifier (no Inception weights needed).

For a set of images ``[N, 1, 28, 28]`` and a trained :class:`~fastrq.models.classifier.MNISTClassifier`:

- ``confident_fraction``: fraction of images whose top class probability is ≥ 0.9;
- ``class_entropy``: entropy (nats) of the histogram of predicted classes (ln 10 ≈ 2.303 = perfectly balanced);
- ``classifier_fid``: Fréchet distance between Gaussians fitted to the classifier's 128-d penultimate features of
  the images and of the MNIST test set::

      FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})

  computed in float64 with symmetric eigendecompositions (tr((Σ₁Σ₂)^{1/2}) = tr((Σ₁^{1/2}Σ₂Σ₁^{1/2})^{1/2}), and the
  inner matrix is symmetric PSD, so no non-symmetric matrix square root is needed).

:func:`prior_report` runs it all for a trained prior: ≥ 1,000 unconditional samples, the same numbers for RQ-VAE
reconstructions of test images, per-depth test NLL (bits per code), the targets of issue 6 and sample grids;
written as ``prior_report.json`` / ``prior_report.md`` in the report folder (``fastrq reproduce`` calls it).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from fastrq.errors import InvalidArgumentError, NonFiniteError, ShapeError

__all__ = [
    "gaussian_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "confident_fraction",
    "class_histogram_entropy",
    "image_metrics",
    "prior_report",
    "parse_sweep",
    "recommended_temperature",
    "TARGETS",
]


def recommended_temperature(depth: int) -> list[float]:
    """Per-depth sampling temperatures chosen by the sweep in the README ("RQ-Transformer prior"): 1 at depth 0
    (the coarse code carries the sample's diversity), 0 (the most likely code) at the later, refining depths."""
    return [1.0] + [0.0] * (depth - 1)


# issue 6 targets (for a configuration that trains in ≤ 30 minutes on 2 CPU cores)
TARGETS = {"confident_fraction": 0.8, "class_entropy": 0.95 * math.log(10), "fid_ratio_to_reconstructions": 3.0}


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``features`` ``[N ≥ 2, D]``."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ShapeError(f"features must be [N ≥ 2, D], got {tuple(features.shape)}")
    x = features.double()
    if not torch.isfinite(x).all():
        raise NonFiniteError("features contain NaN or inf")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ShapeError(f"mismatched statistics: {tuple(mu1.shape)}, {tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}")
    root1 = _sqrt_psd(sigma1)
    inner = torch.linalg.eigvalsh((root1 @ sigma2 @ root1 + (root1 @ sigma2 @ root1).T) / 2)
    trace_cross = inner.clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_cross
    return float(value.clamp_min(0))


def frechet_distance_from_features(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


def confident_fraction(probs: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of rows of ``probs`` ``[N, C]`` whose largest probability is ≥ ``threshold``."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ShapeError(f"probs must be [N ≥ 1, C], got {tuple(probs.shape)}")
    return float((probs.max(-1).values >= threshold).double().mean())


def class_histogram_entropy(probs: torch.Tensor) -> float:
    """Entropy (nats) of the histogram of ``argmax`` classes of ``probs`` ``[N, C]``."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ShapeError(f"probs must be [N ≥ 1, C], got {tuple(probs.shape)}")
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).double()
    p = counts / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log()).sum()) + 0.0  # + 0.0: no "-0.0" for a single class


def image_metrics(classifier, images: torch.Tensor, reference_features: torch.Tensor) -> dict[str, Any]:
    """The three image metrics for ``images`` ``[N, 1, 28, 28]`` against reference features ``[M, 128]``, plus the
    class histogram."""
    from ..networks.classifier import predict

    out = predict(classifier, images)
    probs = out["probs"]
    return {
        "num_images": int(images.shape[0]),
        "confident_fraction": confident_fraction(probs),
        "class_entropy": class_histogram_entropy(probs),
        "classifier_fid": frechet_distance_from_features(out["features"], reference_features),
        "class_histogram": torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).tolist(),
    }


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
    from ..networks.classifier import load_classifier, predict
    from ..training.data import load_dataset
    from ..training.prior import encode_split, load_prior, load_rqvae
    from ..networks.rq_transformer import flatten_codes
    from .sampling import decode_images, generate_codes, save_grid, write_sample_grids

    if num_samples < 2:
        raise InvalidArgumentError(f"num_samples must be ≥ 2 (a covariance needs two points), got {num_samples}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_prior(prior)
    rqvae_path = rqvae or loaded.rqvae_path
    if not rqvae_path:
        raise InvalidArgumentError("the prior checkpoint names no RQ-VAE; pass rqvae=")
    autoencoder = load_rqvae(rqvae_path)
    judge = load_classifier(classifier)
    test = load_dataset(dataset, data_dir=data_dir, train=False, subset=test_subset or None)
    reference = predict(judge, test.images)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)

    def draw(setting: dict[str, Any], draw_seed: int) -> tuple[torch.Tensor, float]:
        """num_samples decoded images [N, 1, 28, 28] and the seconds spent sampling their codes."""
        tick = time.perf_counter()
        codes = generate_codes(loaded, num_samples, batch_size=batch_size, seed=draw_seed, **setting)
        seconds = time.perf_counter() - tick
        return decode_images(autoencoder, codes), seconds

    samples, sampling_seconds = draw(sampling, seed)
    reconstructions = decode_images(autoencoder, encode_split(autoencoder, test.images[:num_samples]))
    sample_metrics = image_metrics(judge, samples, reference["features"])
    recon_metrics = image_metrics(judge, reconstructions, reference["features"])
    test_codes = flatten_codes(encode_split(autoencoder, test.images))
    labels = test.labels if loaded.model.config.num_classes else None
    bits = loaded.model.nll_per_depth(test_codes, labels)

    grids = {"samples_first_64": save_grid(samples[:64], out_dir / "prior_samples.png", nrow=8)}
    if loaded.model.config.num_classes:
        grids.update(write_sample_grids(loaded, autoencoder, out_dir / "prior_grids", num=64, seed=seed, **sampling))
    grids["reconstructions_first_64"] = save_grid(reconstructions[:64], out_dir / "prior_reconstructions.png", nrow=8)

    fid_ratio = sample_metrics["classifier_fid"] / max(recon_metrics["classifier_fid"], 1e-12)
    sweep_rows = []
    for setting in sweep or []:
        setting = {"temperature": 1.0, "top_k": None, "top_p": None, **setting}
        metrics = image_metrics(judge, draw(setting, seed + 1)[0], reference["features"])
        metrics["fid_ratio_to_reconstructions"] = metrics["classifier_fid"] / max(recon_metrics["classifier_fid"], 1e-12)
        sweep_rows.append({"sampling": setting, **metrics, "targets_met": _targets_met(metrics, metrics["fid_ratio_to_reconstructions"])})
    report = {
        "num_samples": num_samples,
        "sampling": {k: v for k, v in sampling.items()},
        "time_sampling_s": sampling_seconds,
        "samples": sample_metrics,
        "reconstructions": recon_metrics,
        "test_set_classifier_accuracy": float((reference["probs"].argmax(-1) == test.labels).double().mean()),
        "fid_ratio_to_reconstructions": fid_ratio,
        "test_bits_per_code_by_depth": bits.tolist(),
        "test_bits_per_image": float(bits.sum() * test_codes.shape[1]),
        "targets": TARGETS,
        "targets_met": _targets_met(sample_metrics, fid_ratio),
        "sweep": sweep_rows,
        "prior": str(prior), "rqvae": str(rqvae_path), "classifier": str(classifier),
        "prior_training": _training_summary(prior),
        "grids": {k: str(v) for k, v in grids.items()},
    }
    (out_dir / "prior_report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "prior_report.md").write_text(_markdown(report))
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


def _markdown(report: dict[str, Any]) -> str:
    s, r, t, met = report["samples"], report["reconstructions"], report["targets"], report["targets_met"]
    ok = {True: "met", False: "NOT met"}
    lines = [
        "## RQ-Transformer prior: generative evaluation",
        "",
        f"{report['num_samples']} unconditional samples vs RQ-VAE reconstructions of the first {r['num_images']} test "
        f"images, judged by our MNIST classifier (test accuracy {report['test_set_classifier_accuracy']:.4f}); "
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


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m fastrq.models.generative_eval",
        description="evaluate a trained RQ-Transformer prior offline (optionally training the classifier and prior first)")
    p.add_argument("--out", default="reports/prior", help="report folder")
    p.add_argument("--prior", default="runs/rqtransformer", help="prior run folder")
    p.add_argument("--classifier", default="runs/classifier", help="classifier run folder")
    p.add_argument("--rqvae", default=None, help="RQ-VAE run (default: the prior's); needed with --train-missing")
    p.add_argument("--train-missing", action="store_true",
                   help="train the classifier and/or the prior first if their run folders hold no checkpoint")
    p.add_argument("--prior-minutes", type=float, default=25.0, help="training-time budget of a prior trained here")
    p.add_argument("--prior-args", default="", help="extra arguments for the prior trainer (quoted string)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--dataset", choices=("mnist", "synthetic"), default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--temperature", default="1.0")
    p.add_argument("--top-k", default="0")
    p.add_argument("--top-p", default="0")
    p.add_argument("--sweep", nargs="*", default=[], metavar="T[:K[:P]]",
                   help="further sampling settings to score, e.g. 0.9 0.8:50 1.0,0.6 (temperature[:top-k[:top-p]], each "
                        "one value or one per depth, comma-separated; 0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    return p


def parse_sweep(items: list[str]) -> list[dict[str, Any]]:
    """``temperature[:top_k[:top_p]]`` per item, each part one value or one per depth (comma-separated); 0 turns
    top-k / top-p off. ["0.9", "0.8:50", "1.0:0:0.9", "1.0,0.6"] → [{"temperature": 0.9},
    {"temperature": 0.8, "top_k": 50}, {"temperature": 1.0, "top_p": 0.9}, {"temperature": [1.0, 0.6]}]."""
    from .sampling import _off_if_zero, _per_depth_arg

    settings = []
    for item in items:
        parts = item.split(":")
        if not 1 <= len(parts) <= 3:
            raise InvalidArgumentError(f"--sweep item {item!r} is not temperature[:top_k[:top_p]]")
        try:
            setting = {"temperature": _per_depth_arg(parts[0], float)}
            for name, kind, text in (("top_k", int, parts[1:2]), ("top_p", float, parts[2:3])):
                value = _off_if_zero(_per_depth_arg(text[0], kind)) if text else None
                if value is not None and not (isinstance(value, list) and all(v is None for v in value)):
                    setting[name] = value
        except ValueError as exc:
            raise InvalidArgumentError(f"--sweep item {item!r}: {exc}") from None
        settings.append(setting)
    return settings


def main(argv: list[str] | None = None) -> int:
    """``python -m fastrq.models.generative_eval --rqvae runs/rqvae --train-missing``: one command from a trained
    RQ-VAE to the report (classifier and prior are trained only when their run folders have no checkpoint)."""
    import shlex
    import sys

    from fastrq.errors import FastRQError

    from ..networks import classifier as classifier_module
    from ..training import prior as prior_module
    from ..training.checkpoint import latest_checkpoint
    from .sampling import _off_if_zero, _per_depth_arg

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common = ["--dataset", args.dataset, "--no-progress"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    if args.threads:
        common += ["--threads", str(args.threads)]
    try:
        if args.train_missing and latest_checkpoint(Path(args.classifier) / "checkpoints") is None:
            if classifier_module.main(["--out", args.classifier, *common]) != 0:
                return 2
        if args.train_missing and latest_checkpoint(Path(args.prior) / "checkpoints") is None:
            if not args.rqvae:
                raise InvalidArgumentError("--train-missing needs --rqvae to train the prior")
            code = prior_module.main(["--rqvae", args.rqvae, "--out", args.prior, "--max-minutes", str(args.prior_minutes),
                                      *common, *shlex.split(args.prior_args)])
            if code != 0:
                return code
        report = prior_report(
            args.out, prior=args.prior, classifier=args.classifier, rqvae=args.rqvae, num_samples=args.num_samples,
            dataset=args.dataset, data_dir=args.data_dir, temperature=_per_depth_arg(args.temperature, float),
            top_k=_off_if_zero(_per_depth_arg(args.top_k, int)), top_p=_off_if_zero(_per_depth_arg(args.top_p, float)),
            seed=args.seed, sweep=parse_sweep(args.sweep),
        )
    except (FastRQError, ValueError) as exc:
        print(f"generative_eval: {exc}", file=sys.stderr)
        return 2
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
