"""``python -m fastrq.models.train ...`` (also ``torchrun --nproc-per-node 2 -m fastrq.models.train ...``): the same
command as ``fastrq train ...`` (:mod:`fastrq.cli`). The trainers are in :mod:`fastrq.models.training`."""

import sys

from fastrq.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
