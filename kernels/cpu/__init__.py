"""Native CPU kernels for small D (``rq_cpu.c``), compiled on first use with the system C compiler and loaded with
``ctypes`` (no torch headers, no OpenMP: about a second to build, cached per source and CPU).

- :mod:`.build`: compile, cache and load the library; why it is unavailable when it is;
- :mod:`.launch`: the torch-facing launchers (the search-and-walk pass of every level, its statistics).

``import fastrq.kernels.cpu`` compiles nothing; the first launcher call does.
"""
