"""The study's pieces (fast, no training): statistics over seeds, the stability rules, aggregation, findings and the
task runner."""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest
from hypothesis import given, settings, strategies as st

from fastrq.models.study import findings as findings_mod
from fastrq.models.study.aggregate import aggregate
from fastrq.models.study.runner import Task, run_tasks
from fastrq.models.study.stability import (
    DIVERGED_FRACTION, SPIKE_FACTOR, SPIKE_WINDOW, roughness, run_stability, spike_steps,
)
from fastrq.models.study.statistics import compare, fisher_exact, format_mean_std, mean_std
from fastrq.models.training.interrupt import TrainingInterrupted

# ------------------------------------------------------------------------------------------------ statistics


def test_mean_std_scalars_and_per_level_lists():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    mean, std = mean_std([[1.0, 10.0], [3.0, 10.0]])
    assert mean == [2.0, 10.0] and std[1] == 0.0 and std[0] == pytest.approx(math.sqrt(2))
    assert format_mean_std([2.0, 10.0], [0.5, 0.0], ".1f") == "2.0 ± 0.5 / 10.0 ± 0.0"


def test_compare_uses_interval_overlap():
    apart = compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert apart["distinguishable"] and apart["lower"] == "a" and apart["difference"] == pytest.approx(-1.0)
    # |Δ| = 0.15 ≤ std_a + std_b = 0.2: inside the spread
    close = compare([1.0, 1.1, 0.9], [1.15, 1.25, 1.05])
    assert not close["distinguishable"] and close["lower"] is None
    # just outside: |Δ| = 0.25 > 0.2
    assert compare([1.25, 1.35, 1.15], [1.0, 1.1, 0.9])["lower"] == "b"
    # one value per side: the spread is unknown, so never distinguishable
    assert not compare([1.0], [5.0])["distinguishable"]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 9), st.integers(1, 9), st.integers(0, 9), st.integers(1, 9))
def test_fisher_exact_matches_scipy(a, n, b, m):
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = min(a, n), min(b, m)
    expected = scipy_stats.fisher_exact([[a, n - a], [b, m - b]], alternative="two-sided")[1]
    assert fisher_exact(a, n, b, m) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_fisher_exact_known_values_and_bad_counts():
    assert fisher_exact(0, 9, 5, 9) == pytest.approx(0.0294, abs=1e-4)
    assert fisher_exact(3, 9, 3, 9) == pytest.approx(1.0)
    assert fisher_exact(0, 0, 0, 0) == 1.0
    with pytest.raises(ValueError):
        fisher_exact(4, 3, 0, 3)


# ------------------------------------------------------------------------------------------------ stability


def test_spike_steps_flags_a_doubling_against_the_recent_median_only():
    falling = [1.0 / (1 + 0.1 * t) for t in range(100)]
    assert spike_steps(falling) == []
    flat = [1.0 + 0.01 * (t % 3) for t in range(100)]  # median of any 20-step window: 1.01
    spiky = list(flat)
    spiky[60] = 1.01 * (SPIKE_FACTOR + 0.05)
    spiky[70] = 1.01 * (SPIKE_FACTOR - 0.05)  # below the factor: not a spike
    assert spike_steps(spiky) == [60]
    early = list(falling)
    early[SPIKE_WINDOW - 1] = 100.0  # inside the first window: never a spike (and the median shrugs it off)
    assert spike_steps(early) == []
    assert roughness(falling) < 0.01 and roughness([1.0, 2.0]) is None


def _write_metrics(folder, losses):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metrics.jsonl", "w") as handle:
        for step, loss in enumerate(losses, 1):
            handle.write(json.dumps({"kind": "train", "step": step, "loss": loss}) + "\n")
        handle.write(json.dumps({"kind": "eval", "step": len(losses), "loss": 0.1}) + "\n")


def test_run_stability_counts_spikes_and_divergence(tmp_path):
    losses = [0.1] * 50
    losses[30] = 0.5
    _write_metrics(tmp_path / "spiky", losses)
    final = {"test": {"recon_mse": 0.01}}
    record = run_stability(tmp_path / "spiky", final, baseline_mse=0.07)
    assert record["spikes"] == 1 and record["spike_steps"] == [31] and not record["diverged"] and record["unstable"]
    _write_metrics(tmp_path / "smooth", [0.1] * 50)
    assert not run_stability(tmp_path / "smooth", final, 0.07)["unstable"]
    # a final MSE at half the trivial reconstruction's counts as diverged; the NaN guard does too
    bad = {"test": {"recon_mse": DIVERGED_FRACTION * 0.07}}
    assert run_stability(tmp_path / "smooth", bad, 0.07)["diverged"]
    stopped = run_stability(tmp_path / "smooth", {"diverged": True, "error": "loss nan"}, 0.07)
    assert stopped["diverged"] and stopped["nonfinite"] and stopped["final_recon_mse"] is None


# ------------------------------------------------------------------------------------------------ aggregation


def _final(recon, usage=(1.0,), perplexity=(64.0,), model="vqvae", size=256, levels=1, norms=None):
    test = {"loss": recon * 1.1, "recon_mse": recon, "psnr": -10 * math.log10(recon), "aux_loss": recon * 0.1,
            "usage": list(usage), "perplexity": list(perplexity)}
    if norms is not None:
        test["residual_norm"] = list(norms)
    return {"model": model, "model_config": {"model": model, "codebook_size": size, "num_quantizers": levels,
                                             "ema": True}, "test": test, "train_images": 100, "test_images": 10,
            "steps": 5, "train_images_per_s": 1000.0, "time_wall_s": 1.0}


def test_aggregate_means_stds_and_diverged_seeds():
    summary = aggregate("VQ", {0: _final(0.01), 1: _final(0.03), 2: {"diverged": True, "time_wall_s": 2.0}})
    assert summary["seeds"] == [0, 1] and summary["diverged_seeds"] == [2]
    assert summary["test"]["recon_mse"] == pytest.approx(0.02)
    assert summary["test_std"]["recon_mse"] == pytest.approx(math.sqrt(2) * 0.01)
    assert summary["test"]["usage"] == [1.0] and summary["time_wall_s"] == 4.0
    assert aggregate("VQ", {0: {"diverged": True}}) is None


def test_finding_1_verdicts_follow_the_seed_spread():
    def results(rq, vq):
        return {"rq2x128_ema": aggregate("RQ", {s: _final(v, model="rqvae") for s, v in enumerate(rq)}),
                "vq256_ema": aggregate("VQ", {s: _final(v) for s, v in enumerate(vq)})}

    better = findings_mod.findings(results([0.010, 0.011, 0.009], [0.020, 0.021, 0.019]))[0]
    assert better["verdict"] == "reproduced" and better["reproduced"] is True
    assert "RQ lower in 3 of 3 seeds" in better["evidence"]
    inside = findings_mod.findings(results([0.010, 0.013, 0.007], [0.012, 0.015, 0.009]))[0]
    assert inside["verdict"] == "not distinguishable" and inside["reproduced"] is False
    assert "RQ lower in 3 of 3 seeds" in inside["evidence"]  # every seed agrees, yet inside the spread
    mixed = findings_mod.findings(results([0.010, 0.016, 0.007], [0.012, 0.015, 0.009]))[0]
    assert "RQ lower in 2 of 3 seeds" in mixed["evidence"]
    worse = findings_mod.findings(results([0.020, 0.021, 0.019], [0.010, 0.011, 0.009]))[0]
    assert worse["verdict"] == "not reproduced"


def test_healthy_checks_every_seed_and_level():
    ok = aggregate("RQ", {s: _final(0.01, usage=(1.0, 0.97), perplexity=(40.0, 33.0), size=128, levels=2)
                          for s in range(3)})
    assert findings_mod.healthy(ok) is True
    low = aggregate("RQ", {0: _final(0.01, usage=(1.0, 0.97), perplexity=(40.0, 33.0), size=128, levels=2),
                           1: _final(0.01, usage=(1.0, 0.97), perplexity=(40.0, 31.0), size=128, levels=2)})
    assert findings_mod.healthy(low) is False  # one level of one seed below 0.25·128 = 32
    assert findings_mod.health(low) == {"usage": True, "perplexity": False, "healthy": False}
    unused = aggregate("RQ", {0: _final(0.01, usage=(0.9, 1.0), perplexity=(40.0, 33.0), size=128, levels=2)})
    assert findings_mod.health(unused) == {"usage": False, "perplexity": True, "healthy": False}
    vae = aggregate("VAE", {0: {**_final(0.01), "test": {"loss": 0.1, "recon_mse": 0.01, "psnr": 20.0,
                                                         "aux_loss": 0.1}}})
    assert findings_mod.health(vae) is None


def test_finding_4_from_the_sweep_counts():
    def summary(vq_ema, vq_learned, rq_ema, rq_learned, n=9):
        comparisons = {}
        for label, (e, l) in (("VQ 256", (vq_ema, vq_learned)), ("RQ 2×128", (rq_ema, rq_learned))):
            comparisons[label] = {"unstable_ema": e, "runs_ema": n, "unstable_learned": l, "runs_learned": n,
                                  "p": fisher_exact(e, n, l, n)}
        return {"comparisons": comparisons, "lrs": [1e-3, 2e-3, 5e-3], "seeds": 3}

    verdict = lambda s: findings_mod._finding_4(s)["verdict"]  # noqa: E731
    assert verdict(summary(0, 6, 2, 3)) == "reproduced"
    assert verdict(summary(0, 6, 0, 7)) == "not reproduced"  # RQ differs too
    assert verdict(summary(6, 0, 2, 2)) == "not reproduced"  # learned more stable for VQ
    assert verdict(summary(1, 2, 1, 2)) == "not distinguishable"
    assert findings_mod._finding_4(None)["verdict"] is None


# ------------------------------------------------------------------------------------------------ runner


def square(x):
    return x * x


def fail(message):
    raise RuntimeError(message)


def sleep_then(value, seconds):
    time.sleep(seconds)
    return value


def test_run_tasks_in_process_reports_failures_and_blocked_dependants():
    tasks = [Task("a", "s1", square, (3,)), Task("b", "s2", fail, ("boom",)),
             Task("c", "s3", square, (4,), after="b"), Task("d", "s4", square, (5,), after="a")]
    seen = []
    results, failures = run_tasks(tasks, 1, on_done=lambda task, value: seen.append(task.key))
    assert results == {"a": 9, "d": 25} and seen == ["a", "d"]
    assert [(f.key, f.error) for f in failures] == [("b", "RuntimeError: boom"),
                                                    ("c", "not run: it needs b, which failed")]
    with pytest.raises(ValueError):
        run_tasks([Task("a", "s", square, (1,)), Task("a", "s", square, (2,))])


@pytest.mark.slow
def test_run_tasks_in_worker_processes_gives_the_same_answers():
    tasks = [Task("a", "s1", sleep_then, (1, 0.2)), Task("b", "s2", fail, ("boom",)),
             Task("c", "s3", square, (4,), after="a"), Task("d", "s4", square, (5,), after="b"),
             Task("e", "s5", square, (6,))]
    results, failures = run_tasks(tasks, 2)
    assert results == {"a": 1, "c": 16, "e": 36}
    assert sorted((f.key, f.error) for f in failures) == [("b", "RuntimeError: boom"),
                                                          ("d", "not run: it needs b, which failed")]


def interrupt_parent_then_sleep(seconds):
    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(seconds)
    return "finished"


@pytest.mark.slow
def test_run_tasks_stop_request_cancels_waiting_tasks_and_raises():
    tasks = [Task("a", "s", interrupt_parent_then_sleep, (0.5,)), Task("b", "s", square, (2,), after="a")]
    with pytest.raises(TrainingInterrupted):
        run_tasks(tasks, 2)
