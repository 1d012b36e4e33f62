"""The benchmark harness (benchmarks/harness.py): interleaving order, per-round ratios, percentiles, the correctness
gate, scoped environment variables, metadata and the results files. No real timing: a fake timer returns chosen
times, so every assertion is exact and the tests take milliseconds."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import harness

ROOT_RESULTS = harness.RESULTS_ROOT


def _recorder(log: list[str], name: str, answer=None):
    def call():
        log.append(name)
        return answer

    return call


class FakeTimer:
    """Runs the call and returns the next of the chosen times of the provider that ran."""

    def __init__(self, log: list[str], times: dict[str, list[float]]):
        self.log, self.times, self.used = log, {k: list(v) for k, v in times.items()}, {k: 0 for k in times}

    def __call__(self, call):
        call()
        name = self.log[-1]
        value = self.times[name][self.used[name] % len(self.times[name])]
        self.used[name] += 1
        return value


def test_rounds_rotate_the_order_after_the_gate():
    log: list[str] = []
    contenders = [harness.Contender(n, _recorder(log, n), check=None) for n in "ABC"]
    timer = FakeTimer(log, {n: [1.0] for n in "ABC"})
    harness.run(contenders, reps=3, timer=timer, measure_memory=False, log=lambda *_: None)
    assert log[:3] == ["A", "B", "C"]  # the gate calls, provider by provider
    assert log[3:] == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]  # round r starts at provider r mod 3


def test_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians():
    log: list[str] = []
    contenders = [harness.Contender(n, _recorder(log, n)) for n in ("slow", "fast")]
    # per-round ratios 10/1, 2/2, 30/3 → median 10; the ratio of medians would be 10/2 = 5
    timer = FakeTimer(log, {"slow": [10.0, 4.0, 30.0], "fast": [1.0, 2.0, 3.0]})
    outcomes = harness.run(contenders, reps=3, timer=timer, measure_memory=False, log=lambda *_: None)
    found = harness.ratio(outcomes, "slow", "fast")
    assert found["value"] == pytest.approx(10.0) and found["rounds"] == 3
    assert found["p20"] == pytest.approx(harness.percentile([10.0, 2.0, 10.0], 0.2))
    assert outcomes["slow"].summary()["median_ms"] == pytest.approx(10_000.0)
    assert harness.ratio(outcomes, "slow", "missing") is None


def test_ratio_pairs_only_rounds_where_both_were_timed():
    log: list[str] = []
    contenders = [harness.Contender("a", _recorder(log, "a")), harness.Contender("b", _recorder(log, "b"))]
    timer = FakeTimer(log, {"a": [1.0], "b": [0.5]})
    # the budget allows a one repetition (1 s + the next 1 s > 1.5 s) and b three: one common round
    outcomes = harness.run(contenders, reps=3, budget_s=1.5, timer=timer, measure_memory=False, log=lambda *_: None)
    assert outcomes["a"].rounds == [0] and outcomes["b"].rounds == [0, 1, 2]
    assert harness.ratio(outcomes, "b", "a") == {"value": 0.5, "p20": 0.5, "p80": 0.5, "rounds": 1}


def test_percentiles_interpolate_like_numpy():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert harness.percentile(values, 0.5) == 3.0
    assert harness.percentile(values, 0.2) == pytest.approx(1.8)
    assert harness.percentile(values, 0.8) == pytest.approx(4.2)
    assert harness.percentile([7.0], 0.2) == 7.0
    with pytest.raises(ValueError):
        harness.percentile([], 0.5)


def test_the_gate_rejects_a_wrong_provider_and_never_times_it():
    log: list[str] = []
    right = harness.Contender("right", _recorder(log, "right", answer=42), check=lambda a: (a == 42, f"got {a}"))
    wrong = harness.Contender("wrong", _recorder(log, "wrong", answer=41), check=lambda a: (a == 42, f"got {a}"))
    raises = harness.Contender("raises", lambda: 1 / 0)
    broken_check = harness.Contender("broken-check", _recorder(log, "broken-check", 1), check=lambda a: a.nope)
    skipped = harness.Contender("skipped", skip="not installed")
    outcomes = harness.run([right, wrong, raises, broken_check, skipped], reps=2, measure_memory=False,
                           log=lambda *_: None)
    assert outcomes["right"].status == "ok" and len(outcomes["right"].times) == 2
    assert outcomes["wrong"].status == "wrong" and outcomes["wrong"].times == [] and outcomes["wrong"].detail == "got 41"
    assert log.count("wrong") == 1  # the gate call only
    assert outcomes["raises"].status == "error" and "ZeroDivisionError" in outcomes["raises"].detail
    assert outcomes["broken-check"].status == "wrong" and "the check raised" in outcomes["broken-check"].detail
    assert outcomes["skipped"].status == "skipped" and outcomes["skipped"].detail == "not installed"
    records = harness.timing_records({"case": 1}, outcomes, [("wrong", "right"), ("right", "right")])
    timing = {r["provider"]: r for r in records if r["metric"] == "time_ms"}
    assert timing["wrong"]["value"] is None and timing["wrong"]["status"] == "wrong"
    assert [r["provider"] for r in records if r["metric"] == "time_ratio"] == ["right"]  # never a ratio of "wrong"


def test_env_is_set_around_each_call_of_its_provider_only(monkeypatch):
    monkeypatch.delenv("FASTRQ_HARNESS_TEST", raising=False)
    seen: list[tuple[str, str | None]] = []

    def reader(name):
        return lambda: seen.append((name, os.environ.get("FASTRQ_HARNESS_TEST")))

    contenders = [harness.Contender("with", reader("with"), env={"FASTRQ_HARNESS_TEST": "0"}),
                  harness.Contender("without", reader("without"))]
    harness.run(contenders, reps=2, measure_memory=False, log=lambda *_: None)
    assert {value for name, value in seen if name == "with"} == {"0"}
    assert {value for name, value in seen if name == "without"} == {None}
    assert "FASTRQ_HARNESS_TEST" not in os.environ


def test_scaled_times_are_marked_extrapolated_and_budget_counts_real_time():
    log: list[str] = []
    sub = harness.Contender("naive", _recorder(log, "naive"), scale=4.0)
    timer = FakeTimer(log, {"naive": [1.0]})
    outcomes = harness.run([sub], reps=5, budget_s=2.5, timer=timer, measure_memory=False, log=lambda *_: None)
    assert outcomes["naive"].times == [4.0, 4.0]  # 1 s real each; the third would pass 2.5 s of real time
    (timing,) = [r for r in harness.timing_records({}, outcomes) if r["metric"] == "time_ms"]
    assert timing["extrapolated"] is True and timing["value"] == 4000.0


def test_peak_memory_is_measured_on_the_gate_call():
    if harness.memory.peak_supported() is not None:
        pytest.skip(harness.memory.peak_supported())
    outcomes = harness.run([harness.Contender("small", lambda: sum(range(10)))], reps=1, log=lambda *_: None)
    assert outcomes["small"].peak_bytes is not None and outcomes["small"].peak_bytes >= 0
    records = harness.timing_records({"N": 10}, outcomes, per_row=10)
    assert {r["metric"] for r in records} == {"time_ms", "peak_mem_bytes", "ns_per_row"}


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        harness.run([harness.Contender("a", lambda: 0), harness.Contender("a", lambda: 0)], measure_memory=False)


def test_metadata_and_results_files(tmp_path):
    meta = harness.collect_metadata("unit", {"n": 3})
    for key in ("date", "timestamp", "git_revision", "git_dirty", "git_dirty_files", "versions", "cpu", "cpu_flags",
                "threads", "environment", "settings", "peak_memory_method", "hostname", "load_average"):
        assert key in meta, key
    assert meta["benchmark"] == "unit" and meta["settings"] == {"n": 3}
    assert set(meta["versions"]) >= {"torch", "numpy", "faiss-cpu", "vector-quantize-pytorch", "triton", "python"}
    assert meta["git_revision"] is None or len(meta["git_revision"]) == 40
    if meta["cpu_flags"] is not None:
        assert set(meta["cpu_flags"]) == set(harness.CPU_FLAGS)
    assert all(k.startswith("FASTRQ_") or k in harness.ENV_NAMES for k in meta["environment"])

    log: list[str] = []
    outcomes = harness.run([harness.Contender("a", _recorder(log, "a", 1), check=lambda v: (True, "fine")),
                            harness.Contender("b", _recorder(log, "b", 1))], reps=2, measure_memory=False,
                           log=lambda *_: None)
    records = harness.timing_records({"N": 4, "D": 2}, outcomes, [("b", "a")], per_row=4)
    path = harness.write_results("unit", records, meta, "| a | b |", out_dir=tmp_path)
    assert path == tmp_path / "unit.json" and (tmp_path / "unit.md").read_text().startswith("| a | b |")
    document = json.loads(path.read_text())
    assert document["schema"] == harness.SCHEMA and document["benchmark"] == "unit"
    assert document["meta"] == {**meta, "load_average_end": document["meta"]["load_average_end"]}
    for r in document["records"]:
        assert {"provider", "metric", "unit", "value", "N", "D", "git_revision", "versions", "date"} <= set(r)
        assert r["threads"] == meta["threads"]["torch"]
    metrics = {(r["provider"], r["metric"]) for r in document["records"]}
    assert metrics == {("a", "time_ms"), ("b", "time_ms"), ("a", "ns_per_row"), ("b", "ns_per_row"), ("b", "time_ratio")}
    assert harness.read_results(path) == document
    assert harness.select(document["records"], provider="b", metric="time_ratio")[0]["baseline"] == "a"
    assert harness.results_dir("2026-01-02") == ROOT_RESULTS / "2026-01-02"


def test_read_results_converts_the_older_ops_files(tmp_path):
    legacy = {"meta": {"preset": "full", "timestamp": "2026-11-24T01:36:07+00:00"}, "results": [
        {"op": "nearest_code", "provider": "torch", "D": 4, "K": 8, "L": None, "N": 16, "status": "ok",
         "median_ms": 2.0, "reps": 1, "peak_mem_bytes": 10},
        {"op": "nearest_code", "provider": "naive", "D": 4, "K": 8, "L": None, "N": 16, "status": "ok",
         "median_ms": 6.0, "reps": 1, "extrapolated": True}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(legacy))
    document = harness.read_results(path)
    assert document["legacy"] and document["meta"]["date"] == "2026-11-24"
    (ratio,) = harness.select(document["records"], metric="time_ratio")
    assert ratio["provider"] == "naive" and ratio["value"] == 3.0 and ratio["of_medians"] and ratio["extrapolated"]
    assert harness.select(document["records"], metric="peak_mem_bytes")[0]["value"] == 10
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a fastrq benchmark"):
        harness.read_results(path)


def test_contention_is_recorded_beside_the_times():
    log: list[str] = []
    outcomes = harness.run([harness.Contender("a", _recorder(log, "a"))], reps=3, measure_memory=False,
                           log=lambda *_: None)
    summary = outcomes["a"].summary()
    assert len(outcomes["a"].preemptions) == 3 and summary["preemptions_per_call"] >= 0
    assert summary["cpu_per_wall"] >= 0


def test_contended_flags_calls_that_other_processes_kept_preempting():
    busy = {"value": 400.0, "preemptions_per_call": 100, "cpu_per_wall": 1.0, "threads": 2}  # 250/s, half the CPU
    assert harness.contended(busy)
    assert not harness.contended({**busy, "cpu_per_wall": 1.9})  # all the CPU it could use: preempted by itself
    assert not harness.contended({**busy, "preemptions_per_call": 2})  # a quiet machine
    assert not harness.contended({**busy, "value": 10_000.0})  # 10 per second of a long call
    assert harness.contended({**busy, "threads": 1, "cpu_per_wall": 0.5})
    assert not harness.contended({**busy, "value": None})
    assert not harness.contended({"value": 5.0})  # not recorded
