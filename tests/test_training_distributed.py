"""The trainers' process group (models/training/distributed.py): its collectives on 2 gloo processes, and the wait
in close() for the backend to let go of the collectives' tensors (without it a rank could abort at exit)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
import torch.multiprocessing as mp

from fastrq.models.training.distributed import Distributed

WORLD = 2


def _worker(rank, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    run = Distributed(world=WORLD, rank=rank)
    # objects of different pickled sizes on the two ranks, tensors inside
    gathered = run.gather_objects({"rank": rank, "text": "x" * (1 + 1000 * rank), "t": torch.arange(3 + rank)})
    summed = run.sum_(torch.tensor([rank + 1.0, 10.0]))
    flags = [run.any(rank == 1), run.any(False)]
    released = run.wait_until_backend_releases(timeout_s=30)
    run.close()
    result = {"ranks": [g["rank"] for g in gathered], "text_lengths": [len(g["text"]) for g in gathered],
              "tensors": [g["t"].tolist() for g in gathered], "summed": summed.tolist(), "flags": flags,
              "released": released, "still_handed": len(run._handed_to_backend),
              "destroyed": not dist.is_initialized()}
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
        assert got["released"] is True and got["still_handed"] == 0
        assert got["destroyed"] is True


def test_wait_until_backend_releases_waits_for_a_reference_from_cpp():
    run = Distributed()
    held = torch.ones(3, requires_grad=True)
    graph = [(held * held).sum()]  # the autograd graph saves `held`: a reference from C++, as a backend's work
    run._handed(held)
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
    run._handed(held)
    assert run.wait_until_backend_releases(timeout_s=0.05) is False
    assert run._handed_to_backend == [held]
    del graph
    assert run.wait_until_backend_releases(timeout_s=0.05) is True
