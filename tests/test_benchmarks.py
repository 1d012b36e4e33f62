"""Benchmarks: pytest-benchmark runs of the ops at small sizes (reference and torch backends), the benchmark's
correctness checks (they must reject wrong codes), the peer adapters against the float64 reference, and a tiny smoke
run of the quick preset whose output files must be written and well-formed. The harness itself is tested in
tests/test_harness.py, the module-step benchmark in tests/test_module_step.py.

pytest-benchmark is disabled by default (pyproject ``--benchmark-disable``: each benchmarked function runs once, as a
test); ``pytest tests/test_benchmarks.py --benchmark-enable -k bench_`` times them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrq
from benchmarks import codes_check, harness, ops_bench, peers

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------- pytest-benchmark, small
SMALL = dict(n=2048, d=32, k=256, levels=4)
BACKENDS = [
    pytest.param("reference", None, id="naive"),
    pytest.param("torch", "auto", id="torch"),
    pytest.param("torch", "0", id="torch-pure"),
]


@pytest.fixture(scope="module")
def small_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SMALL["n"], SMALL["d"], generator=gen)
    codebooks = torch.randn(SMALL["levels"], SMALL["k"], SMALL["d"], generator=gen) * 0.75 ** torch.arange(4.0)[:, None, None]
    return x, codebooks


def _within(x: torch.Tensor, book: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Rows whose chosen code is within tolerance of the float64 true minimum."""
    x64, book64 = x.double(), book.double()
    _, best = fastrq.nearest_code(x64, book64, backend="reference")
    chosen = book64[codes]
    got = (x64 - chosen).square().sum(1)
    return got <= best + 1e-5 * (x64.square().sum(1) + chosen.square().sum(1))


def _with_faiss_mode(monkeypatch, small_inputs, faiss_mode):
    """The inputs, with FASTRQ_FAISS set for this test when the variant names a mode."""
    if faiss_mode is not None:
        monkeypatch.setenv("FASTRQ_FAISS", faiss_mode)
    return small_inputs


@pytest.mark.parametrize("backend, faiss_mode", BACKENDS)
def test_bench_nearest_code(benchmark, monkeypatch, small_inputs, backend, faiss_mode):
    x, codebooks = _with_faiss_mode(monkeypatch, small_inputs, faiss_mode)
    benchmark.group = "nearest_code"
    codes, sqdist = benchmark(fastrq.nearest_code, x, codebooks[0], backend=backend)
    assert codes.shape == (SMALL["n"],) and sqdist.dtype == torch.float32
    assert bool(_within(x, codebooks[0], codes).all())


@pytest.mark.parametrize("backend, faiss_mode", BACKENDS)
def test_bench_residual_quantize(benchmark, monkeypatch, small_inputs, backend, faiss_mode):
    x, codebooks = _with_faiss_mode(monkeypatch, small_inputs, faiss_mode)
    benchmark.group = "residual_quantize"
    quantized, codes = benchmark(fastrq.residual_quantize, x, codebooks, backend=backend)
    assert codes.shape == (SMALL["n"], SMALL["levels"])
    residual = x.double()
    for level, book in enumerate(codebooks):  # every level: nearest code of that provider's own residual
        assert bool(_within(residual, book, codes[:, level]).all())
        residual = residual - book.double()[codes[:, level]]
    torch.testing.assert_close(quantized.double(), x.double() - residual, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_bench_residual_decode(benchmark, small_inputs, backend):
    x, codebooks = small_inputs
    quantized, codes = fastrq.residual_quantize(x, codebooks, backend="torch")
    benchmark.group = "residual_decode"
    decoded = benchmark(fastrq.residual_decode, codes, codebooks, backend=backend)
    torch.testing.assert_close(decoded, quantized, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_bench_ema_update(benchmark, small_inputs, backend):
    x, codebooks = small_inputs
    codes, _ = fastrq.nearest_code(x, codebooks[0], backend="torch")
    state = (codebooks[0].clone(), torch.ones(SMALL["k"]), codebooks[0].clone())
    benchmark.group = "ema_update_"

    def step():
        codebook, cluster_size, embed_sum = (t.clone() for t in state)
        fastrq.ema_update_(codebook, cluster_size, embed_sum, x, codes, decay=0.0, backend=backend)
        return codebook, cluster_size

    codebook, cluster_size = benchmark(step)
    counts = torch.bincount(codes, minlength=SMALL["k"]).float()
    torch.testing.assert_close(cluster_size, counts)  # decay 0: the batch counts
    used = counts > 0
    means = torch.zeros_like(codebook).index_add_(0, codes, x) / counts.clamp_min(1)[:, None]
    n = counts.sum()
    smoothed = (counts + 1e-5) / (n + SMALL["k"] * 1e-5) * n
    torch.testing.assert_close(codebook[used], (means * counts[:, None] / smoothed[:, None])[used], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------- the benchmark's checks
def _case_inputs(op: str, n=512, d=8, k=64, levels=3):
    case = ops_bench.Case(op, d, k, levels if op == "residual_quantize" else 1, n)
    x, books = ops_bench.make_inputs(case)
    return case, x, books


def _truth(x, books, base):
    sample = torch.arange(0, x.shape[0], 3)
    return codes_check.TrueMinimum(x.double(), books.double(), base if base.dim() == 2 else base[:, None], sample)


def test_check_nearest_accepts_right_and_rejects_wrong_codes():
    _, x, books = _case_inputs("nearest_code")
    base, _ = fastrq.nearest_code(x, books[0], backend="torch")
    truth = _truth(x, books, base)
    assert codes_check.check_nearest(x, books[0], base, base, truth)[0]
    wrong = base.clone()
    wrong[7] = (wrong[7] + 1) % books.shape[1]  # one row, a farther code
    ok, detail = codes_check.check_nearest(x, books[0], wrong, base, truth)
    assert not ok and "1 of 512 rows" in detail
    assert not codes_check.check_nearest(x, books[0], base.int(), base, truth)[0]  # wrong dtype
    assert not codes_check.check_nearest(x, books[0], base[:-1] + 1000, base, truth)[0]  # out of range


def test_check_residual_accepts_right_and_rejects_wrong_codes():
    _, x, books = _case_inputs("residual_quantize")
    _, base = fastrq.residual_quantize(x, books, backend="torch")
    truth = _truth(x, books, base)
    assert codes_check.check_residual(x, books, base, base, truth)[0]
    for level in range(books.shape[0]):
        wrong = base.clone()
        wrong[:, level] = (wrong[:, level] + 1) % books.shape[1]  # a non-greedy choice at this level
        assert not codes_check.check_residual(x, books, wrong, base, truth)[0], level
    # another valid greedy path is accepted: the check judges each provider on its own residuals. Make code j of
    # level 0 a near-twin of the code c that sampled row 0 chose, and swap the twins in the rows that chose either (their later
    # residuals shift slightly, so the check recomputes their true minima)
    c = int(base[0, 0])
    j = (c + 1) % books.shape[1]
    twin = books.clone()
    twin[0, j] = twin[0, c] + 1e-6
    _, base = fastrq.residual_quantize(x, twin, backend="torch")
    truth = _truth(x, twin, base)
    other = base.clone()
    other[base[:, 0] == c, 0] = j  # the twins swapped: an equally near choice
    other[base[:, 0] == j, 0] = c
    assert int(other[0, 0]) != int(base[0, 0])  # row 0 is sampled and moved
    ok, detail = codes_check.check_residual(x, twin, other, base, truth)
    assert ok, detail


def test_run_case_reports_a_wrong_provider_and_does_not_time_it():
    def prepare_wrong(op, x, books, settings):
        return peers.Prepared(lambda: torch.zeros(x.shape[0], dtype=torch.long), lambda codes: codes, rows=x.shape[0])

    liar = peers.Provider("liar", "always code 0", ("nearest_code",), lambda: None, prepare_wrong)
    torch_provider = next(p for p in ops_bench.FASTRQ_PROVIDERS if p.name == "torch")
    case = ops_bench.Case("nearest_code", 8, 64, 1, 512)
    settings = dict(reps=2, budget_s=5.0, naive_rows=512, seed=0, mem_cap_bytes=1 << 30)
    found = ops_bench.run_case(case, [liar, torch_provider], settings, log=lambda *_: None)
    records = {r["provider"]: r for r in found if r["metric"] == "time_ms"}
    assert records["liar"]["status"] == "wrong" and records["liar"]["value"] is None
    assert "farther" in records["liar"]["check"]
    assert records["torch"]["status"] == "ok" and records["torch"]["reps"] == 2
    assert not [r for r in found if r["metric"] == "time_ratio" and r["provider"] == "liar"]  # never timed


# ------------------------------------------------------------------------------------- peer adapters vs reference
AVAILABLE_PEERS = [p for p in peers.PEERS if p.unavailable_reason() is None]


@pytest.mark.skipif(not AVAILABLE_PEERS, reason="no peer library installed (pip install 'fastrq[bench]')")
@settings(max_examples=8)
@given(
    n=st.integers(1, 300), d=st.sampled_from([1, 3, 16, 33]), log_k=st.integers(0, 7), levels=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1), cap=st.sampled_from([1 << 30, 1 << 12]),
)
def test_peer_adapters_agree_with_the_reference(n, d, log_k, levels, seed, cap):
    """Every available peer, on our codebooks, returns greedy codes within tolerance of the float64 reference
    (with and without row chunking)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    books = torch.randn(levels, 1 << log_k, d, generator=gen)
    for provider in AVAILABLE_PEERS:
        for op in provider.ops:
            use = books if op == "residual_quantize" else books[:1]
            prepared = provider.prepare(op, x, use, {"mem_cap_bytes": cap})
            codes = prepared.to_codes(prepared.call())
            codes = codes if codes.dim() == 2 else codes[:, None]
            assert codes.shape == (n, use.shape[0]) and codes.dtype == torch.int64, provider.name
            residual = x.double()
            for level, book in enumerate(use):
                assert bool(_within(residual, book, codes[:, level]).all()), (provider.name, op, level)
                residual = residual - book.double()[codes[:, level]]


def _peer(name: str):
    found = next(p for p in peers.PEERS if p.name == name)
    if found.unavailable_reason() is not None:
        pytest.skip(f"{name}: {found.unavailable_reason()}")
    return found


def test_faiss_rq_refuses_a_non_power_of_two_codebook():
    with pytest.raises(peers.NotApplicable, match="2\\^b"):
        _peer("faiss-rq").prepare("residual_quantize", torch.randn(4, 3), torch.randn(2, 100, 3), {"mem_cap_bytes": 1 << 30})


def test_faiss_fused_gives_faiss_flat_codes_and_restores_the_callers_threshold():
    import faiss

    x, codebooks = torch.randn(300, 8), torch.randn(2, 64, 8)
    before = faiss.cvar.distance_compute_blas_threshold
    for op in ("nearest_code", "residual_quantize"):
        fused, flat = (_peer(name).prepare(op, x, codebooks, {"mem_cap_bytes": 1 << 30})
                       for name in ("faiss-fused", "faiss-flat"))
        assert torch.equal(fused.to_codes(fused.call()), flat.to_codes(flat.call()))
        assert faiss.cvar.distance_compute_blas_threshold == before


# ------------------------------------------------------------------------------------------ quick-preset smoke
def test_quick_preset_covers_a_real_batch_size():
    assert 1024 in ops_bench.PRESETS["quick"]["ns"]  # issue 10: the quick preset includes N = 1,024


def test_quick_preset_smoke_run_writes_well_formed_outputs(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "benchmarks.ops_bench", "--preset", "quick", "--n", "512", "--reps", "2",
           "--naive-rows", "128", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "### nearest_code" in done.stdout and "### residual_quantize" in done.stdout

    result = harness.read_results(out / "ops_quick.json")
    assert result["schema"] == harness.SCHEMA and not result.get("legacy")
    meta = result["meta"]
    assert meta["preset"] == "quick" and meta["threads"]["torch"] == 2 and meta["versions"]["torch"] == torch.__version__
    for key in ("git_revision", "git_dirty", "hostname", "cpu", "cpu_flags", "timestamp", "date", "environment",
                "peak_memory_method"):
        assert key in meta
    records = result["records"]
    timings = [r for r in records if r["metric"] == "time_ms"]
    preset = ops_bench.PRESETS["quick"]
    expected_cases = len(preset["dims"]) * len(preset["ks"]) * (1 + len(preset["levels"]))
    assert len(timings) == expected_cases * len(ops_bench.ALL_PROVIDERS)  # one timing record per case × provider
    assert not [r for r in timings if r["status"] in ("wrong", "error")], [r for r in timings if r["status"] != "ok"]
    timed = [r for r in timings if r["status"] == "ok"]
    assert {r["provider"] for r in timed} >= {"naive", "torch", "torch-pure", "cdist", "gemm-floor"}
    assert all("not checked" in r["check"] for r in timed if r["provider"] == "gemm-floor")
    peaks = {(r["op"], r["D"], r["K"], r["L"], r["provider"]): r for r in records if r["metric"] == "peak_mem_bytes"}
    ratios = {(r["op"], r["D"], r["K"], r["L"], r["provider"]): r for r in records if r["metric"] == "time_ratio"}
    for r in timed:
        for key in ("op", "provider", "D", "K", "L", "N", "value", "p20_ms", "p50_ms", "p80_ms", "reps", "versions",
                    "git_revision", "hostname", "cpu", "threads", "date"):
            assert key in r, key
        assert r["N"] == 512 and 1 <= r["reps"] <= 2 and len(r["samples_ms"]) == r["reps"]
        assert 0 < r["p20_ms"] <= r["value"] <= r["p80_ms"] and r["p50_ms"] == r["value"]
        key = (r["op"], r["D"], r["K"], r["L"], r["provider"])
        assert key not in peaks or peaks[key]["value"] >= 0
        assert (r["L"] is None) == (r["op"] == "nearest_code")
        assert r["extrapolated"] == (r["provider"] == "naive")  # naive ran 128 of the 512 rows
        if r["provider"] != "torch":  # every timed provider has its per-round ratio to fastrq torch
            assert ratios[key]["baseline"] == "torch" and ratios[key]["value"] > 0
            assert ratios[key]["extrapolated"] == (r["provider"] == "naive")
    for r in timings:
        if r["status"] == "skipped":
            assert r["check"]  # a reason is given

    markdown = (out / "ops_quick.md").read_text()
    assert "torch ms" in markdown and "/torch" in markdown and "Targets" in markdown
    png = (out / "ops_quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out / "ops_quick.png").shape[0] > 200


# ------------------------------------------------------------------------- the other scripts on the harness
def test_sampling_smoke_run_checks_tokens_and_writes_the_speedup(tmp_path):
    from benchmarks import sampling

    argv = ["--batch", "1", "2", "--repeats", "2", "--dim", "16", "--heads", "2", "--spatial-layers", "1",
            "--depth-layers", "1", "--positions", "4", "--codebook-size", "8", "--out", str(tmp_path)]
    assert sampling.main(argv) == 0
    document = harness.read_results(tmp_path / "sampling.json")
    assert document["meta"]["settings"]["batch"] == [1, 2]
    for batch in (1, 2):
        timings = harness.select(document["records"], metric="time_ms", batch=batch)
        assert {r["provider"]: r["status"] for r in timings} == {"cached": "ok", "uncached": "ok"}
        assert all("the same tokens" in r["check"] for r in timings)
        (speedup,) = harness.select(document["records"], metric="time_ratio", batch=batch)
        assert (speedup["provider"], speedup["baseline"]) == ("uncached", "cached") and speedup["value"] > 0
    table = sampling.render_table(document)
    assert table.count("| yes |") == 2 and "sampling.json" in (tmp_path / "sampling.md").read_text()


def test_train_step_is_the_module_step_at_one_shape(tmp_path):
    from benchmarks import train_step

    result = train_step.main(["--n", "128", "--dim", "8", "--codebook-size", "16", "--levels", "2", "--repeats", "2",
                              "--out", str(tmp_path)])
    document = harness.read_results(tmp_path / "train_step.json")
    assert document["meta"]["settings"]["shapes"]["custom"] == {"label": "D=8 K=16 L=2", "dim": 8, "num_codes": 16,
                                                                 "levels": 2}
    timings = {r["provider"]: r for r in harness.select(document["records"], metric="time_ms")}
    assert set(timings) == {"fastrq", "vqp", "search"} and all(r["status"] == "ok" for r in timings.values())
    assert {(r["provider"], r["baseline"]) for r in harness.select(document["records"], metric="time_ratio")} == {
        ("vqp", "fastrq"), ("fastrq", "search")}
    assert result["path"] == str(tmp_path / "train_step.json")


def test_kernel_layouts_gates_every_layout_on_the_default_codes(tmp_path):
    """The layouts benchmark (quick preset, the default build and pure PyTorch: the other layouts' builds take
    minutes) writes well-formed records; every timed layout passed the bitwise gate against the default build."""
    from benchmarks import kernel_layouts

    result = kernel_layouts.main(["--preset", "quick", "--layouts", "default", "pure", "--reps", "2",
                                  "--out", str(tmp_path)])
    document = harness.read_results(tmp_path / "kernel_layouts.json")
    timings = harness.select(document["records"], metric="time_ms")
    assert {r["provider"] for r in timings} == {"default", "pure"}
    assert all(r["status"] == "ok" and r["check"] == "bitwise the default's codes" for r in timings)
    assert {(r["shape"], r["N"]) for r in timings} == {("mnist-vq", 256), ("dac", 256)}
    ratios = harness.select(document["records"], metric="time_ratio")
    assert {(r["provider"], r["baseline"]) for r in ratios} == {("pure", "default")}
    assert "| MNIST VQ" in (tmp_path / "kernel_layouts.md").read_text()
    assert result["path"] == str(tmp_path / "kernel_layouts.json")


def test_native_bf16_smoke_run_gates_every_provider_bitwise(tmp_path):
    """The native bf16-pass benchmark (quick preset, 64 rows): every provider's codes equal the float32 search's
    (or, without the pass in this build, every case is reported skipped with the reason), the re-search rate of a
    codebook of twins is 1, and the table renders."""
    from benchmarks import native_bf16
    from fastrq.kernels.cpu import launch

    native_bf16.main(["--preset", "quick", "--n", "64", "--out", str(tmp_path)])
    document = harness.read_results(tmp_path / "native_bf16.json")
    timings = harness.select(document["records"], metric="time_ms")
    assert {r["provider"] for r in timings} == {"float32", "bf16", "auto"} and len(timings) == 12
    table = native_bf16.render_table(document)
    if launch.bf16_search_available():
        assert all(r["status"] == "ok" and r["check"] == "codes equal to the float32 search's" for r in timings)
        rates = {(r["L"], r["data"]): r["value"] for r in harness.select(document["records"], metric="research_rate")}
        assert rates[(1, "twins")] == 1.0 and rates[(3, "twins")] == 1.0 and rates[(1, "random")] < 1.0
        ratios = harness.select(document["records"], metric="time_ratio")
        assert {(r["provider"], r["baseline"]) for r in ratios} == {("bf16", "float32"), ("auto", "float32")}
        assert table.count("| nearest_code |") == 2 and table.count("| residual_quantize |") == 2
    else:
        assert all(r["status"] == "skipped" and "no bf16 pass" in r["check"] for r in timings)
        assert "Not timed" in table
    assert "native_bf16.json" in (tmp_path / "native_bf16.md").read_text()


def test_allocator_env_smoke_run(tmp_path):
    """The allocator benchmark (quick preset): one child process per setting, each started with exactly its own
    environment (the script checks what the child saw and raises otherwise), one record per setting with the
    default's ratio 1, and the table renders."""
    from benchmarks import allocator_env

    allocator_env.main(["--preset", "quick", "--out", str(tmp_path)])
    document = harness.read_results(tmp_path / "allocator_env.json")
    records = document["records"]
    assert [r["setting"] for r in records] == list(allocator_env.SETTINGS)
    assert all(r["ms"] > 0 and len(r["ms_rounds"]) == 1 for r in records)
    assert next(r for r in records if r["setting"] == "default")["ratio_to_default"] == 1.0
    table = allocator_env.render_table(document)
    assert table.count("| MNIST VQ") == 1 and "MALLOC_TRIM_THRESHOLD_" in table
