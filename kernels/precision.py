"""Precision modes of the Triton search, host-side operand rounding, and the error bound of the certified mode.

No triton import here (the lead's torch backend may import the bound functions).

The search scores ``s_k = h_k − c·ê_k`` with ``c = r − μ`` (the centred residual row), ``ê_k = C[k] − μ`` (the centred
code) and ``h_k = ½‖ê_k‖²`` (float32, computed once per call on the host). ``tl.dot`` on float32 operands can run in
several ways; the mode picks one:

==========  ===========================================================  ==================================
mode        what the dot does                                            the argmin
==========  ===========================================================  ==================================
ieee        exact fp32 multiply-add (CUDA cores, no tensor cores)        exact up to fp32 rounding
tf32x3      three TF32 tensor-core products (big·big + big·small +       ≈ fp32 (error ~2⁻²¹ relative)
            small·big); the codebook is split into big + small on the
            host, the residual once per level in the kernel
tf32        one TF32 product (10-bit mantissa)                           approximate: flips near-ties
bf16        bf16 operands (the codebook stored as bf16), fp32 accumulate approximate: flips more rows
certified   bf16 first pass, exact fp32 re-score of the best candidates, the fp32 answer, proven per row
            and a per-row proof (:func:`certified_margin`); rows without  (see below)
            proof are searched again exactly (tf32x3 / ieee)
==========  ===========================================================  ==================================

Chosen by the ``precision=`` keyword of the launchers, else the environment variable ``FASTRQ_TRITON_PRECISION``,
else the default: ``"ieee"`` on the CPU (the interpreter computes every mode in fp32 anyway) and ``"tf32x3"`` on
CUDA devices. float64 input always searches in float64 (the mode is ignored).

In ``tf32`` / ``bf16`` the codebook operand is rounded on the host (:func:`round_operand`) *before* its squared
norms are taken, so norms and dot see the same rounded rows (field notes §4: inconsistent norms were 2–6× worse).
``certified`` keeps the float32 norms of the unrounded rows: its proof is about the float32 score.

The certified-mode bound
------------------------
Let σ_k = h_k − c·ê_k in exact arithmetic over the float32 values c, ê_k, h_k (h_k as the host computed it). The
first pass multiplies c̃ = bf16(c) = c + α and ẽ_k = bf16(ê_k) = ê_k + β_k (α, β_k: the rounding errors, exact in
float32); c̃·ẽ_k − c·ê_k = c·β_k + α·ẽ_k, so by Cauchy–Schwarz it is at most ‖c‖·β* + ‖α‖·b̂* with β* = max_k ‖β_k‖
and b̂* = max_k ‖ẽ_k‖. The products of two bf16 values are exact in float32; the tensor core sums D + 1 terms (−h and
the D products) in float32, within γ(D + 1)·(|h| + Σ|c̃_d ẽ_d|) ≤ γ(D + 1)·(H + (‖c‖ + ‖α‖)·b̂*) of exact, with
γ(n) = n·w/(1 − n·w) and w = 2⁻²² per step (**four** units of float32 roundoff: tensor cores do not round to
nearest; the CPU path, whose float32 accumulation is probed to round to nearest, uses w = 2⁻²⁴). Subnormal operands
or partial sums (flushed to zero) lose at most η = 2⁻¹²⁶ each. Hence (:func:`bf16_pass_error_bound`)

    |s̃_k − σ_k| ≤ B = ‖c‖β* + ‖α‖b̂* + γ(D+1)·(H + (‖c‖ + ‖α‖)b̂*) + η·(√D·(‖c‖ + ‖α‖ + b̂* + 2) + 4D + 16)

The **exact re-score** ŝ_k = fl(h_k − Σ_d c_d ê_{k,d}) (any order, rounding to nearest) obeys
|ŝ_k − σ_k| ≤ E = γ₂₄(D+1)·(H + ‖c‖·b*) + (D + 2)η with b* = max_k ‖ê_k‖, γ₂₄ at 2⁻²⁴ per step
(:func:`fp32_rescore_error_bound`). This is the structure of ``fastrq.ops.certified`` (the CPU side), whose GEMM
augments the operands differently (a split half norm: its λ term; an added row constant) and whose accumulation unit
is 2⁻²⁴.

*Certificate.* Re-score a candidate set C (the row's best first-pass codes) exactly: ŝ* = min over C of ŝ_k (smallest
index among equal values). Let Λ be a lower bound of s̃_k over every code outside C. If Λ − ŝ* > B + E
(:func:`certified_margin`) then for every k ∉ C, ŝ_k ≥ σ_k − E ≥ s̃_k − B − E ≥ Λ − B − E > ŝ*: the code returned is
the argmin of the float32 score ŝ over *all* K codes with the smallest-index tie rule, which is what an exact fp32
search computes (an exact fp32 search may differ only where two codes' float32 scores lie within float32 rounding of
each other, the latitude ``ieee`` and ``tf32x3`` already have between themselves). A row that is not finite is never
certified. The kernel evaluates B + E as k_c·‖c‖ + k_α·‖α‖ + k_0 (:func:`certified_coefficients`, per level).

:func:`bf16_score_error_bound` is the plain worst case of B from ‖c‖·‖ê‖ alone (‖α‖ ≤ u‖c‖, β* ≤ u·b*, u = 2⁻⁸);
it is ≈ 3× looser on typical data and is kept for callers that have no rounding-error norms.
"""

from __future__ import annotations

import torch

from fastrq.errors import InvalidArgumentError
from fastrq.ops import environment

__all__ = [
    "PRECISIONS",
    "EXACT_PRECISIONS",
    "ENV_VAR",
    "resolve_precision",
    "round_operand",
    "round_to_tf32",
    "split_tf32",
    "BF16_UNIT_ROUNDOFF",
    "accumulation_gamma",
    "bf16_score_error_bound",
    "fp32_score_error_bound",
    "ETA",
    "bf16_pass_error_bound",
    "fp32_rescore_error_bound",
    "certified_margin",
    "certified_coefficients",
]

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16", "certified")
EXACT_PRECISIONS = ("ieee", "tf32x3", "certified")
ENV_VAR = "FASTRQ_TRITON_PRECISION"

BF16_UNIT_ROUNDOFF = 2.0**-8
_ACC_UNIT = 2.0**-22  # assumed worst relative error of one tensor-core fp32 accumulation step (4 fp32 roundoffs)
_FP32_UNIT = 2.0**-23  # one fp32 operation on CUDA cores (2 roundoffs: room for fma vs mul + add)


def resolve_precision(precision: str | None, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The mode a launcher runs in: the argument, else ``$FASTRQ_TRITON_PRECISION``, else the device default.

    float64 data is always searched with exact float64 products: the result is ``"ieee"`` whatever was asked.
    An unknown name raises :class:`~fastrq.errors.InvalidArgumentError` listing the valid ones.
    """
    if precision is None:
        precision = environment.get(ENV_VAR, "") or None
    if precision is None:
        precision = "tf32x3" if device.type == "cuda" else "ieee"
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"unknown Triton precision mode {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return "ieee" if dtype == torch.float64 else precision


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest TF32 value (10 explicit mantissa bits, ties away from zero, like cvt.rna).
    The kernels round the residual with the same bit operation."""
    bits = t.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF  # add half an ulp of the 10-bit mantissa, then clear the 13 low bits
    finite = torch.isfinite(t)
    return torch.where(finite, rounded.view(torch.float32), t)


def split_tf32(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``t`` -> (big, small), both TF32 values, ``big = tf32(t)``, ``small = tf32(t − big)``: the operand
    pair of the three-product tf32x3 dot (``t·u ≈ big·u_big + big·u_small + small·u_big``)."""
    big = round_to_tf32(t)
    return big, round_to_tf32(t - big)


def round_operand(t: torch.Tensor, precision: str) -> torch.Tensor:
    """The float32 values the dot will actually multiply in ``precision`` (identity for the exact modes)."""
    if t.dtype != torch.float32 or precision in EXACT_PRECISIONS:
        return t
    if precision == "tf32":
        return round_to_tf32(t)
    if precision == "bf16":
        return t.to(torch.bfloat16).to(torch.float32)
    raise InvalidArgumentError(f"unknown Triton precision mode {precision!r}")


def accumulation_gamma(terms: int, unit: float = _ACC_UNIT) -> float:
    """γ(n) = n·unit / (1 − n·unit): the relative error bound of summing n terms with ``unit`` error per step."""
    nu = terms * unit
    if nu >= 1.0:
        raise InvalidArgumentError(f"no rounding-error bound for sums of {terms} terms at unit {unit}")
    return nu / (1.0 - nu)


def bf16_score_error_bound(c_norm, e_norm, h_abs, dim: int):
    """B = (2u + u² + γ(D+1)(1+u)²)·‖c‖‖ê‖ + γ(D+1)·|h|: the bf16 first pass's score is within B of the exact
    score (u = 2⁻⁸, γ at 2⁻²² per accumulation step). Works on floats and tensors (broadcasting)."""
    u = BF16_UNIT_ROUNDOFF
    g = accumulation_gamma(dim + 1)
    return (2 * u + u * u + g * (1 + u) ** 2) * c_norm * e_norm + g * h_abs


def fp32_score_error_bound(c_norm, e_norm, h_abs, dim: int):
    """E = γ₂₃(D+1)·(‖c‖‖ê‖ + |h|): an fp32 score ``fl(h − Σ c_d ê_d)`` (any order, two roundoffs per step) is
    within E of exact. The looser companion of :func:`bf16_score_error_bound`."""
    g = accumulation_gamma(dim + 1, _FP32_UNIT)
    return g * (c_norm * e_norm + h_abs)


ETA = 2.0**-126  # the smallest normal float32: the most a flushed subnormal can lose


def bf16_pass_error_bound(c_norm, alpha_norm, beta_max, bhat_max, h_max, dim: int, unit: float = _ACC_UNIT):
    """B: the bf16 first pass's score is within B of σ (module docstring), from ‖c‖, ‖α‖ = ‖bf16(c) − c‖ per row
    and β* = max‖bf16(ê) − ê‖, b̂* = max‖bf16(ê)‖, H = max|h| per level; ``unit`` per accumulation step (2⁻²² for
    tensor cores, 2⁻²⁴ for an accumulation that rounds to nearest). Floats or tensors (broadcasting)."""
    g = accumulation_gamma(dim + 1, unit)
    root = dim**0.5
    return (c_norm * beta_max + alpha_norm * bhat_max + g * (h_max + (c_norm + alpha_norm) * bhat_max)
            + ETA * (root * (c_norm + alpha_norm + bhat_max + 2) + 4 * dim + 16))


def fp32_rescore_error_bound(c_norm, b_max, h_max, dim: int):
    """E: the exact fp32 re-score fl(h − Σ c_d ê_d) (rounding to nearest, any order) is within E of σ."""
    return accumulation_gamma(dim + 1, 2.0**-24) * (h_max + c_norm * b_max) + (dim + 2) * ETA


def certified_margin(c_norm, alpha_norm, beta_max, bhat_max, b_max, h_max, dim: int, unit: float = _ACC_UNIT):
    """B + E: the margin a row needs between the lower bound of the codes not re-scored and the best re-score."""
    return (bf16_pass_error_bound(c_norm, alpha_norm, beta_max, bhat_max, h_max, dim, unit)
            + fp32_rescore_error_bound(c_norm, b_max, h_max, dim))


def certified_coefficients(beta_max, bhat_max, b_max, h_max, dim: int, unit: float = _ACC_UNIT):
    """(k_c, k_α, k_0) with :func:`certified_margin` = k_c·‖c‖ + k_α·‖α‖ + k_0 (per level; floats or tensors)."""
    g, g24 = accumulation_gamma(dim + 1, unit), accumulation_gamma(dim + 1, 2.0**-24)
    root = dim**0.5
    k_c = beta_max + g * bhat_max + ETA * root + g24 * b_max
    k_alpha = bhat_max + g * bhat_max + ETA * root
    k_0 = g * h_max + ETA * (root * (bhat_max + 2) + 4 * dim + 16) + g24 * h_max + (dim + 2) * ETA
    return k_c, k_alpha, k_0
