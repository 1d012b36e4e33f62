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
    other = check((5, 5))[1]
    assert other != first or len(other) != len(first)
    # a call that needs more than the kept buffer replaces it; the remembered layout then follows the new buffer
    grown = buffer.numel() + 1000
    new_buffer, _ = check((grown,))
    after_buffer, after = check(small)
    assert after_buffer is new_buffer and after_buffer is not buffer
    assert after[0] >= after_buffer.data_ptr()
