"""Native CPU kernels (``rq_cpu.c``), compiled on first use with the system C compiler and loaded with ``ctypes``
(no torch headers; OpenMP where the compiler has it, sharing torch's runtime: about a second to build, cached per
source, flags and CPU).

- :mod:`.build`: compile, cache and load the library; why it is unavailable when it is;
- :mod:`.launch`: the torch-facing launchers: the fused search-and-walk pass of every level and its statistics
  (D ≤ 32, or D ≤ 64 with K ≤ 1,024), the EMA step and the dead-code restart, and for the GEMM path (the other
  shapes) the codebook preparation, the per-level walk, the certified bf16 search's row passes, row hashes and the
  counter-based draws.

``import fastrq.kernels.cpu`` compiles nothing; the first launcher call does.
"""
