"""The training step's reused buffers (fastrq.ops.recycled): only inside an owner's activation, never aliased within
one, never handed to a caller who could still hold them; and the modes and copies that must not share them."""

from __future__ import annotations

import copy
import pickle
import threading

import torch

import fastrq
from fastrq.ops import recycled, training

SHAPE = (4, 256, 128)  # 512 KiB of float32: above recycled.MIN_BYTES


def test_outside_an_activation_every_call_gets_a_fresh_tensor():
    first = recycled.zeros(SHAPE).fill_(7.0)
    second = recycled.zeros(SHAPE)
    assert second.data_ptr() != first.data_ptr() and not second.any() and first.eq(7.0).all()


def test_an_activation_reuses_its_buffers_zeroed_and_never_aliases_two_requests():
    workspace = recycled.Workspace()
    with workspace.active():
        a = recycled.zeros(SHAPE).fill_(7.0)
        b = recycled.empty(SHAPE)  # the second request of the same key: another buffer
        small = recycled.zeros((3, 5))  # below MIN_BYTES: never kept
    assert a.data_ptr() != b.data_ptr()
    addresses = (a.data_ptr(), b.data_ptr())
    del a, b
    with workspace.active():
        again = recycled.zeros(SHAPE)
        other = recycled.empty(SHAPE)
    assert (again.data_ptr(), other.data_ptr()) == addresses
    assert not again.any() and small.shape == (3, 5)


def test_nested_activations_continue_the_outer_one_and_other_threads_get_fresh_tensors():
    workspace = recycled.Workspace()
    with workspace.active():
        kept = recycled.zeros(SHAPE)
    seen = []
    with workspace.active():
        outer = recycled.zeros(SHAPE)  # the first request again: the last activation's first buffer
        with workspace.active():  # nested: the outer activation's next index, not the first buffer again
            inner = recycled.zeros(SHAPE)
        thread = threading.Thread(target=lambda: seen.append(recycled.zeros(SHAPE).data_ptr()))
        thread.start()
        thread.join()  # another thread: no workspace active there
    assert outer.data_ptr() == kept.data_ptr()
    assert inner.data_ptr() != outer.data_ptr()
    assert seen[0] not in (outer.data_ptr(), inner.data_ptr())


def test_inference_mode_buffers_are_kept_apart():
    """A buffer made under torch.inference_mode cannot be written outside it (nor a normal one saved for
    backward inside): one set per mode."""
    workspace = recycled.Workspace()
    with torch.inference_mode(), workspace.active():
        inside = recycled.zeros(SHAPE)
    with workspace.active():
        outside = recycled.zeros(SHAPE)
        outside.add_(1.0)  # would raise for an inference tensor
    assert inside.is_inference() and not outside.is_inference()


def test_a_caller_of_the_functional_op_keeps_what_it_was_given():
    """quantize_for_training called directly (no module, no activation): its statistics are the caller's, whatever
    it keeps of them (the tensor, a view, its storage)."""
    books = torch.randn(4, 256, 64, generator=torch.Generator().manual_seed(0))

    def call(seed):
        x = torch.randn(512, 64, generator=torch.Generator().manual_seed(seed))
        return training.quantize_for_training(x, books, [256] * 4, 4, None, "torch")[5]

    sums = call(1)
    view, storage, snapshot = sums[1], sums.untyped_storage(), sums.clone()
    later = call(2)
    assert later.data_ptr() != sums.data_ptr()
    assert torch.equal(sums, snapshot) and torch.equal(view, snapshot[1]) and storage.data_ptr() == sums.data_ptr()


def test_module_steps_reuse_the_statistics_and_leave_their_outputs_alone():
    """Two training steps of an EnCodec-sized module: the second step's outputs do not change the first's, the
    state matches a module whose steps allocate afresh, and inference-mode calls in between break nothing."""
    torch.manual_seed(0)
    x1, x2 = torch.randn(300, 128), torch.randn(300, 128)
    rq = fastrq.ResidualQuantizer(128, 1024, 2).train()
    twin = copy.deepcopy(rq)
    assert twin._workspace is not rq._workspace
    held = rq(x1)
    snapshot = [t.detach().clone() for t in held]
    rq(x1)
    with torch.inference_mode():
        rq.eval()
        rq(x2)
        rq.train()
    rq(x2)
    assert all(torch.equal(a.detach(), b) for a, b in zip(held, snapshot))
    recycled_off = recycled.MIN_BYTES
    try:
        recycled.MIN_BYTES = 1 << 62  # the twin allocates every buffer afresh
        twin(x1)
        twin(x1)
        twin(x2)
    finally:
        recycled.MIN_BYTES = recycled_off
    for (name, a), b in zip(rq.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert rq._workspace._buffers, "the steps took their statistics from the workspace"
    clone = pickle.loads(pickle.dumps(rq))
    assert clone._workspace is not rq._workspace and not clone._workspace._buffers


def test_a_module_used_under_inference_mode_then_trained():
    """eval() under torch.inference_mode (a validation pass before training), then training steps: the certified
    search's per-thread buffers (kept between calls) are kept per mode, so neither side writes the other's."""
    torch.manual_seed(0)
    rq = fastrq.ResidualQuantizer(128, 1024, 2).eval()  # the GEMM path (certified where the CPU has bf16)
    x = torch.randn(2048, 128)
    with torch.inference_mode():
        rq(x)
    rq.train()
    quantized, _, loss = rq(x.requires_grad_())
    (quantized.sum() + loss).backward()
    rq.eval()
    with torch.inference_mode():
        rq(x)


def test_a_concurrent_activation_leaves_the_owner_active():
    """Thread B enters the workspace while thread A holds it (B gets fresh tensors) and leaves first: A's
    activation goes on, and the workspace is free again after A leaves."""
    workspace = recycled.Workspace()
    inside, b_done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        with workspace.active():
            assert recycled._CURRENT.__dict__.get("value") is None
        b_done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with workspace.active():
        inside.set()
        b_done.wait()
        assert recycled._CURRENT.value is workspace
        recycled.zeros(SHAPE)
    thread.join()
    assert workspace._lock.acquire(blocking=False)
    workspace._lock.release()


def test_a_module_pickled_without_a_workspace_still_trains():
    """A whole module pickled by an earlier fastrq (no ``_workspace`` attribute) loads and trains."""
    torch.manual_seed(0)
    rq = fastrq.ResidualQuantizer(8, 64, 2).train()
    state = dict(rq.__dict__)
    del state["_workspace"]
    old = fastrq.ResidualQuantizer.__new__(fastrq.ResidualQuantizer)
    old.__setstate__(state)
    old(torch.randn(100, 8))
    assert isinstance(old._workspace, recycled.Workspace)
