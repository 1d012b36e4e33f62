"""Static GPU check without a GPU: every kernel, at every default configuration, compiles for sm_80 and sm_90
through Triton's NVIDIA pipeline, with no register spills (stack frame and local memory 0 in the cubin), and with
tensor-core instructions wherever ``tl.dot`` feeds tensor cores."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

from benchmarks.kernel_report import collect, format_table, problems, rows  # noqa: E402
from fastrq.kernels.static_check import TARGETS, cuobjdump_path, kernel_configs  # noqa: E402

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_kernel_compiles_without_spills(target):
    import os

    assert os.access(cuobjdump_path(), os.X_OK), "triton's bundled cuobjdump is missing"
    reports = collect((target,))
    names = {r.config.name for r in reports}
    assert {"rq_registers_kernel", "rq_chunked_kernel", "decode_kernel", "segment_sum_kernel",
            "commitment_backward_kernel"} <= names
    assert len(reports) == len(kernel_configs(target))
    failures = {f"{r.config.name} {r.config.label}": problems(r) for r in reports if problems(r)}
    assert not failures, f"{target}:\n" + format_table(rows(reports))
    for r in reports:
        assert r.registers > 0 and r.local == 0 and r.stack == 0
        if r.config.uses_dot:
            assert r.mma or r.wgmma, f"{r.config.label}: tl.dot on tensor-core operands emitted neither mma nor wgmma"
