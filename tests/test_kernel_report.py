"""Static GPU check without a GPU: the kernels at their default configurations compile for sm_80 and sm_90 through
Triton's NVIDIA pipeline *with the run-time specialization*, with no register spills, shared memory within the
target's limit, tensor-core instructions wherever ``tl.dot`` feeds tensor cores, and issue 12's floors on the PTX
instructions per (row, code) pair of the search's inner loop.

The compile needs real ``@triton.jit`` functions, and the test session runs with ``TRITON_INTERPRET=1`` (which turns
them into interpreted ones), so the report runs as a subprocess without it: the same command a developer runs
(``--quick``: the floor classes and one of each other kernel, sm_80 and sm_90).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

pytestmark = pytest.mark.triton

EXPECTED_KERNELS = {"search", "statistics", "decode"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_report") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.kernel_report", "--quick", "--json", str(out)], env=env,
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.exists(), f"kernel_report wrote nothing:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text()), done


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
def test_every_kernel_compiles_without_spills_within_shared_memory(report, target):
    records, done = report
    mine = [r for r in records if r["target"] == target]
    assert EXPECTED_KERNELS <= {r["kernel"] for r in mine}
    bad = [f"{r['label']}: {r['problems']}" for r in mine if r["problems"]]
    assert not bad, "\n".join(bad) + "\n" + done.stdout[-6000:]
    for r in mine:
        assert r["ok"] and r["registers"] > 0 and r["stack"] == 0 and r["local"] == 0
        assert 0 <= r["shared"] <= r["shared_limit"]
        if r["tensor_cores_expected"]:
            assert r["mma_shapes"], f"{r['label']}: tl.dot on tensor-core operands emitted no MMA instruction"
    wgmma = any(s.startswith("m64") for r in mine for s in r["mma_shapes"])
    assert wgmma == (target == "sm_90")  # Hopper's warp-group MMA only on sm_90


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
def test_floors_on_ptx_instructions_per_pair(report, target):
    """D ≤ 16: ≤ 12 PTX instructions per (row, code) pair; D = 64: ≤ 16 (tf32x3: per MMA pass); measured on one
    code tile of the inner loop, under the run-time specialization."""
    records, _ = report
    floored = [r for r in records if r["target"] == target and r["floor"] is not None]
    assert {r["dim"] for r in floored} >= {4, 16, 64}
    for r in floored:
        value = r["per_pass"] if r["mode"] == "tf32x3" else r["per_pair"]
        assert 0 < value <= r["floor"], f"{r['label']} {r['config']}: {value:.2f} > {r['floor']}"
        assert r["sass_per_pair"] > 0  # the same tile found in the SASS


def test_specialization_is_the_run_time_one(report):
    """Pointers are 16-byte aligned and N, K (padded), the level counts divisible by 16 are specialized, exactly as
    the JIT does for those arguments (an int equal to 1 becomes a constexpr)."""
    records, _ = report
    search = [r for r in records if r["kernel"] == "search"]
    for r in search:
        spec = r["specialization"]
        assert spec["x_ptr"] == "div16" and spec["codebooks_ptr"] == "div16"
        assert spec["N"] == "div16" and spec["KP"] == "div16"  # N = 65,536 and K = 1,024 in the report
    nearest = [r for r in search if r["op"] == "nearest"]
    assert nearest and all(r["specialization"].get("NUM_ACTIVE") == "=1" for r in nearest)  # L = 1: a constexpr


def test_report_exit_status_and_table(report):
    records, done = report
    assert done.returncode == (1 if any(r["problems"] for r in records) else 0)
    assert "sm_80" in done.stdout and "sm_90" in done.stdout and "PTX/pair" in done.stdout
