"""The module-step benchmark (benchmarks/module_step.py, issue 10): a tiny smoke run whose results file and table are
well-formed, the gate rejecting a peer that starts from other codebooks, the memory cap, and the pure-PyTorch
provider's environment."""

from __future__ import annotations

import re

import pytest
import torch

import fastrq

from benchmarks import harness, module_step

TINY = module_step.Shape("tiny RQ", 4, 16, 2)


def test_smoke_run_writes_the_results_and_the_table(tmp_path):
    lines: list[str] = []
    result = module_step.main(["--preset", "quick", "--shapes", "mnist-vq", "mnist-rq2", "--n", "64", "--reps", "2",
                               "--share", "rq2x128", "--share-batch", "4", "--share-reps", "2", "--out", str(tmp_path)],
                              log=lines.append)
    document = harness.read_results(tmp_path / "module_step.json")
    assert document["schema"] == harness.SCHEMA and document["meta"]["threads"]["torch"] == 2
    assert "faiss_blas_threshold" in document["meta"] or document["meta"]["versions"]["faiss-cpu"] is None
    records = document["records"]
    timings = [r for r in records if r["metric"] == "time_ms" and "shape" in r]
    assert {(r["shape"], r["provider"]) for r in timings} == {
        (s, p) for s in ("mnist-vq", "mnist-rq2") for p in module_step.PROVIDERS}
    for r in timings:
        assert r["status"] == "ok", (r["provider"], r["check"])
        assert r["N"] == 64 and 1 <= r["reps"] <= 2 and r["value"] > 0 and r["p20_ms"] <= r["value"] <= r["p80_ms"]
        (per_row,) = harness.select(records, metric="ns_per_row", shape=r["shape"], provider=r["provider"])
        assert per_row["value"] == pytest.approx(r["value"] * 1e6 / 64)
    for shape in ("mnist-vq", "mnist-rq2"):
        pairs = {(r["provider"], r["baseline"]) for r in harness.select(records, metric="time_ratio", shape=shape)}
        assert pairs == set(module_step.RATIOS)
    (share,) = harness.select(records, metric="quantizer_share")
    assert share["model"] == "rq2x128" and share["N"] == 4 * 7 * 7 and share["value"] < 1
    assert {r["provider"]: r["status"] for r in harness.select(records, metric="time_ms", model="rq2x128")} == {
        "model": "ok", "identity": "ok", "quantizer": "ok"}
    (alone,) = harness.select(records, metric="quantizer_alone_share")
    assert alone["model"] == "rq2x128" and 0 < alone["value"]

    table = module_step.render_table(document)
    assert table == module_step.render_table(result)  # rendered from the file: the same as from the run
    assert len(re.findall(r"\| MNIST RQ 2×128( †)? \| 64 \|", table)) == 1  # † only when the machine was busy
    assert re.search(r"\| rq2x128 \(4\)( †)? \| 196 \|", table)
    assert "module_step.json" in (tmp_path / "module_step.md").read_text()


def test_the_gate_rejects_a_peer_that_starts_from_other_codebooks(monkeypatch):
    pytest.importorskip("vector_quantize_pytorch")
    from vector_quantize_pytorch import ResidualVQ

    def fresh_vqp(shape, codebooks):  # its own random codebooks: another answer
        return ResidualVQ(dim=shape.dim, codebook_size=shape.num_codes, num_quantizers=shape.levels,
                          kmeans_init=False, rotation_trick=False).train()

    monkeypatch.setattr(module_step, "_vqp_module", fresh_vqp)
    settings = dict(seed=0, mem_cap_bytes=1 << 30)
    outcomes = harness.run(module_step.contenders(TINY, 256, ["fastrq", "vqp"], settings), reps=1,
                           measure_memory=False, log=lambda *_: None)
    assert outcomes["fastrq"].status == "ok"
    assert outcomes["vqp"].status == "wrong" and outcomes["vqp"].times == []


def test_memory_cap_skips_with_the_estimate_and_the_no_faiss_providers_set_their_switches_for_themselves_only():
    settings = dict(seed=0, mem_cap_bytes=1024)
    found = {c.name: c for c in module_step.contenders(TINY, 64, list(module_step.PROVIDERS), settings)}
    for name in ("vqp", "naive"):
        assert found[name].skip is not None and "exceeds --mem-cap-gib" in found[name].skip
    assert found["plain"].env == {"FASTRQ_FAISS": "0"}
    assert found["pure"].env == {"FASTRQ_FAISS": "0", "FASTRQ_CPU_KERNEL": "0"}
    assert all(c.env == {} for name, c in found.items() if name not in ("plain", "pure"))


def test_identity_quantizer_keeps_the_latent():
    z = torch.randn(3, 4, 7, 7)
    out, codes, loss, stats = module_step.IdentityQuantizer(2)(z, return_stats=True)
    assert torch.equal(out, z) and codes.shape == (3, 7, 7, 2) and float(loss) == 0.0 and stats == {}
    quantizer = fastrq.VectorQuantizer(4, 16, channel_first=True)
    assert out.stride() == quantizer(z)[0].stride()  # the layout the decoder gets from the real quantizer


def test_only_the_references_are_skipped_for_time():
    settings = dict(seed=0, mem_cap_bytes=1 << 40, max_call_s=1.0,
                    ns_per_row={name: (64, 1e9) for name in module_step.PROVIDERS})  # 1 s per row at N = 64
    found = {c.name: c for c in module_step.contenders(TINY, 128, list(module_step.PROVIDERS), settings)}
    assert {name for name, c in found.items() if c.skip} == {"vqp", "naive"}
    assert "exceeds --max-call-s 1" in found["naive"].skip and "N = 64" in found["naive"].skip
