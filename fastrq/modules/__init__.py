"""The drop-in quantizer ``nn.Module``s (:mod:`.quantizer`: ``ResidualQuantizer``, ``VectorQuantizer``).

They validate input, hold state and call the registered ops (:mod:`fastrq.library`) and the autograd Function
(:mod:`fastrq.autograd`); all math lives in :mod:`fastrq.ops`.
"""
