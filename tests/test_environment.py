"""fastrq.ops.environment.get against os.environ.get, and the call scratch's remembered layouts: the two pieces of
per-call bookkeeping made cheaper for small calls (benchmarks note 23)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from fastrq.ops import environment
from fastrq.ops.backends import resolve_backend

NAME = "FASTRQ_TEST_ENVIRONMENT_VARIABLE"


@pytest.mark.parametrize("value", [None, "", "0", "auto", "torch", "välue with ünïcode", "a=b c"])
def test_get_agrees_with_os_environ(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(NAME, raising=False)
    else:
        monkeypatch.setenv(NAME, value)
    assert environment.get(NAME, "default") == os.environ.get(NAME, "default")


def test_get_sees_changes_made_after_import(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert environment.get(NAME, "unset") == "unset"
    os.environ[NAME] = "first"
    try:
        assert environment.get(NAME, "unset") == "first"
        os.environ[NAME] = "second"
        assert environment.get(NAME, "unset") == "second"
    finally:
        del os.environ[NAME]
    assert environment.get(NAME, "unset") == "unset"


def test_get_falls_back_when_os_environ_is_replaced(monkeypatch):
    monkeypatch.setattr(os, "environ", {NAME: "from the replacement"})
    assert environment.get(NAME, "default") == "from the replacement"
    assert environment.get(NAME + "_ABSENT", "default") == "default"


def test_backend_variable_set_after_import_takes_effect(monkeypatch):
    monkeypatch.delenv("FASTRQ_BACKEND", raising=False)
    assert resolve_backend("auto", torch.device("cpu")).__name__ == "fastrq.ops.torch_backend"
    monkeypatch.setenv("FASTRQ_BACKEND", "reference")
    assert resolve_backend("auto", torch.device("cpu")).__name__ == "fastrq.ops.reference"


def test_call_scratch_layouts(monkeypatch):
    from fastrq.kernels.cpu import launch

    monkeypatch.setattr(launch, "_CALL_SCRATCH", threading.local())  # this thread's scratch as on a new thread

    def check(sizes):
        buffer, addresses = launch._call_scratch(*sizes)
        start = buffer.data_ptr()
        end = start + buffer.numel() * 4
        for address, size, following in zip(addresses, sizes, addresses[1:] + [None]):
            assert address % 64 == 0
            assert start <= address and address + size * 4 <= end
            if following is not None:
                assert address + size * 4 <= following
        return buffer, addresses

    small = (100, 7, 33)
    buffer, first = check(small)
    again_buffer, again = check(small)
    assert again == first and again_buffer is buffer  # remembered
    check((5, 5))  # a second layout of the same buffer leaves the first one as it was
    assert check(small)[1] == first
    # a call that needs more than the kept buffer replaces it; the remembered layout then follows the new buffer
    grown = buffer.numel() + 1000
    new_buffer, _ = check((grown,))
    after_buffer, after = check(small)
    assert after_buffer is new_buffer and after_buffer is not buffer
    assert after[0] != first[0]  # laid out again in the new buffer, not the remembered addresses of the old one


def _separate_checks(x, codebooks, table_dims):
    """The checks check_search_inputs replaces, in their old order."""
    from fastrq.ops import validation as check

    if table_dims == 2:
        check.check_codebook(codebooks)
        check.check_vectors(x, codebooks.shape[1])
        check.check_same_device(("x", x), ("codebook", codebooks))
    else:
        check.check_codebooks(codebooks)
        check.check_vectors(x, codebooks.shape[2])
        check.check_same_device(("x", x), ("codebooks", codebooks))
    return check.compute_dtype(x.dtype, codebooks.dtype)


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the type and message are what is compared
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("table_dims", [2, 3])
def test_combined_search_checks_match_the_separate_ones(table_dims):
    """check_search_inputs' fast accept path and its fallback give what the separate checks gave: the same compute
    dtype for good input, the same exception and message for each kind of bad input."""
    from fastrq.ops.validation import check_search_inputs

    def table(*shape, dtype=torch.float32, device="cpu"):
        return torch.zeros(*shape[-table_dims:] if table_dims == 2 else (2, *shape), dtype=dtype, device=device)

    cases = [
        (torch.zeros(5, 4), table(3, 4)),
        (torch.zeros(2, 5, 4, dtype=torch.float16), table(3, 4, dtype=torch.float64)),
        (torch.zeros(4, dtype=torch.bfloat16), table(3, 4)),
        (torch.zeros(0, 4), table(3, 4)),
        (torch.zeros(5, 4, dtype=torch.float8_e4m3fn), table(3, 4)),  # floating, not in the fast path's list
        (torch.zeros(5, 3), table(3, 4)),  # D mismatch
        (torch.zeros(5, 4), table(0, 4)),  # K = 0
        (torch.zeros(5, 0), table(3, 0)),  # D = 0
        (torch.zeros(5, 4, dtype=torch.int64), table(3, 4)),
        (torch.zeros(5, 4), table(3, 4, dtype=torch.int32)),
        (torch.zeros(5, 4, dtype=torch.complex64), table(3, 4)),
        (torch.tensor(1.0), table(3, 4)),  # a scalar x
        (torch.zeros(5, 4), torch.zeros(4)),  # a 1-D table
        (torch.zeros(5, 4), torch.zeros(1, 2, 3, 4)),  # a 4-D table
        ([[0.0] * 4], table(3, 4)),  # not a tensor
        (torch.zeros(5, 4), [[0.0] * 4]),
        (torch.zeros(5, 4, device="meta"), table(3, 4)),  # two devices
        (torch.zeros(5, 4), table(3, 4, device="meta")),
    ]
    if table_dims == 3:
        cases.append((torch.zeros(5, 4), torch.zeros(0, 3, 4)))  # L = 0
    for x, books in cases:
        assert _outcome(check_search_inputs, x, books, table_dims) == _outcome(_separate_checks, x, books, table_dims)
