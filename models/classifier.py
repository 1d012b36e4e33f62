"""``python -m fastrq.models.classifier ...``: the same command as ``fastrq train --model classifier ...``
(:mod:`fastrq.cli`), kept because ``benchmarks/results/prior_2026-11-24/README.md`` records it. The network is
:mod:`fastrq.models.networks.classifier`, its trainer :mod:`fastrq.models.training.classifier`."""

import sys

from fastrq.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "--model", "classifier", *sys.argv[1:]]))
