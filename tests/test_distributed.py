"""The quantizer under torch.distributed: 2 processes, gloo backend, CPU.

- EMA codebooks, and k-means++ init followed by EMA, identical on both ranks and equal to one process run on the
  concatenated batch;
- dead-code restarts identical on both ranks (each rank draws the candidates of the codes it owns from its own
  rows, so they are not those one process would draw from the concatenated batch);
- the options of issues 11 and 13 (rotation trick, cosine codes, codebook_dim, masks, per-sample dropout)
  identical on both ranks;
- exactly one all_reduce per training step (k-means init aside), none in eval mode or under no_grad.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastrq

pytestmark = pytest.mark.distributed

WORLD = 2
STEPS = 3
N_PER_RANK = 24


def _batch(step):
    return torch.randn(WORLD * N_PER_RANK, 4, generator=torch.Generator().manual_seed(100 + step))


CONFIGS = {
    "ema": {},
    "kmeans": dict(kmeans_init=True, kmeans_iters=3),
    "kmeans_dead": dict(kmeans_init=True, kmeans_iters=3, dead_code_threshold=2.0),
    "grouped": dict(groups=2, dead_code_threshold=1.0),
    "options": dict(rotation_trick=True, use_cosine_sim=True, codebook_dim=3, quantize_dropout=True,
                    quantize_dropout_per_sample=True, dead_code_threshold=1.0, kmeans_init=True),
}


def _make(**kwargs):
    torch.manual_seed(0)  # same construction on every rank (the same seed for the counter-based random choices)
    if "groups" in kwargs:
        return fastrq.GroupedResidualQuantizer(4, 8, 3, decay=0.8, **kwargs)
    return fastrq.ResidualQuantizer(4, 8, 3, decay=0.8, **kwargs)


def _mask(step, rank):
    return torch.rand(N_PER_RANK, generator=torch.Generator().manual_seed(1000 * step + rank)) > 0.25


def _worker(rank, init_file, out_dir):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    calls = {"n": 0}
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(*args, **kwargs):
        calls["n"] += 1
        return real_all_reduce(*args, **kwargs)

    dist.all_reduce = counting_all_reduce
    try:
        results = {}
        for name, kwargs in CONFIGS.items():
            rq = _make(**kwargs)
            per_step = []
            for step in range(STEPS):
                local = _batch(step)[rank * N_PER_RANK : (rank + 1) * N_PER_RANK].requires_grad_()
                before = calls["n"]
                _, _, loss = rq(local, mask=_mask(step, rank) if name == "options" else None)
                loss.backward()
                per_step.append(calls["n"] - before)
            before = calls["n"]
            rq.eval()
            rq(_batch(0)[:5])
            rq.train()
            with torch.no_grad():
                rq(_batch(0)[:5])
            results[name] = {"state": rq.state_dict(), "per_step": per_step, "eval_no_grad": calls["n"] - before}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.all_reduce = real_all_reduce
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_codebooks_identical_across_ranks(rank_results):
    for name in CONFIGS:
        for key, value in rank_results[0][name]["state"].items():
            torch.testing.assert_close(rank_results[1][name]["state"][key], value, rtol=0, atol=0, msg=f"{name}: {key}")


@pytest.mark.parametrize("name", ["ema", "kmeans"])
def test_equal_to_single_process_on_concatenated_batch(rank_results, name):
    rq = _make(**CONFIGS[name])
    for step in range(STEPS):
        rq(_batch(step))
    for key, value in rq.state_dict().items():
        torch.testing.assert_close(rank_results[0][name]["state"][key], value, rtol=1e-5, atol=1e-5, msg=f"{name}: {key}")


def test_one_collective_per_training_step_none_in_eval_or_no_grad(rank_results):
    for rank in range(WORLD):
        assert rank_results[rank]["ema"]["per_step"] == [1] * STEPS
        assert rank_results[rank]["grouped"]["per_step"] == [1] * STEPS, "one all-reduce for all groups"
        # k-means init at the first step: its own collectives (flag, seeds, one per Lloyd iteration) then one
        assert rank_results[rank]["kmeans_dead"]["per_step"][1:] == [1] * (STEPS - 1)
        assert rank_results[rank]["ema"]["eval_no_grad"] == 0
        assert rank_results[rank]["kmeans_dead"]["eval_no_grad"] == 0
    assert bool(rank_results[0]["kmeans_dead"]["state"]["initted"])
