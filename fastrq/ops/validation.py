"""Input checks shared by every op: they turn bad input into a :mod:`fastrq.errors` exception that names the
problem, and bring good input into the form every backend expects (2-D, contiguous, in the compute dtype)."""

from __future__ import annotations

import torch

from ..errors import CodeRangeError, DTypeError, EmptyCodebookError, ShapeError

__all__ = [
    "compute_dtype", "check_vectors", "check_codebook", "check_codebooks", "check_search_inputs", "check_codes",
    "as_rows", "as_table", "detached",
]

_FLOATING = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype the search runs in: float64 if any input is float64, else float32 (fp16 / bf16 are upcast)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _check_floating(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise DTypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_vectors(x: torch.Tensor, dim: int, name: str = "x") -> None:
    """x must be floating with at least one dimension and its last dimension equal to ``dim``."""
    _check_floating(name, x)
    if x.dim() < 1:
        raise ShapeError(f"{name} must have at least one dimension [..., D], got a scalar")
    if x.shape[-1] != dim:
        raise ShapeError(f"dimension mismatch: {name} has last dimension {x.shape[-1]} but the codebook has D = {dim}")


def check_codebook(codebook: torch.Tensor, name: str = "codebook") -> None:
    """A single codebook: floating, shape [K, D] with K ≥ 1."""
    _check_floating(name, codebook)
    if codebook.dim() != 2:
        raise ShapeError(f"{name} must have shape [K, D], got {tuple(codebook.shape)}")
    if codebook.shape[1] == 0:
        raise ShapeError(f"{name} has vector dimension D = 0")
    if codebook.shape[0] == 0:
        raise EmptyCodebookError(f"{name} is empty (K = 0): there is nothing to quantize to")


def check_codebooks(codebooks: torch.Tensor, name: str = "codebooks") -> None:
    """Stacked codebooks: floating, shape [L, K, D] with L ≥ 1 and K ≥ 1."""
    _check_floating(name, codebooks)
    if codebooks.dim() != 3:
        raise ShapeError(f"{name} must have shape [L, K, D], got {tuple(codebooks.shape)}")
    if codebooks.shape[0] == 0:
        raise ShapeError(f"{name} has no levels (L = 0)")
    if codebooks.shape[2] == 0:
        raise ShapeError(f"{name} have vector dimension D = 0")
    if codebooks.shape[1] == 0:
        raise EmptyCodebookError(f"{name} are empty (K = 0): there is nothing to quantize to")


def check_search_inputs(x: torch.Tensor, codebooks: torch.Tensor, table_dims: int) -> torch.dtype:
    """The search ops' checks in one call: ``codebooks`` a codebook ``[K, D]`` (``table_dims`` 2) or stacked
    codebooks ``[L, K, D]`` (3), x ``[..., D]``, both floating and on one device; returns the compute dtype.

    Input that passes is recognised with a handful of attribute reads (the separate checks cost ~3 µs, a tenth of
    a small ``nearest_code`` call, 2026-12-03); anything else goes through :func:`check_codebook` /
    :func:`check_codebooks`, :func:`check_vectors` and :func:`check_same_device`, which raise what they find."""
    if isinstance(x, torch.Tensor) and isinstance(codebooks, torch.Tensor):
        table, xs = codebooks.shape, x.shape
        x_dtype, table_dtype = x.dtype, codebooks.dtype
        if (len(table) == table_dims and 0 not in table and len(xs) >= 1 and xs[-1] == table[-1]
                and x_dtype in _FLOATING and table_dtype in _FLOATING and x.device == codebooks.device):
            return torch.float64 if torch.float64 in (x_dtype, table_dtype) else torch.float32
    if table_dims == 2:
        check_codebook(codebooks)
        name = "codebook"
    else:
        check_codebooks(codebooks)
        name = "codebooks"
    check_vectors(x, codebooks.shape[-1])
    check_same_device(("x", x), (name, codebooks))
    return compute_dtype(x.dtype, codebooks.dtype)


def check_same_device(*named: tuple[str, torch.Tensor]) -> None:
    first = named[0][1].device
    for _, t in named[1:]:
        if t.device == first:
            continue
        desc = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise ShapeError(f"tensors must be on one device: {desc}")


def check_codes(codes: torch.Tensor, codebook_size: int, *, allow_skip: bool, name: str = "codes") -> None:
    """Codes must be integers in [0, K) (or -1 where ``allow_skip``). Checking the range costs one reduction
    (and a host sync), which decode pays so that an out-of-range code never becomes a silent wrong gather."""
    if not isinstance(codes, torch.Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise DTypeError(f"{name} must be an integer tensor, got dtype {codes.dtype}")
    if codes.numel() == 0:
        return
    lo, hi = int(codes.min()), int(codes.max())
    low_ok = -1 if allow_skip else 0
    if lo < low_ok or hi >= codebook_size:
        allowed = f"[-1, {codebook_size})" if allow_skip else f"[0, {codebook_size})"
        bad = lo if lo < low_ok else hi
        raise CodeRangeError(f"{name} out of range: found {bad}, allowed {allowed} (K = {codebook_size})")


def as_rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """View x [..., D] as contiguous rows [N, D] in ``dtype`` (copies only when it must; no call at all where
    nothing changes: each no-op tensor call still costs about a microsecond)."""
    rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if rows.dtype != dtype:
        rows = rows.to(dtype)
    return rows if rows.is_contiguous() else rows.contiguous()


def as_table(t: torch.Tensor, dtype: torch.dtype, *, detach: bool = True) -> torch.Tensor:
    """``t`` contiguous in ``dtype``, detached unless ``detach`` is False (the search's operand; copies only when it
    must)."""
    if t.dtype != dtype:
        t = t.to(dtype)
    if not t.is_contiguous():
        t = t.contiguous()
    return detached(t) if detach else t


def detached(t: torch.Tensor) -> torch.Tensor:
    """``t.detach()`` where ``t`` requires grad, else ``t`` itself (a detach is a dispatched op, ~1-3 µs, even on a
    tensor without grad)."""
    return t.detach() if t.requires_grad else t
