"""Output allocation for the launchers, with a test hook that poisons fresh outputs.

With ``POISON_OUTPUTS = True`` (set by the tests), every output buffer a launcher allocates starts as NaN (floats)
or ``POISON_CODE`` (integers) instead of uninitialised memory, so an element a kernel forgot to write fails the
test instead of passing by luck.
"""

from __future__ import annotations

import torch

POISON_OUTPUTS = False
POISON_CODE = -7


def empty(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(*shape, dtype=dtype, device=device)
    if POISON_OUTPUTS:
        out.fill_(float("nan") if dtype.is_floating_point else POISON_CODE)
    return out
