"""First-use self-check of the Triton kernels: the first call of each (device, op, kernel configuration) is compared
with the torch backend on a small problem; a configuration that fails (a mismatch or an exception, in the check or
in a later call) warns once and falls back to the torch backend for the rest of the process.

The small problem: x with integer entries in [−6, 6], two levels of integer codebooks (the second one with a
padding row), a row mask (``row_levels``) with masked rows, at least two row tiles and two code tiles of the call's
own configuration. Integer data is exact in every precision mode (bf16 included), so the codes must equal the
torch backend's bit for bit (exact ties included: the smallest index wins), and every output must be exact.

``FASTRQ_TRITON_SELFCHECK=0`` turns the check off (the kernels run unchecked).
"""

from __future__ import annotations

import os
import warnings

import torch

from .search import resolve_config

__all__ = ["ENV_VAR", "guarded", "reset", "status", "torch_fallback", "check"]

ENV_VAR = "FASTRQ_TRITON_SELFCHECK"

# key -> None (ok) or the reason the configuration failed
_STATE: dict[tuple, str | None] = {}


def reset() -> None:
    """Forget every check (the next call of each configuration is checked again)."""
    _STATE.clear()


def status() -> dict[tuple, str | None]:
    """{(device, op, precision, mode, dtype, D, config): None if it passed, else why it failed}."""
    return dict(_STATE)


def _key(op: str, x: torch.Tensor, num_codes: int) -> tuple:
    precision, mode, cfg = resolve_config(x.shape[1], x.dtype, x.device, num_codes, x.shape[0])
    return (str(x.device), op, precision, mode, str(x.dtype), x.shape[1], cfg), precision, cfg


def _torch():
    from fastrq.ops import torch_backend  # lazily: the kernels sit below the ops layer

    return torch_backend


def torch_fallback(op: str, *args):
    """The torch backend's answer for ``op`` (quantize_for_training composed from its per-level functions when the
    torch backend has no fused version)."""
    tb = _torch()
    if op != "quantize_for_training":
        return getattr(tb, op)(*args)
    if hasattr(tb, "quantize_for_training"):
        return tb.quantize_for_training(*args)
    return _composed_training_step(tb, *args)


def _composed_training_step(tb, x, codebooks, level_sizes, num_active, row_levels=None):
    n, dim = x.shape
    num_levels, num_codes, _ = codebooks.shape
    limit = torch.full((n,), num_active, dtype=torch.long, device=x.device)
    if row_levels is not None:
        limit = torch.minimum(limit, row_levels.to(torch.long))
    codes = torch.full((n, num_levels), -1, dtype=torch.long, device=x.device)
    quantized, commit = torch.zeros_like(x), torch.zeros_like(x)
    level_sqerr = x.new_zeros(num_levels)
    counts, sums = x.new_zeros(num_levels, num_codes), x.new_zeros(num_levels, num_codes, dim)
    residual = x.clone()
    for level in range(num_active):
        active = level < limit
        rows = active.nonzero()[:, 0]
        level_codes, _ = tb.nearest_code(residual[rows].contiguous(), codebooks[level, : level_sizes[level]].contiguous())
        codes[rows, level] = level_codes
        counts[level], sums[level] = tb.code_statistics(residual[rows].contiguous(), level_codes, num_codes)
        chosen = codebooks[level].index_select(0, level_codes)
        residual[rows] = residual[rows] - chosen
        quantized[rows] = quantized[rows] + chosen
        commit[rows] = commit[rows] + residual[rows]
        level_sqerr[level] = residual[rows].square().sum()
    return quantized, codes, level_sqerr, commit, counts, sums


def _problem(x: torch.Tensor, num_codes: int, cfg) -> tuple:
    gen = torch.Generator().manual_seed(12)
    dim = x.shape[1]
    n = 2 * cfg.block_n + 3
    k = max(1, min(num_codes, cfg.block_k + 5))
    xs = torch.randint(-6, 7, (n, dim), generator=gen).to(x.dtype)
    books = torch.stack([torch.randint(-3, 4, (k, dim), generator=gen), torch.randint(-1, 2, (k, dim), generator=gen)])
    books = books.to(x.dtype)
    sizes = [k, max(1, k - 1)]
    row_levels = torch.randint(0, 3, (n,), generator=gen)
    dev = x.device
    return xs.to(dev), books.to(dev).contiguous(), sizes, row_levels.to(dev)


def _equal(got, want) -> bool:
    if isinstance(got, torch.Tensor):
        return got.shape == want.shape and bool(torch.equal(got.to(want.dtype), want))
    return all(_equal(a, b) for a, b in zip(got, want)) and len(got) == len(want)


def check(op: str, x: torch.Tensor, num_codes: int, fn, cfg, precision: str) -> str | None:
    """Run the small problem through ``fn`` (the Triton launcher of ``op`` at configuration ``cfg``) and the torch
    backend; None when every output matches exactly, else the reason."""
    xs, books, sizes, row_levels = _problem(x, num_codes, cfg)
    if op == "nearest_code":
        args = (xs, books[0])
    elif op == "residual_quantize":
        args = (xs, books)
    else:
        args = (xs, books, sizes, 2, row_levels)
    try:
        got = fn(*args, config=cfg, precision=precision)
        if xs.device.type == "cuda":
            torch.cuda.synchronize(xs.device)
    except Exception as exc:  # a compile or launch failure: report it, fall back
        return f"{type(exc).__name__}: {exc}"
    want = torch_fallback(op, *args)
    names = {"nearest_code": ("codes", "sqdist"), "residual_quantize": ("quantized", "codes"),
             "quantize_for_training": ("quantized", "codes", "level_sqerr", "commit_dir", "counts", "sums")}[op]
    for name, a, b in zip(names, got, want):
        if not _equal(a, b):
            return f"{name} differs from the torch backend on the self-check problem"
    return None


def guarded(op: str, x: torch.Tensor, num_codes: int, fn, *args):
    """``fn(*args)`` for the Triton launcher of ``op``, checked on first use of its configuration; the torch
    backend's answer where the configuration failed."""
    if os.environ.get(ENV_VAR, "1") == "0":
        return fn(*args)
    key, precision, cfg = _key(op, x, num_codes)
    if key not in _STATE:
        _STATE[key] = check(op, x, num_codes, fn, cfg, precision)
        if _STATE[key] is not None:
            _warn(key, _STATE[key])
    if _STATE[key] is None:
        try:
            return fn(*args, config=cfg, precision=precision)
        except Exception as exc:
            _STATE[key] = f"{type(exc).__name__}: {exc}"
            _warn(key, _STATE[key])
    return torch_fallback(op, *args)


def _warn(key: tuple, reason: str) -> None:
    device, op, precision, mode, dtype, dim, cfg = key
    warnings.warn(
        f"fastrq: the Triton kernel for {op} ({mode}, {precision}, {dtype}, D={dim}, {cfg}) on {device} failed its "
        f"self-check ({reason}); using the torch backend for this configuration. Set {ENV_VAR}=0 to skip the check.",
        RuntimeWarning,
        stacklevel=3,
    )
