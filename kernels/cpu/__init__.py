"""Native CPU kernels (``rq_cpu.c``), compiled on first use with the system C compiler and loaded with ``ctypes``
(no torch headers; OpenMP where the compiler has it, sharing torch's runtime: about a second to build, cached per
source, flags and CPU).

- :mod:`.build`: compile, cache and load the library; why it is unavailable when it is;
- :mod:`.launch`: the torch-facing launchers: the small-D search-and-walk pass of every level and its statistics,
  the EMA step, and for the GEMM path (D > 32) the codebook preparation, the per-level walk, the certified bf16
  search's row passes, row hashes and the counter-based draws.

``import fastrq.kernels.cpu`` compiles nothing; the first launcher call does.
"""
