"""Triton kernels behind the ``"triton"`` backend (installed as ``fastrq.kernels``).

Importing this package does not import triton; ``fastrq.kernels.backend`` does.
"""
