"""The counter-based random draws (:mod:`fastrq.ops.counter_random`) behind k-means seeds and dead-code
restarts: the same bits from the tensor ops and from the native CPU call, reproducible from (key, stream) alone,
in range, and spread out."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastrq.ops import counter_random

NATIVE = counter_random.cpu_kernels.library() is not None
keys = st.integers(-(2**63), 2**63 - 1)


def _tensor_ops():
    """The tensor-op path on the CPU (the native call switched off)."""
    return mock.patch.object(counter_random.cpu_kernels, "library", lambda: None)


@pytest.mark.skipif(not NATIVE, reason="the native library does not build here")
@given(key=keys, stream=st.integers(0, 2**40), count=st.integers(0, 600),
       high=st.one_of(st.integers(1, 10), st.integers(1, 2**62)))
def test_native_draws_equal_the_tensor_ops_bit_for_bit(key, stream, count, high):
    k = torch.tensor(key, dtype=torch.int64)
    native = counter_random.hash_uniform_int(k, stream, count, high)
    with _tensor_ops():
        tensor = counter_random.hash_uniform_int(k, stream, count, high)
        from_device_bound = counter_random.hash_uniform_int(k, stream, count, torch.tensor(high))
    assert torch.equal(native, tensor) and torch.equal(native, from_device_bound)


@given(key=keys, stream=st.integers(0, 2**40), high=st.integers(1, 50))
def test_draws_are_in_range_and_reproducible(key, stream, high):
    k = torch.tensor(key, dtype=torch.int64)
    a = counter_random.hash_uniform_int(k, stream, 200, high)
    assert a.dtype == torch.int64 and int(a.min()) >= 0 and int(a.max()) < high
    assert torch.equal(a, counter_random.hash_uniform_int(k.clone(), stream, 200, high))
    floats = counter_random.hash_uniform_float(k, stream, 200)
    assert float(floats.min()) >= 0.0 and float(floats.max()) < 1.0


def test_draws_are_spread_out():
    """10,000 draws in [0, 10): every bin within 4 standard deviations of 1,000; other streams and keys differ."""
    k = torch.tensor(12345, dtype=torch.int64)
    draws = counter_random.hash_uniform_int(k, 7, 10_000, 10)
    counts = torch.bincount(draws, minlength=10).double()
    assert bool(((counts - 1000).abs() <= 4 * (10_000 * 0.1 * 0.9) ** 0.5).all())
    assert not torch.equal(draws, counter_random.hash_uniform_int(k, 8, 10_000, 10))
    assert not torch.equal(draws, counter_random.hash_uniform_int(k + 1, 7, 10_000, 10))


def test_permutation_prefix_is_distinct():
    k = torch.tensor(3, dtype=torch.int64)
    prefix = counter_random.hash_permutation_prefix(k, 1, 100, 40)
    assert prefix.unique().numel() == 40 and int(prefix.max()) < 100
