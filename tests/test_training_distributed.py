"""The trainers' process group (models/training/distributed.py): its collectives on 2 gloo processes, and the wait
in close() for the backend to let go of the collectives' tensors (without it a rank could abort at exit); the same
wait at exit for the quantizer's own all_reduce (fastrq/ops/distributed.py)."""

from __future__ import annotations

import json
import threading
import time
import warnings

import pytest
import torch
import torch.multiprocessing as mp

from fastrq.models.training.distributed import Distributed
from fastrq.ops.distributed import held_outside_python

WORLD = 2


def _held_then_released(dist, track, wait):
    """A work kept alive by its handle holds its tensor: (what ``wait`` returns while the handle lives — it must time
    out — and once the handle is gone)."""
    held = torch.ones(4)
    work = dist.all_reduce(held, async_op=True)
    work.wait()
    track(held)
    while_held = wait(timeout_s=0.05)
    del work
    return while_held, wait(timeout_s=30)


def _worker(rank, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    run = Distributed(world=WORLD, rank=rank)
    tracked = []
    track = run._track_backend_tensors
    run._track_backend_tensors = lambda *tensors: (tracked.extend(tensors), track(*tensors))[1]
    # objects of different pickled sizes on the two ranks, tensors inside
    gathered = run.gather_objects({"rank": rank, "text": "x" * (1 + 1000 * rank), "t": torch.arange(3 + rank)})
    tracked_by_gather = len(tracked)
    addend = torch.tensor([rank + 1.0, 10.0])
    summed = run.sum_(addend)
    flags = [run.any(rank == 1), run.any(False)]
    waited_out, released = _held_then_released(dist, run._track_backend_tensors, run.wait_until_backend_releases)
    # the quantizer's own all_reduce: kept for the exit hook while the backend holds it, the hook registered
    from fastrq.ops import distributed as ops_distributed

    remembered = []
    remember = ops_distributed._remember
    ops_distributed._remember = lambda flat: (remembered.append(flat), remember(flat))[1]
    statistics = torch.ones(5)
    ops_distributed.all_reduce_sum_(statistics, True)
    quantizer_sum = statistics.tolist()
    ops_distributed._remember = remember
    hook_waited_out, hook_released = _held_then_released(dist, ops_distributed._remember,
                                                         ops_distributed.wait_for_backend_at_exit)
    # after a failure the wait is short and silent, even if something still holds a collective's work
    stuck = torch.ones(4)
    stuck_work = dist.all_reduce(stuck, async_op=True)
    stuck_work.wait()
    run._track_backend_tensors(stuck)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.monotonic()
        run.close(failed=True)
        failed_close_s = time.monotonic() - start
    del stuck_work
    result = {"ranks": [g["rank"] for g in gathered], "text_lengths": [len(g["text"]) for g in gathered],
              "tensors": [g["t"].tolist() for g in gathered], "summed": summed.tolist(), "flags": flags,
              "tracked_by_gather": tracked_by_gather, "sum_tracked": any(t is addend for t in tracked),
              "tracked_total": len(tracked), "waited_out": waited_out, "released": released,
              "failed_close_s": failed_close_s, "failed_close_warnings": [str(w.message) for w in caught],
              "destroyed": not dist.is_initialized(), "quantizer_sum": quantizer_sum,
              "quantizer_remembered": len(remembered) == 1 and remembered[0] is statistics,
              "hook_registered": ops_distributed._exit_hook_registered, "hook_waited_out": hook_waited_out,
              "hook_released": hook_released}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.distributed
def test_collectives_on_two_gloo_ranks_and_close_waits_for_the_backend(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), tmp_path), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["ranks"] == [0, 1]
        assert got["text_lengths"] == [1, 1001]
        assert got["tensors"] == [[0, 1, 2], [0, 1, 2, 3]]
        assert got["summed"] == [3.0, 20.0]
        assert got["flags"] == [True, False]
        # every tensor of the collectives was tracked: the sizes (1 + world) and the payloads (1 + world) of the
        # gather, the summed tensor itself, the two flags, and the two held by hand
        assert got["tracked_by_gather"] == 2 * (1 + WORLD)
        assert got["sum_tracked"] is True and got["tracked_total"] == 2 * (1 + WORLD) + 1 + 2 + 2
        assert got["waited_out"] is False  # a live work handle holds its tensor: no release yet
        assert got["released"] is True  # ...and once the handle is gone, the wait ends
        assert 1.0 <= got["failed_close_s"] < 10.0 and got["failed_close_warnings"] == []
        assert got["destroyed"] is True
        assert got["quantizer_sum"] == [2.0] * 5 and got["quantizer_remembered"] is True
        assert got["hook_registered"] is True
        assert got["hook_waited_out"] is False and got["hook_released"] is True


def test_wait_until_backend_releases_waits_for_a_reference_from_cpp():
    run = Distributed()
    held = torch.ones(3, requires_grad=True)
    graph = [(held * held).sum()]  # the autograd graph saves `held`: a reference from C++, as a backend's work
    run._track_backend_tensors(held)
    assert held._use_count() > 1

    def release():
        time.sleep(0.2)
        graph.clear()

    releaser = threading.Thread(target=release)
    start = time.monotonic()
    releaser.start()
    assert run.wait_until_backend_releases(timeout_s=30) is True
    waited = time.monotonic() - start
    releaser.join()
    assert not graph and waited >= 0.15  # it returned only once the graph (the C++ holder) was gone
    assert run._handed_to_backend == []


def test_wait_until_backend_releases_gives_up_after_its_timeout():
    run = Distributed()
    held = torch.ones(3, requires_grad=True)
    graph = (held * held).sum()  # never released during the wait
    run._track_backend_tensors(held)
    assert run.wait_until_backend_releases(timeout_s=0.05) is False
    assert run._handed_to_backend == [held]
    del graph
    assert run.wait_until_backend_releases(timeout_s=0.05) is True


def test_tensors_released_before_they_are_tracked_are_not_kept():
    run = Distributed()
    run._track_backend_tensors(torch.ones(3))  # nothing in C++ holds it: nothing to wait for, nothing kept alive
    assert run._handed_to_backend == []
    assert held_outside_python(object()) is False  # no _use_count (another torch): no wait
