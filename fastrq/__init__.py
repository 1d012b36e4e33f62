"""fastrq: fast vector quantization (VQ) and residual vector quantization (RQ) for neural networks.

Functional ops (any backend)::

    codes, sqdist = fastrq.nearest_code(x, codebook)          # x [..., D], codebook [K, D]
    quantized, codes = fastrq.residual_quantize(x, codebooks)  # codebooks [L, K, D]
    quantized = fastrq.residual_decode(codes, codebooks)
    fastrq.ema_update_(codebook, cluster_size, embed_sum, x, codes, decay=0.99)

``import fastrq`` imports neither triton nor initialises CUDA.
"""

from .ops.backends import BACKENDS, backend_status
from .errors import (
    BackendUnavailableError,
    CodeRangeError,
    DTypeError,
    EmptyCodebookError,
    FastRQError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeError,
    StateDictError,
)
from .ops import code_statistics, ema_update_, nearest_code, residual_decode, residual_quantize
from .modules.grouped import GroupedResidualQuantizer
from .modules.quantizer import ResidualQuantizer, VectorQuantizer

__version__ = "0.1.0"

__all__ = [
    "VectorQuantizer",
    "ResidualQuantizer",
    "GroupedResidualQuantizer",
    "BACKENDS",
    "backend_status",
    "nearest_code",
    "residual_quantize",
    "residual_decode",
    "ema_update_",
    "code_statistics",
    "FastRQError",
    "ShapeError",
    "DTypeError",
    "CodeRangeError",
    "EmptyCodebookError",
    "NonFiniteError",
    "InvalidArgumentError",
    "BackendUnavailableError",
    "StateDictError",
]
