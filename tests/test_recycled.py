"""The recycled statistics buffers (fastrq.ops.recycled): reused only when nothing else can see them."""

from __future__ import annotations

import threading

import pytest
import torch

from fastrq.ops import recycled

SHAPE = (4, 256, 128)  # 512 KiB of float32: above recycled.MIN_BYTES


def _fill(t: torch.Tensor) -> torch.Tensor:
    t.fill_(7.0)
    return t


def test_a_dropped_buffer_is_handed_out_again_zeroed():
    first = _fill(recycled.zeros(SHAPE, torch.float32))
    address = first.data_ptr()
    del first
    again = recycled.zeros(SHAPE, torch.float32)
    assert again.data_ptr() == address
    assert again.shape == SHAPE and again.is_contiguous() and not again.any()


@pytest.mark.parametrize("how", ["the tensor", "a view", "autograd"])
def test_a_buffer_someone_still_holds_is_never_reused(how):
    first = _fill(recycled.zeros(SHAPE, torch.float32))
    w = torch.ones((), requires_grad=True)
    if how == "the tensor":
        kept = first
    elif how == "a view":
        kept = first[1]
    else:  # saved by an autograd node: a C++ reference to the tensor, invisible to Python's count
        kept = w * first  # mul saves `first` for the gradient of w
    del first
    second = recycled.zeros(SHAPE, torch.float32)
    assert not second.any()
    if how == "autograd":
        kept.sum().backward()  # reads the saved tensor: still all 7s
        assert w.grad.item() == 7.0 * second.numel()
    else:
        assert kept.eq(7.0).all(), "a tensor someone keeps was zeroed"


def test_small_shapes_and_other_dtypes_get_their_own_tensors():
    small = recycled.zeros((3, 5), torch.float32)
    assert small.shape == (3, 5) and not small.any()
    a = recycled.zeros(SHAPE, torch.float32)
    b = recycled.zeros(SHAPE, torch.float64)
    assert a.dtype == torch.float32 and b.dtype == torch.float64
    assert a.data_ptr() != b.data_ptr()


def test_threads_have_their_own_pools():
    mine = recycled.zeros(SHAPE, torch.float32)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(recycled.zeros(SHAPE, torch.float32).data_ptr()))
    thread.start()
    thread.join()
    assert seen[0] != mine.data_ptr()
