"""The ``fastrq`` command line: each subcommand's options, the config dataclasses built from them, the exit codes.

    fastrq info                         versions and usable backends (fastrq.info)
    fastrq train --model M ...          train a model; M = vae, vqvae, rqvae (fastrq.models.training.autoencoder),
                                        rqtransformer (.prior) or classifier (.classifier)
    fastrq reproduce --preset quick     the RQ-VAE vs VQ-VAE study, report folder (fastrq.models.study.reproduce)
    fastrq sample ...                   sample from a trained prior (fastrq.models.study.sampling)
    fastrq generative-eval ...          evaluate a trained prior offline (fastrq.models.study.prior_report)

``python -m fastrq.models.train`` (also under ``torchrun``) is ``fastrq train`` and ``python -m
fastrq.models.generative_eval`` is ``fastrq generative-eval``. The trainers and the study take config dataclasses;
this module is the only place that parses their options. A subcommand imports its modules only when it runs, so
``fastrq info`` imports neither the models nor torchvision.

Exit status: 0 done; 1 ``fastrq reproduce`` wrote its report but a section of it failed; 2 bad input or another
fastrq error (the message says which); 130 interrupted by SIGINT/SIGTERM (a checkpoint was saved first; the same
command with ``--resume``, or ``fastrq reproduce`` again, continues).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "SUBCOMMANDS", "parse_sweep", "per_depth_value", "EXIT_OK", "EXIT_SECTION_FAILED", "EXIT_ERROR",
           "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_SECTION_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention

OTHER_TRAINED = ("rqtransformer", "classifier")  # fastrq train --model choices beside the autoencoders


def _from_args(config_class: type, args: argparse.Namespace, **values: Any):
    """``config_class`` with every field that ``args`` has (same name) and ``values``; ``progress`` from
    ``--no-progress``."""
    known = {f.name for f in dataclasses.fields(config_class)}
    fields = {k: v for k, v in vars(args).items() if k in known}
    if "progress" in known and hasattr(args, "no_progress"):
        fields["progress"] = not args.no_progress
    return config_class(**{**fields, **values})


def _data_arguments(p: argparse.ArgumentParser, *, download: bool = False) -> argparse._ArgumentGroup:
    from fastrq.models.training.data import DATASETS, default_data_dir

    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="mnist",
                   help="an MNIST-format set (torchvision layout) or 'synthetic': small generated digit-like images "
                        "(tests, no files needed)")
    g.add_argument("--data-dir", default=None,
                   help=f"folder holding MNIST/raw (default: $FASTRQ_DATA or {default_data_dir()})")
    if download:
        g.add_argument("--download", action="store_true", help="download the data set if it is missing (needs network)")
    g.add_argument("--train-subset", type=int, default=0, help="use the first N training images (0: all)")
    g.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test images (0: all)")
    return g


# ------------------------------------------------------------------------------------------------ fastrq train


def _autoencoder_parser() -> argparse.ArgumentParser:
    from fastrq.models.networks.autoencoders import MODEL_NAMES
    from fastrq.models.networks.autoencoders import ModelConfig as M
    from fastrq.models.training.autoencoder import AutoencoderTrainConfig as C

    p = argparse.ArgumentParser(prog="fastrq train", description="Train a VAE / VQ-VAE / RQ-VAE on MNIST with fastrq "
                                "quantizers (or, with --model rqtransformer / classifier, the prior / the judge CNN).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=(*MODEL_NAMES, *OTHER_TRAINED), default="rqvae")
    p.add_argument("--out", default=None, help="run folder (default: runs/<model>)")
    _data_arguments(p, download=True)
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=M.latent_dim, help="codebook vector size D (latent channels)")
    g.add_argument("--hidden", type=int, nargs=2, default=M.hidden, metavar=("H1", "H2"))
    g.add_argument("--codebook-size", type=int, default=None, help="codes per level (default: 256 vqvae, 128 rqvae)")
    g.add_argument("--num-quantizers", type=int, default=2, help="RQ levels (rqvae)")
    g.add_argument("--learned-codebook", action="store_true", help="gradient-learned codebooks instead of EMA")
    g.add_argument("--decay", type=float, default=M.decay, help="EMA decay")
    g.add_argument("--beta", type=float, default=M.commitment_weight, help="commitment weight β")
    g.add_argument("--kmeans-init", action="store_true")
    g.add_argument("--dead-code-threshold", type=float, default=M.dead_code_threshold)
    g.add_argument("--kl-weight", type=float, default=M.kl_weight,
                   help="VAE KL weight on the per-pixel scale (= 2σ² of a Gaussian decoder)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=C.epochs)
    g.add_argument("--max-steps", type=int, default=C.max_steps, help="stop after this many optimizer steps (0: no limit)")
    g.add_argument("--batch-size", type=int, default=C.batch_size, help="per process")
    g.add_argument("--lr", type=float, default=C.lr)
    g.add_argument("--seed", type=int, default=C.seed)
    g = p.add_argument_group("execution")
    g.add_argument("--device", default=C.device, help="auto, cpu, cuda, cuda:N")
    g.add_argument("--backend", default=M.backend, help="fastrq backend: auto, torch, triton, reference")
    g.add_argument("--threads", type=int, default=C.threads, help="torch CPU threads (0: leave torch's default)")
    g.add_argument("--eval-every", type=int, default=C.eval_every, help="also evaluate every N steps (0: at epoch ends only)")
    g.add_argument("--eval-batch-size", type=int, default=C.eval_batch_size)
    g.add_argument("--log-every", type=int, default=C.log_every, help="train metrics record every N steps")
    g.add_argument("--checkpoint-every", type=int, default=C.checkpoint_every,
                   help="checkpoint every N steps (and at epoch ends)")
    g.add_argument("--keep-checkpoints", type=int, default=C.keep_checkpoints)
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def _train_autoencoder(argv: list[str]) -> int:
    from fastrq.models.networks.autoencoders import ModelConfig
    from fastrq.models.study.plots import plot_trained_run
    from fastrq.models.training import autoencoder

    args = _autoencoder_parser().parse_args(argv)
    model = ModelConfig.for_model(
        args.model, codebook_size=args.codebook_size, num_quantizers=args.num_quantizers, hidden=tuple(args.hidden),
        latent_dim=args.latent_dim, ema=not args.learned_codebook, decay=args.decay, commitment_weight=args.beta,
        kmeans_init=args.kmeans_init, dead_code_threshold=args.dead_code_threshold, kl_weight=args.kl_weight,
        backend=args.backend)
    config = _from_args(autoencoder.AutoencoderTrainConfig, args, model=model)
    result = autoencoder.train_autoencoder(config)
    if not result:  # a DDP rank other than 0
        return EXIT_OK
    if not args.no_plots:
        plot_trained_run(config)
    test = result["test"]
    line = f"final test: recon MSE {test['recon_mse']:.5f}, PSNR {test['psnr']:.2f} dB"
    if "perplexity" in test:
        line += ", usage " + "/".join(f"{u:.2f}" for u in test["usage"])
        line += ", perplexity " + "/".join(f"{p:.1f}" for p in test["perplexity"])
    if result["train_images_per_s"]:
        line += f"; {result['train_images_per_s']:.0f} images/s"
    print(line)
    print(f"run folder: {config.run_dir.resolve()}")
    return EXIT_OK


def _prior_parser() -> argparse.ArgumentParser:
    from fastrq.models.training.prior import PriorTrainConfig as C

    p = argparse.ArgumentParser(prog="fastrq train --model rqtransformer", description="train the RQ-Transformer prior")
    p.add_argument("--model", choices=("rqtransformer",), default="rqtransformer")
    p.add_argument("--rqvae", required=True, help="trained RQ-VAE: run folder, checkpoints/ or a checkpoint folder")
    p.add_argument("--out", default=C.out, help="run folder")
    _data_arguments(p)
    m = p.add_argument_group("model")
    m.add_argument("--dim", type=int, default=C.dim)
    m.add_argument("--heads", type=int, default=C.heads)
    m.add_argument("--spatial-layers", type=int, default=C.spatial_layers)
    m.add_argument("--depth-layers", type=int, default=C.depth_layers)
    m.add_argument("--dropout", type=float, default=C.dropout)
    m.add_argument("--class-cond", action="store_true", help="condition on the MNIST label")
    m.add_argument("--class-dropout", type=float, default=C.class_dropout, help="label → 'no class' probability in training")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=C.epochs)
    t.add_argument("--max-steps", type=int, default=C.max_steps, help="stop after this many steps (0 = no limit)")
    t.add_argument("--max-minutes", type=float, default=C.max_minutes,
                   help="stop after this much training time (0 = no limit)")
    t.add_argument("--batch-size", type=int, default=C.batch_size)
    t.add_argument("--lr", type=float, default=C.lr)
    t.add_argument("--weight-decay", type=float, default=C.weight_decay)
    t.add_argument("--warmup-steps", type=int, default=C.warmup_steps)
    t.add_argument("--seed", type=int, default=C.seed)
    t.add_argument("--threads", type=int, default=C.threads, help="torch threads (0 = leave as is)")
    t.add_argument("--log-every", type=int, default=C.log_every)
    t.add_argument("--checkpoint-every", type=int, default=C.checkpoint_every,
                   help="steps between checkpoints (and at each epoch end)")
    t.add_argument("--keep-checkpoints", type=int, default=C.keep_checkpoints)
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--grid-samples", type=int, default=64, help="samples drawn into samples.png at the end (0 = none)")
    return p


def _train_prior(argv: list[str]) -> int:
    from fastrq.models.study.sampling import write_run_samples
    from fastrq.models.training import prior

    args = _prior_parser().parse_args(argv)
    result = prior.train_prior(_from_args(prior.PriorTrainConfig, args))
    if args.grid_samples > 0:
        write_run_samples(args.out, num=args.grid_samples, seed=args.seed)
    print(json.dumps({k: v for k, v in result.items() if k != "prior_config"}, indent=2))
    return EXIT_OK


def _classifier_parser() -> argparse.ArgumentParser:
    from fastrq.models.training.classifier import ClassifierTrainConfig as C

    p = argparse.ArgumentParser(prog="fastrq train --model classifier", description="train the MNIST judge CNN")
    p.add_argument("--model", choices=("classifier",), default="classifier")
    p.add_argument("--out", default=C.out, help="run folder")
    _data_arguments(p)
    p.add_argument("--epochs", type=int, default=C.epochs)
    p.add_argument("--batch-size", type=int, default=C.batch_size)
    p.add_argument("--lr", type=float, default=C.lr)
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--threads", type=int, default=C.threads, help="torch threads (0 = leave as is)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")
    return p


def _train_classifier(argv: list[str]) -> int:
    from fastrq.models.training import classifier

    args = _classifier_parser().parse_args(argv)
    result = classifier.train_classifier(_from_args(classifier.ClassifierTrainConfig, args))
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _train(argv: list[str]) -> int:
    """``--model`` picks the trainer, and with it the other options."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    model = peek.parse_known_args(argv)[0].model
    if model == "rqtransformer":
        return _train_prior(argv)
    if model == "classifier":
        return _train_classifier(argv)
    return _train_autoencoder(argv)


# ------------------------------------------------------------------------------------------------ fastrq reproduce


def _reproduce_parser() -> argparse.ArgumentParser:
    from fastrq.models.study.experiments import EXPERIMENTS, PRESETS
    from fastrq.models.study.reproduce import ReproduceConfig as C
    from fastrq.models.training.data import DATASETS

    p = argparse.ArgumentParser(prog="fastrq reproduce", description="The RQ-VAE vs VQ-VAE study on MNIST, as a report "
                                "folder (report.md, results.json, figures/, runs/).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default=C.preset)
    p.add_argument("--out", default=None, help="report folder (default: reports/<preset>)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $FASTRQ_DATA or ./data)")
    p.add_argument("--dataset", choices=DATASETS, default=C.dataset)
    p.add_argument("--download", action="store_true")
    p.add_argument("--threads", type=int, default=C.threads, help="torch CPU threads")
    p.add_argument("--device", default=C.device)
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--only", nargs="*", choices=tuple(EXPERIMENTS), help="run only these experiments")
    p.add_argument("--epochs", type=int, default=C.epochs, help="override the preset's epochs")
    p.add_argument("--train-subset", type=int, default=C.train_subset, help="override the preset's training subset (0: all)")
    p.add_argument("--no-prior", action="store_true", help="skip the RQ-Transformer prior section")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    p.add_argument("--throughput-steps", type=int, default=C.throughput_steps, help="override the preset's steps per timing round")
    p.add_argument("--throughput-rounds", type=int, default=C.throughput_rounds, help="override the preset's timing rounds")
    p.add_argument("--no-progress", action="store_true")
    return p


def _reproduce(argv: list[str]) -> int:
    from fastrq.models.study import reproduce

    args = _reproduce_parser().parse_args(argv)
    config = _from_args(reproduce.ReproduceConfig, args, only=tuple(args.only) if args.only else None,
                        prior=not args.no_prior, throughput=not args.no_throughput)
    report = reproduce.reproduce(config)
    for item in report["findings"]:
        verdict = {True: "reproduced", False: "NOT reproduced", None: "not decided automatically"}[item["reproduced"]]
        print(f"{item['finding']}: {verdict}")
    print(f"report: {(config.report_dir / 'report.md').resolve()} (took {report['time_wall_s'] / 60:.1f} min)")
    for item in report["failures"]:
        print(f"fastrq reproduce: section {item['section']} failed: {item['error']}", file=sys.stderr)
    return EXIT_SECTION_FAILED if report["failures"] else EXIT_OK


# ------------------------------------------------------------------------------------------------ sampling


def per_depth_value(text: str, kind: Callable[[str], Any]):
    """"1.0" → 1.0; "1.0,0.8" → [1.0, 0.8] (one value per depth)."""
    values = [kind(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def _off_if_zero(value):
    """0 means "off" for top-k / top-p: None (per depth for a list)."""
    if isinstance(value, list):
        return [v if v else None for v in value]
    return value if value else None


def _sampling_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(temperature=per_depth_value(args.temperature, float),
                top_k=_off_if_zero(per_depth_value(args.top_k, int)),
                top_p=_off_if_zero(per_depth_value(args.top_p, float)))


def parse_sweep(items: list[str]) -> list[dict[str, Any]]:
    """``temperature[:top_k[:top_p]]`` per item, each part one value or one per depth (comma-separated); 0 turns
    top-k / top-p off. ["0.9", "0.8:50", "1.0:0:0.9", "1.0,0.6"] → [{"temperature": 0.9},
    {"temperature": 0.8, "top_k": 50}, {"temperature": 1.0, "top_p": 0.9}, {"temperature": [1.0, 0.6]}]."""
    from fastrq.errors import InvalidArgumentError

    settings = []
    for item in items:
        parts = item.split(":")
        if not 1 <= len(parts) <= 3:
            raise InvalidArgumentError(f"--sweep item {item!r} is not temperature[:top_k[:top_p]]")
        try:
            setting = {"temperature": per_depth_value(parts[0], float)}
            for name, kind, text in (("top_k", int, parts[1:2]), ("top_p", float, parts[2:3])):
                value = _off_if_zero(per_depth_value(text[0], kind)) if text else None
                if value is not None and not (isinstance(value, list) and all(v is None for v in value)):
                    setting[name] = value
        except ValueError as exc:
            raise InvalidArgumentError(f"--sweep item {item!r}: {exc}") from None
        settings.append(setting)
    return settings


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrq sample", description="sample digit grids from a trained RQ-Transformer prior")
    p.add_argument("--prior", default="runs/rqtransformer", help="prior run folder or checkpoint")
    p.add_argument("--rqvae", default=None, help="RQ-VAE checkpoint (default: the one the prior was trained on)")
    p.add_argument("--out", default=None, help="output folder (default: <prior>/samples)")
    p.add_argument("--num", type=int, default=64, help="unconditional samples in samples.png")
    p.add_argument("--per-class", type=int, default=10, help="columns of samples_by_class.png (conditional priors)")
    p.add_argument("--temperature", default="1.0", help="one value or one per depth, comma-separated")
    p.add_argument("--top-k", default="0", help="one value or one per depth (0 = off)")
    p.add_argument("--top-p", default="0", help="one value or one per depth (0 = off)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    return p


def _sample(argv: list[str]) -> int:
    import torch

    from fastrq.errors import InvalidArgumentError
    from fastrq.models.study.sampling import write_sample_grids
    from fastrq.models.training.loaders import load_prior, load_rqvae

    args = _sample_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        prior = load_prior(args.prior)
        rqvae_path = args.rqvae or prior.rqvae_path
        if not rqvae_path:
            raise InvalidArgumentError("the prior checkpoint names no RQ-VAE; pass --rqvae")
        out = Path(args.out) if args.out else Path(args.prior) / "samples"
        written = write_sample_grids(prior, load_rqvae(rqvae_path), out, num=args.num, per_class=args.per_class,
                                     seed=args.seed, batch_size=args.batch_size, **_sampling_settings(args))
    except ValueError as exc:  # a malformed number in the sampling settings
        raise InvalidArgumentError(str(exc)) from exc
    for name, path in written.items():
        print(f"{name}: {path}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ generative-eval


def _generative_eval_parser() -> argparse.ArgumentParser:
    from fastrq.models.training.data import DATASETS

    p = argparse.ArgumentParser(
        prog="fastrq generative-eval",
        description="evaluate a trained RQ-Transformer prior offline (optionally training the classifier and prior first)")
    p.add_argument("--out", default="reports/prior", help="report folder")
    p.add_argument("--prior", default="runs/rqtransformer", help="prior run folder")
    p.add_argument("--classifier", default="runs/classifier", help="classifier run folder")
    p.add_argument("--rqvae", default=None, help="RQ-VAE run (default: the prior's); needed with --train-missing")
    p.add_argument("--train-missing", action="store_true",
                   help="train the classifier and/or the prior first if their run folders hold no checkpoint")
    p.add_argument("--prior-minutes", type=float, default=25.0, help="training-time budget of a prior trained here")
    p.add_argument("--prior-args", default="", help="extra options of `fastrq train --model rqtransformer` for a "
                   "prior trained here (quoted string)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
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


def _generative_eval(argv: list[str]) -> int:
    """From a trained RQ-VAE to the report in one command: ``--train-missing`` trains the classifier and the prior
    when their run folders have no checkpoint."""
    import torch

    from fastrq.errors import InvalidArgumentError
    from fastrq.models.study.prior_report import prior_report, render_markdown
    from fastrq.models.training import classifier, prior
    from fastrq.models.training.checkpoint import latest_checkpoint

    args = _generative_eval_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common = ["--dataset", args.dataset, "--no-progress"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    if args.threads:
        common += ["--threads", str(args.threads)]
    try:
        settings = _sampling_settings(args)
    except ValueError as exc:  # a malformed number in the sampling settings
        raise InvalidArgumentError(str(exc)) from exc
    if args.train_missing and latest_checkpoint(Path(args.classifier) / "checkpoints") is None:
        options = _classifier_parser().parse_args(["--out", args.classifier, *common])
        classifier.train_classifier(_from_args(classifier.ClassifierTrainConfig, options))
    if args.train_missing and latest_checkpoint(Path(args.prior) / "checkpoints") is None:
        if not args.rqvae:
            raise InvalidArgumentError("--train-missing needs --rqvae to train the prior")
        options = _prior_parser().parse_args(["--rqvae", args.rqvae, "--out", args.prior, "--max-minutes",
                                              str(args.prior_minutes), *common, *shlex.split(args.prior_args)])
        prior.train_prior(_from_args(prior.PriorTrainConfig, options))
    report = prior_report(args.out, prior=args.prior, classifier=args.classifier, rqvae=args.rqvae,
                          num_samples=args.num_samples, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                          sweep=parse_sweep(args.sweep), **settings)
    print(render_markdown(report))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ dispatch


def _info(argv: list[str]) -> int:
    from . import info

    return info.main(argv)


# name → (handler, one-line help)
SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "info": (_info, "versions and which backends are usable here"),
    "train": (_train, "train a VAE / VQ-VAE / RQ-VAE (or the RQ-Transformer prior / classifier)"),
    "reproduce": (_reproduce, "run the RQ-vs-VQ MNIST study and write a report folder"),
    "sample": (_sample, "sample images from a trained RQ-Transformer prior"),
    "generative-eval": (_generative_eval, "evaluate a trained prior: samples judged by the classifier, FID, NLL"),
}
_CONTINUE_HINT = {"train": "; the same command with --resume continues",
                  "reproduce": "; run the same command again to continue"}


def _usage() -> str:
    lines = ["usage: fastrq <command> [options]   (fastrq <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return EXIT_OK if argv else EXIT_ERROR
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"fastrq {__version__}")
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"fastrq: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_ERROR
    from .errors import FastRQError

    try:
        return int(SUBCOMMANDS[name][0](rest) or 0)
    except KeyboardInterrupt as exc:  # TrainingInterrupted: the checkpoint is saved
        print(f"fastrq {name}: {exc or 'interrupted'}{_CONTINUE_HINT.get(name, '')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FastRQError as exc:
        print(f"fastrq {name}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("fastrq.models"):
            print(f"fastrq {name}: {exc.name} is not available in this installation", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    raise SystemExit(main())
