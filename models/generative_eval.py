"""``python -m fastrq.models.generative_eval ...``: the same command as ``fastrq generative-eval ...``
(:mod:`fastrq.cli`). The evaluation is in :mod:`fastrq.models.study.prior_report`."""

import sys

from fastrq.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["generative-eval", *sys.argv[1:]]))
