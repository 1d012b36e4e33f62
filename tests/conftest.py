"""Shared test setup.

- Without CUDA, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before triton is imported,
  so it is set here, first.
- Hypothesis profiles: ``ci`` (default; few examples, no deadline: the interpreter and shared CI machines are slow)
  and ``thorough`` (``HYPOTHESIS_PROFILE=thorough``).
- Threads are pinned so timings and results do not depend on the machine's core count.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(int(os.environ.get("FASTRQ_TEST_THREADS", "2")))


@pytest.fixture
def one_thread():
    """Tiny models: one thread is fastest, and avoids spin-wait slowdowns on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def disable_fused_step(patch) -> None:
    """Make the quantizer modules run the training pass and ``codebook_update_`` as two steps (the path of every
    case the fused native step does not cover), for tests of those pieces: ``patch`` is a pytest monkeypatch (or one
    of its contexts)."""
    from fastrq.ops import training

    patch.setattr(training, "quantize_and_update_", lambda *args, **kwargs: None)


@pytest.fixture
def unfused_step(monkeypatch):
    """:func:`disable_fused_step` for the whole test."""
    disable_fused_step(monkeypatch)
