"""Interoperability with other VQ libraries: converting their trained state into fastrq modules.

- :mod:`.vector_quantize_pytorch`: ``ResidualVQ`` / ``VectorQuantize`` (lucidrains/vector-quantize-pytorch).
"""
