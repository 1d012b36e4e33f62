"""The ops' contracts beyond the numbers: shapes and dtypes, views, bad input, backend choice, lean import."""

from __future__ import annotations

import os
import subprocess
import sys
from unittest import mock

import pytest
import torch

import fastrq
from fastrq.ops import backends


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_search_in_float32_or_float64(dtype):
    x = torch.randn(4, 5, 8).to(dtype)
    codebooks = torch.randn(3, 16, 8).to(dtype)
    codes, sqdist = fastrq.nearest_code(x, codebooks[0])
    assert codes.shape == (4, 5) and codes.dtype == torch.int64
    assert sqdist.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    quantized, rq_codes = fastrq.residual_quantize(x, codebooks)
    assert quantized.dtype == dtype and quantized.shape == x.shape and rq_codes.shape == (4, 5, 3)
    expected, _ = fastrq.nearest_code(x.float(), codebooks[0].float(), backend="reference")
    assert torch.equal(codes, expected)


def test_channel_first_and_non_contiguous_views():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 6, 5, 7, generator=gen)  # [B, D, H, W]
    codebook = torch.randn(20, 6, generator=gen)
    channel_last = image.permute(0, 2, 3, 1)  # non-contiguous [B, H, W, D]
    codes, sqdist = fastrq.nearest_code(channel_last, codebook)
    expected, expected_d = fastrq.nearest_code(channel_last.contiguous(), codebook, backend="reference")
    assert codes.shape == (2, 5, 7) and torch.equal(codes, expected)
    torch.testing.assert_close(sqdist, expected_d)
    strided = torch.randn(40, 12, generator=gen)[::2, ::2]
    codes, _ = fastrq.nearest_code(strided, codebook)
    assert torch.equal(codes, fastrq.nearest_code(strided.contiguous(), codebook, backend="reference")[0])
    quantized, _ = fastrq.residual_quantize(channel_last, codebook[None].expand(2, -1, -1))
    assert quantized.shape == channel_last.shape


def test_empty_batch_returns_empty_outputs():
    codebooks = torch.randn(2, 4, 3)
    codes, sqdist = fastrq.nearest_code(torch.empty(0, 3), codebooks[0])
    assert codes.shape == (0,) and sqdist.shape == (0,)
    quantized, rq_codes = fastrq.residual_quantize(torch.empty(5, 0, 3), codebooks)
    assert quantized.shape == (5, 0, 3) and rq_codes.shape == (5, 0, 2)
    assert fastrq.residual_decode(torch.empty(0, 2, dtype=torch.long), codebooks).shape == (0, 3)


def test_non_finite_rows_get_a_valid_code_and_non_finite_distance():
    x = torch.randn(4, 3)
    x[1, 0] = float("nan")
    x[2, 2] = float("inf")
    codes, sqdist = fastrq.nearest_code(x, torch.randn(5, 3))
    assert bool(((codes >= 0) & (codes < 5)).all())
    assert not bool(torch.isfinite(sqdist[1:3]).any()) and bool(torch.isfinite(sqdist[[0, 3]]).all())


BAD_INPUTS = {
    "dimension mismatch": (lambda: fastrq.nearest_code(torch.randn(3, 4), torch.randn(5, 3)), fastrq.ShapeError, "dimension mismatch"),
    "integer x": (lambda: fastrq.nearest_code(torch.ones(3, 4, dtype=torch.long), torch.randn(5, 4)), fastrq.DTypeError, "floating"),
    "integer codebook": (lambda: fastrq.nearest_code(torch.randn(3, 4), torch.ones(5, 4, dtype=torch.int32)), fastrq.DTypeError, "floating"),
    "empty codebook": (lambda: fastrq.nearest_code(torch.randn(3, 4), torch.randn(0, 4)), fastrq.EmptyCodebookError, "K = 0"),
    "empty codebooks": (lambda: fastrq.residual_quantize(torch.randn(3, 4), torch.randn(2, 0, 4)), fastrq.EmptyCodebookError, "K = 0"),
    "codebook rank": (lambda: fastrq.nearest_code(torch.randn(3, 4), torch.randn(2, 5, 4)), fastrq.ShapeError, "[K, D]"),
    "codebooks rank": (lambda: fastrq.residual_quantize(torch.randn(3, 4), torch.randn(5, 4)), fastrq.ShapeError, "[L, K, D]"),
    "scalar x": (lambda: fastrq.nearest_code(torch.tensor(1.0), torch.randn(5, 1)), fastrq.ShapeError, "at least one dimension"),
    "code too large": (lambda: fastrq.residual_decode(torch.tensor([[0, 5]]), torch.randn(2, 5, 3)), fastrq.CodeRangeError, "out of range"),
    "code below -1": (lambda: fastrq.residual_decode(torch.tensor([[-2]]), torch.randn(2, 5, 3)), fastrq.CodeRangeError, "out of range"),
    "float codes": (lambda: fastrq.residual_decode(torch.tensor([[0.0]]), torch.randn(2, 5, 3)), fastrq.DTypeError, "integer"),
    "too many levels": (lambda: fastrq.residual_decode(torch.zeros(4, 3, dtype=torch.long), torch.randn(2, 5, 3)), fastrq.ShapeError, "level-count mismatch"),
    "unknown backend": (lambda: fastrq.nearest_code(torch.randn(3, 4), torch.randn(5, 4), backend="cuda-magic"), fastrq.BackendUnavailableError, "unknown backend"),
    "statistics shape": (lambda: fastrq.code_statistics(torch.randn(3, 4), torch.zeros(4, dtype=torch.long), 5), fastrq.ShapeError, "leading shape"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_a_named_error(case):
    call, error, words = BAD_INPUTS[case]
    with pytest.raises(error, match=__import__("re").escape(words)):
        call()


def test_error_hierarchy_subclasses_builtin_exceptions():
    assert issubclass(fastrq.ShapeError, ValueError) and issubclass(fastrq.ShapeError, fastrq.FastRQError)
    assert issubclass(fastrq.DTypeError, TypeError)
    assert issubclass(fastrq.CodeRangeError, ValueError)
    assert issubclass(fastrq.BackendUnavailableError, RuntimeError)


def test_explicit_backend_that_cannot_run_says_why():
    with mock.patch.dict(os.environ, {"TRITON_INTERPRET": "0"}):
        with pytest.raises(fastrq.BackendUnavailableError, match="TRITON_INTERPRET"):
            fastrq.nearest_code(torch.randn(3, 4), torch.randn(5, 4), backend="triton")


def test_auto_picks_torch_on_cpu_and_the_environment_overrides_it():
    cpu = torch.device("cpu")
    assert backends.resolve_backend("auto", cpu).__name__ == "fastrq.ops.torch_backend"
    with mock.patch.dict(os.environ, {"FASTRQ_BACKEND": "reference"}):
        assert backends.resolve_backend("auto", cpu).__name__ == "fastrq.ops.reference"
        assert backends.resolve_backend("torch", cpu).__name__ == "fastrq.ops.torch_backend"  # explicit wins
    with mock.patch.dict(os.environ, {"FASTRQ_BACKEND": "nonsense"}):
        with pytest.raises(fastrq.BackendUnavailableError, match="unknown backend"):
            backends.resolve_backend("auto", cpu)


def test_import_is_lean_and_info_runs():
    code = (
        "import sys, fastrq, torch; "
        "assert 'triton' not in sys.modules, 'import fastrq imported triton'; "
        "assert not torch.cuda.is_initialized(), 'import fastrq initialised CUDA'; print('lean')"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip() == "lean"
    info = subprocess.run([sys.executable, "-m", "fastrq.info"], capture_output=True, text=True, env=env, check=True).stdout
    assert "backends for cpu tensors" in info and "torch" in info and "reference" in info


def test_residual_quantize_shapes_of_one_and_two_dimensional_x():
    """The outputs keep x's leading shape ([D] → codes [L]; [N, D] → [N, L]) and x's dtype, with or without the
    conversions the op skips when nothing changes."""
    gen = torch.Generator().manual_seed(3)
    codebooks = torch.randn(3, 16, 8, generator=gen)
    x = torch.randn(5, 8, generator=gen)
    quantized, codes = fastrq.residual_quantize(x, codebooks)
    assert quantized.shape == (5, 8) and codes.shape == (5, 3) and quantized.data_ptr() != x.data_ptr()
    one_q, one_codes = fastrq.residual_quantize(x[2], codebooks)
    assert one_q.shape == (8,) and one_codes.shape == (3,)
    assert torch.equal(one_codes, codes[2]) and torch.equal(one_q, quantized[2])
    half_q, half_codes = fastrq.residual_quantize(x.half(), codebooks.half())
    assert half_q.dtype == torch.float16 and half_codes.shape == (5, 3)
