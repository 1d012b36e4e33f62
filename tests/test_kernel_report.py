"""Static GPU check without a GPU: every kernel, at every default configuration, compiles for sm_80 and sm_90
through Triton's NVIDIA pipeline, with no register spills (stack frame and local memory 0 in the cubin), and with
tensor-core instructions wherever ``tl.dot`` feeds tensor cores.

The compile needs real ``@triton.jit`` functions, and the test session runs with ``TRITON_INTERPRET=1`` (which turns
them into interpreted ones), so the report runs as a subprocess without it: the same command a developer runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

pytestmark = pytest.mark.triton

EXPECTED_KERNELS = {"rq_registers_kernel", "rq_chunked_kernel", "decode_kernel", "segment_sum_kernel",
                    "commitment_backward_kernel", "atomic_sums_kernel"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_report") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.kernel_report", "--json", str(out)], env=env,
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.exists(), f"kernel_report wrote nothing:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text()), done


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
def test_every_kernel_compiles_without_spills(report, target):
    records, done = report
    mine = [r for r in records if r["target"] == target]
    assert EXPECTED_KERNELS <= {r["kernel"] for r in mine}
    assert sum(r["kernel"].startswith("rq_") for r in mine) >= 20  # every D class × precision mode
    bad = [f"{r['kernel']} {r['label']}: {r['problems']}" for r in mine if r["problems"]]
    assert not bad, "\n".join(bad) + "\n" + done.stdout[-6000:]
    for r in mine:
        assert r["ok"] and r["registers"] > 0 and r["stack"] == 0 and r["local"] == 0
        if r["uses_dot"]:
            assert r["mma"] or r["wgmma"], f"{r['label']}: tl.dot on tensor-core operands emitted neither mma nor wgmma"
    assert any(r["wgmma"] for r in mine) == (target == "sm_90")  # Hopper's warp-group MMA only on sm_90


def test_report_exit_status_and_table(report):
    records, done = report
    assert done.returncode == (1 if any(r["problems"] for r in records) else 0)
    assert "sm_80" in done.stdout and "sm_90" in done.stdout and "registers" not in done.stderr
