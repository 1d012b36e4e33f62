"""The GPU validation kit's dry run: ``benchmarks/gpu_validate.sh --dry-run`` runs the kit's sections on the CPU under
the interpreter with tiny shapes (the GPU-only sections say they were skipped) and writes its results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_validate_dry_run_writes_a_passing_report(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_validate.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["environment"]["interpreter"] is True
    for name in ("selfcheck", "correctness", "ties", "offset", "determinism", "timing"):
        assert results[name]["ok"], (name, results[name])
    for name in ("precompile", "int64", "registers"):
        assert "skipped" in results[name]
    runs = results["correctness"]["runs"]
    assert {r["precision"] for r in runs} == {"tf32x3", "ieee", "bf16", "certified", "fp64"}
    assert all(r["quantized_bitwise_decode"] and r["counts_exact"] for r in runs)
    assert any(r.get("provider") == "ratio bf16:tf32:tf32x3" for r in results["timing"]["rows"])
    report = (tmp_path / "report.md").read_text()
    assert "DRY RUN" in report and "| correctness | ok |" in report
