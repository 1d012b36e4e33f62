"""Counter-based random integers on the device: no generator state, no host sync, identical on every rank.

The quantizer's random choices (k-means seeds, dead-code replacements) must be reproducible from the module's
state alone (so ``torch.library.opcheck`` and ``torch.compile`` see a deterministic op), identical on every
distributed rank, and free of host syncs. A splitmix64 hash of (seed, step, stream, position) gives all three: it
is pure int64 tensor arithmetic (wrapping multiplication, logical shifts emulated with masks).
"""

from __future__ import annotations

import torch

from ..kernels.cpu import launch as cpu_kernels

__all__ = ["hash_uniform_int", "hash_uniform_float", "hash_permutation_prefix"]

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB
_LOW62 = (1 << 62) - 1


def _shift_right_logical(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    z = z + _GOLDEN
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    return z ^ _shift_right_logical(z, 31)


def _hash(key: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """``count`` pseudo-random non-negative int64 (< 2⁶²) from a 0-d/1-element int64 ``key`` tensor and a stream id."""
    position = torch.arange(count, device=key.device, dtype=torch.long)
    z = _splitmix64(key.reshape(()).long() * 0x2545F491 + stream)
    return _splitmix64(z + position * 0x632BE5AB) & _LOW62


def hash_uniform_int(key: torch.Tensor, stream: int, count: int, high: int | torch.Tensor) -> torch.Tensor:
    """int64 ``[count]`` uniform-ish in ``[0, high)`` (with replacement); ``high`` ≥ 1 (an int, or a 0-d int64
    tensor when it is only known on the device). On the CPU in eager mode (host reads free) one native call
    computes the same bits."""
    if key.device.type == "cpu" and not torch.compiler.is_compiling() and cpu_kernels.library() is not None:
        bound = int(high)
        if bound >= 1:
            return cpu_kernels.hash_uniform_int(int(key.reshape(())), stream, count, bound)
    return _hash(key, stream, count) % high


def hash_uniform_float(key: torch.Tensor, stream: int, count: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[count]`` uniform in ``[0, 1)``: the top 53 of the 62 hashed bits, scaled by 2⁻⁵³."""
    return ((_hash(key, stream, count) >> 9).to(torch.float64) * 2.0**-53).to(dtype)


def hash_permutation_prefix(key: torch.Tensor, stream: int, n: int, count: int) -> torch.Tensor:
    """int64 ``[count]`` distinct indices in ``[0, n)`` when ``count ≤ n`` (the first ``count`` of a random
    permutation), else indices with replacement."""
    if count > n:
        return hash_uniform_int(key, stream, count, n)
    return torch.argsort(_hash(key, stream, n))[:count]
