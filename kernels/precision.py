"""Precision modes of the Triton search (no triton import here).

The search scores ``s_k = ½‖ê_k‖² − (r − μ)·ê_k`` need one dot product per (row, code) pair. ``tl.dot`` on float32
operands can run in several ways; the mode picks one:

========  =========================================================  ===============================
mode      what the dot does                                          accuracy of the argmin
========  =========================================================  ===============================
ieee      exact fp32 multiply-add (CUDA cores, no tensor cores)      exact up to fp32 rounding
tf32x3    three TF32 tensor-core products (big·big + big·small +     ≈ fp32 (error ~2⁻²² relative)
          small·big), Triton's ``input_precision="tf32x3"``
tf32      one TF32 product (10-bit mantissa)                         approximate: flips near-ties
bf16      bf16 operands, fp32 accumulation                           approximate: flips more rows
========  =========================================================  ===============================

Chosen by the ``precision=`` keyword of the launchers, else the environment variable ``FASTRQ_TRITON_PRECISION``,
else the default: ``"ieee"`` on the CPU (the interpreter computes every mode in fp32 anyway) and ``"tf32x3"`` on
CUDA devices. float64 input always searches in float64 with ``"ieee"`` (the mode is ignored).

In the approximate modes the codebook operand is rounded on the host (:func:`round_operand`) *before* its squared
norms are taken, so norms and dot see the same rounded rows (field notes §4: inconsistent norms were 2–6× worse).
"""

from __future__ import annotations

import os

import torch

from fastrq.errors import InvalidArgumentError

__all__ = ["PRECISIONS", "EXACT_PRECISIONS", "ENV_VAR", "resolve_precision", "round_operand"]

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")
EXACT_PRECISIONS = ("ieee", "tf32x3")
ENV_VAR = "FASTRQ_TRITON_PRECISION"


def resolve_precision(precision: str | None, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The mode a launcher runs in: the argument, else ``$FASTRQ_TRITON_PRECISION``, else the device default.

    float64 data is always searched with exact float64 products: the result is ``"ieee"`` whatever was asked.
    An unknown name raises :class:`~fastrq.errors.InvalidArgumentError` listing the valid ones.
    """
    if precision is None:
        precision = os.environ.get(ENV_VAR, "") or None
    if precision is None:
        precision = "tf32x3" if device.type == "cuda" else "ieee"
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"unknown Triton precision mode {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return "ieee" if dtype == torch.float64 else precision


def _round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest TF32 value (10 explicit mantissa bits, ties away from zero, like cvt.rna)."""
    bits = t.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF  # add half an ulp of the 10-bit mantissa, then clear the 13 low bits
    finite = torch.isfinite(t)
    return torch.where(finite, rounded.view(torch.float32), t)


def round_operand(t: torch.Tensor, precision: str) -> torch.Tensor:
    """The float32 values the dot will actually multiply in ``precision`` (identity for ieee / tf32x3 / float64)."""
    if t.dtype != torch.float32 or precision in EXACT_PRECISIONS:
        return t
    if precision == "tf32":
        return _round_to_tf32(t)
    if precision == "bf16":
        return t.to(torch.bfloat16).to(torch.float32)
    raise InvalidArgumentError(f"unknown Triton precision mode {precision!r}")
