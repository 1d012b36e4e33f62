"""The exceptions fastrq raises.

Every error fastrq raises on purpose derives from :class:`FastRQError`, and also from the built-in exception a
caller would expect (``ValueError`` for a bad value or shape, ``TypeError`` for a bad dtype, ``RuntimeError`` for
a backend that cannot run), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "FastRQError",
    "ShapeError",
    "DTypeError",
    "CodeRangeError",
    "EmptyCodebookError",
    "NonFiniteError",
    "InvalidArgumentError",
    "BackendUnavailableError",
    "StateDictError",
]


class FastRQError(Exception):
    """Base class of every error raised by fastrq."""


class ShapeError(FastRQError, ValueError):
    """A tensor has the wrong number of dimensions or a size that does not match another tensor."""


class DTypeError(FastRQError, TypeError):
    """A tensor has a dtype the operation does not accept (e.g. integer data where floats are needed)."""


class CodeRangeError(FastRQError, ValueError):
    """A code is outside ``[0, K)`` (or ``-1``, "level skipped", where that is allowed)."""


class EmptyCodebookError(FastRQError, ValueError):
    """A codebook has no rows (K = 0): there is nothing to quantize to."""


class NonFiniteError(FastRQError, ValueError):
    """The input holds NaN or infinity where a finite value is required (e.g. before an EMA update)."""


class InvalidArgumentError(FastRQError, ValueError):
    """An argument is outside its allowed range (a decay outside [0, 1], a negative eps, ...)."""


class BackendUnavailableError(FastRQError, RuntimeError):
    """A backend was asked for explicitly but cannot run here; the message says why."""


class StateDictError(FastRQError, ValueError):
    """A state dict does not fit the module it is loaded into."""
