"""The drop-in quantizer modules and their parts, one concern per file:

- :mod:`.quantizer`: ``ResidualQuantizer`` / ``VectorQuantizer`` (``nn.Module``s);
- :mod:`.codebook_state`: the state transitions (residual walk, k-means init, EMA step + dead-code restart);
- :mod:`.search`: greedy and beam-search code assignment;
- :mod:`.distributed`: when and how the state updates synchronise across ranks;
- :mod:`.counter_random`: sync-free, rank-identical random choices.

The ``torch.library`` wrappers are in :mod:`fastrq.library`, the autograd Function in :mod:`fastrq.autograd`.
"""
