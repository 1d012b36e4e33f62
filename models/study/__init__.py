"""The RQ-VAE vs VQ-VAE study built on the trained models: what ``fastrq reproduce``, ``fastrq sample`` and
``fastrq generative-eval`` run.

- :mod:`.reproduce`: the study as a report folder (:func:`reproduce` on a :class:`ReproduceConfig`), from its
  design (:mod:`.experiments`), :mod:`.findings`, :mod:`.throughput` and :mod:`.report` (report.md);
- :mod:`.prior_report`: the generative evaluation of a trained prior, with :mod:`.generative_metrics` (confidence,
  class entropy, classifier-feature FID);
- :mod:`.sampling`: codes and image grids sampled from a prior;
- :mod:`.plots`: the figures (matplotlib, imported when a figure is drawn).
"""
