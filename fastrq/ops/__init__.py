"""The ops layer: every piece of functional math fastrq has, below the ``torch.library`` registrations
(:mod:`fastrq.library`), the autograd Function (:mod:`fastrq.autograd`) and the ``nn.Module``s
(:mod:`fastrq.modules`), which import from here and hold no math of their own.

One concern per module:

- :mod:`.functional`: the public ops (``nearest_code``, ``residual_quantize``, ``residual_decode``,
  ``code_statistics``, ``ema_update_``, ``ema_step``): validation, dispatch, shapes back to the caller's;
- :mod:`.validation`: the input checks and the compute-dtype rule;
- :mod:`.backends`: which backend runs an op and why another cannot;
- :mod:`.reference` (the naive oracle), :mod:`.torch_backend` (tiled pure PyTorch); the Triton backend is
  :mod:`fastrq.kernels.backend`;
- :mod:`.codebook_prep`: centring shift and duplicate-row table, shared by every search implementation;
- :mod:`.search`: greedy and beam-search code assignment for the quantizers;
- :mod:`.codebook_state`: the quantizer's state transitions (residual walk, k-means init, EMA step with
  dead-code restarts);
- :mod:`.counter_random`: sync-free, rank-identical random choices;
- :mod:`.distributed`: when and how state updates synchronise across ranks;
- :mod:`.recycled`: the CPU training step's large statistics buffers, reused inside the owner module's step.
"""

from .functional import code_statistics, ema_step, ema_update_, nearest_code, residual_decode, residual_quantize

__all__ = ["nearest_code", "residual_quantize", "residual_decode", "code_statistics", "ema_update_", "ema_step"]
