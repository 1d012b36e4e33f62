"""fastrq benchmarks (run from the repository root): ``python -m benchmarks.ops_bench --preset quick|full``.

See benchmarks/README.md for the method, the presets and how to read the tables.
"""
