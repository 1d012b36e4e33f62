"""fastrq benchmarks (run from the repository root), all on one harness (:mod:`benchmarks.harness`): ops
(``python -m benchmarks.ops_bench --preset quick|full``), the module's training step (``benchmarks.module_step``,
``benchmarks.train_step``), sampling (``benchmarks.sampling``), memory (``benchmarks.memory --report``). Results go
to ``benchmarks/results/<date>/``; see benchmarks/README.md for the method and how to read the tables.
"""
