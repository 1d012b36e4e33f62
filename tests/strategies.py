"""Hypothesis strategies and oracle checks shared by the op tests."""

from __future__ import annotations

import contextlib
import os
from unittest import mock

import torch
from hypothesis import strategies as st

import fastrq

# name used in test ids -> (backend argument, environment overrides)
BACKEND_VARIANTS = {
    "reference": ("reference", {}),
    "torch": ("torch", {}),
    "torch-native": ("torch", {"FASTRQ_CPU_KERNEL": "1"}),  # the native small-D kernel; fails if it cannot build
    "torch-pure": ("torch", {"FASTRQ_CPU_KERNEL": "0", "FASTRQ_FAISS": "0"}),
    "torch-faiss": ("torch", {"FASTRQ_CPU_KERNEL": "0", "FASTRQ_FAISS": "1"}),
    "torch-certified": ("torch", {"FASTRQ_CPU_KERNEL": "0", "FASTRQ_FAISS": "0", "FASTRQ_BF16_SEARCH": "1"}),
    "triton": ("triton", {}),
}

sizes_n = st.sampled_from([0, 1, 2, 3, 5, 17, 64, 130])
sizes_d = st.sampled_from([1, 2, 3, 4, 8, 16, 33, 64])
sizes_k = st.sampled_from([1, 2, 3, 7, 16, 31, 100])
seeds = st.integers(0, 2**31 - 1)


@contextlib.contextmanager
def backend_env(variant: str):
    """Yield the backend argument for ``variant`` with its environment variables set."""
    backend, env = BACKEND_VARIANTS[variant]
    if variant.startswith("torch-faiss"):
        import pytest

        pytest.importorskip("faiss", reason="torch-faiss needs faiss-cpu (the bench extra)")
    with mock.patch.dict(os.environ, env):
        yield backend


def random_data(seed: int, *shape: int, dtype=torch.float64, scale: float = 1.0, offset: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + offset).to(dtype)


def exact_sqdist(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """[N, K] squared distances in float64 by the direct difference (the oracle)."""
    x64, c64 = x.double(), codebook.double()
    return (x64[:, None, :] - c64[None, :, :]).square().sum(-1)


def assert_codes_near_optimal(x: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor, rel_tol: float, centre=None):
    """Every chosen code's exact distance is within ``rel_tol · scale`` of the true minimum, where scale is
    ‖x − c‖² + max_k ‖e_k − c‖² with c = ``centre`` (default 0): the tolerance the search precision allows."""
    x2 = x.reshape(-1, x.shape[-1])
    codes = codes.reshape(-1)
    assert codes.dtype == torch.int64
    if x2.shape[0] == 0:
        return
    assert int(codes.min()) >= 0 and int(codes.max()) < codebook.shape[0], "code out of range"
    dist = exact_sqdist(x2, codebook)
    chosen = dist.gather(1, codes[:, None])[:, 0]
    best = dist.min(1).values
    c = torch.zeros(x2.shape[1], dtype=torch.float64) if centre is None else centre.double()
    scale = (x2.double() - c).square().sum(1) + (codebook.double() - c).square().sum(1).max()
    excess = chosen - best
    bad = excess > rel_tol * scale + 1e-300
    assert not bool(bad.any()), (
        f"{int(bad.sum())}/{len(bad)} rows chose a code farther than the tolerance allows; "
        f"worst excess {float(excess.max()):.3g} vs tolerance {float((rel_tol * scale)[excess.argmax()]):.3g}"
    )
