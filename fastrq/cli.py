"""The ``fastrq`` console script.

    fastrq info                         versions and usable backends (fastrq.info)
    fastrq train --model M ...          train a model (fastrq.models.train; M = vae, vqvae, rqvae, or
                                        rqtransformer / classifier from fastrq.models.prior / .classifier)
    fastrq reproduce --preset quick     the RQ-VAE vs VQ-VAE study, report folder (fastrq.models.reproduce)
    fastrq sample ...                   sample from a trained prior (fastrq.models.sample)

Subcommand modules are imported only when their subcommand runs, so ``fastrq info`` does not import torchvision.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main", "SUBCOMMANDS"]

# name → (module, one-line help)
SUBCOMMANDS = {
    "info": ("fastrq.info", "versions and which backends are usable here"),
    "train": ("fastrq.models.training.autoencoder", "train a VAE / VQ-VAE / RQ-VAE (or the RQ-Transformer prior / classifier)"),
    "reproduce": ("fastrq.models.study.reproduce", "run the RQ-vs-VQ MNIST study and write a report folder"),
    "sample": ("fastrq.models.study.sampling", "sample images from a trained RQ-Transformer prior"),
}


def _usage() -> str:
    lines = ["usage: fastrq <command> [options]   (fastrq <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"fastrq {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"fastrq: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            print(f"fastrq {name}: {module_name} is not available in this installation", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
