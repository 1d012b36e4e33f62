"""Convert vector-quantize-pytorch (VQP) quantizers into fastrq modules, state included.

VQP keeps, per level, ``layers.{i}._codebook.{embed [1, K, d], embed_avg [1, K, d], cluster_size [1, K],
initted}``; its EMA is the same formula as fastrq's (``embed_avg`` is fastrq's ``embed_sum``, Laplace smoothing
with ``eps``), so an EMA model carries over exactly: in eval mode the converted quantizer returns the same codes.

Carried over: dim, codebook_size, num_quantizers, codebook_dim (the ``project_in`` / ``project_out`` weights),
shared_codebook, decay, eps, commitment_weight, threshold_ema_dead_code, kmeans_iters (and whether k-means init is
still pending), use_cosine_sim, rotation_trick, quantize_dropout (+ cutoff index and multiple_of), channel layout,
freeze_codebook, beam size, per-level codebook sizes, and learnable (``ema_update=False``) codebooks as fastrq's
``ema=False``. Options fastrq does not offer raise :class:`fastrq.InvalidArgumentError` naming them (multi-head
VQ, implicit neural codebooks, affine parameters, directional reparameterisation, a LayerNorm after the input
projection); options whose effect differs are listed in the returned module's ``conversion_notes`` and in one
warning: VQP's straight-through ``ResidualVQ`` passes L·grad to its input where fastrq passes grad (see the
migration guide), and its rotation trick is applied level by level where fastrq's runs along the residual chain.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import InvalidArgumentError

__all__ = ["residual_quantizer_from", "vector_quantizer_from"]


def _codebook_options(vq) -> dict:
    """fastrq options of one VQP ``VectorQuantize`` layer (raising for what cannot be carried over)."""
    cb = vq._codebook
    ema = bool(getattr(cb, "ema_update", True))
    unsupported = {
        "heads > 1 (multi-head VQ: see the migration guide for GroupedResidualQuantizer / unflatten)": getattr(vq, "heads", 1) != 1,
        "affine_param": bool(getattr(cb, "affine_param", False)),
        "directional_reparam": bool(getattr(vq, "directional_reparam", False)),
        "implicit neural codebook": type(cb).__name__ not in ("Codebook", "EuclideanCodebook", "CosineSimCodebook"),
        "commitment_use_cross_entropy_loss": bool(getattr(vq, "commitment_use_cross_entropy_loss", False)),
        "layernorm_after_project_in (a LayerNorm between the projection and the codebook)": isinstance(
            getattr(vq, "project_in", None), torch.nn.Sequential
        ),
    }
    bad = [name for name, present in unsupported.items() if present]
    if bad:
        raise InvalidArgumentError(f"cannot convert this vector-quantize-pytorch quantizer: {', '.join(bad)}")
    return dict(
        ema=ema,
        decay=float(cb.decay),
        eps=float(cb.eps),
        commitment_weight=float(vq.commitment_weight),
        dead_code_threshold=float(getattr(cb, "threshold_ema_dead_code", 0) or 0),
        kmeans_iters=int(getattr(cb, "kmeans_iters", 10)),
        use_cosine_sim=bool(getattr(cb, "use_cosine_sim", False) or type(cb).__name__ == "CosineSimCodebook"),
        rotation_trick=bool(getattr(vq, "rotation_trick", False)),
        freeze_codebook=bool(getattr(vq, "freeze_codebook", False)),
    )


def _notes(options: dict, num_levels: int, vq, quant_grad_frac: float = 0.0) -> list[str]:
    notes = []
    if num_levels > 1 and not options["rotation_trick"] and quant_grad_frac == 0.0:
        notes.append(
            "gradient: VQP's ResidualVQ passes L·grad to its input (each level is straight-through w.r.t. its own "
            "residual); fastrq passes grad (quantized = x + sg(q − x))"
        )
    if options["rotation_trick"] and num_levels > 1:
        notes.append("rotation trick: VQP rotates each level's output onto its input; fastrq runs the rotation "
                     "along the residual chain (the same for one level)")
    if float(getattr(vq, "orthogonal_reg_weight", 0.0)) > 0:
        notes.append("orthogonal_reg_weight is not carried over (fastrq has no orthogonal regulariser); the codebook "
                     "stays an EMA codebook")
    sample_fn = getattr(vq._codebook, "sample_fn", None)
    if getattr(sample_fn, "keywords", {}).get("stochastic"):
        notes.append("stochastic code sampling is not carried over (fastrq searches the nearest code)")
    if getattr(vq, "return_zeros_for_masked_padding", False):
        notes.append("masked vectors: VQP returns zeros for them, fastrq returns x itself")
    return notes


def _layout(module) -> dict:
    if getattr(module, "accept_image_fmap", False) or getattr(module, "accept_3d_fmap", False):
        return dict(channel_first=True)
    return dict(channel_first=not bool(getattr(module, "channel_last", True)))


def _padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack per-level tensors of different code counts, zero-padded to ``width`` codes."""
    out = rows[0].new_zeros(len(rows), width, *rows[0].shape[1:])
    for level, row in enumerate(rows):
        out[level, : row.shape[0]] = row
    return out


def _load_state(rq, books, embed_avgs, cluster_sizes, initted: bool, projections) -> None:
    width = rq.codebook_size
    with torch.no_grad():
        rq.codebook.copy_(_padded(books, width))
        if rq.ema:
            rq.embed_sum.copy_(_padded(embed_avgs, width))
        rq.cluster_size.copy_(_padded(cluster_sizes, width))
        rq.initted.fill_(initted)
        if projections is not None:
            project_in, project_out = projections
            rq.project_in.load_state_dict(project_in.state_dict())
            rq.project_out.load_state_dict(project_out.state_dict())
    rq._initted_known = initted


def _finish(rq, notes: list[str]):
    rq.conversion_notes = notes
    if notes:
        warnings.warn("fastrq: converted from vector-quantize-pytorch; differences: " + "; ".join(notes), UserWarning, stacklevel=3)
    return rq


def residual_quantizer_from(cls, module, **overrides):
    """A ``cls`` (:class:`fastrq.ResidualQuantizer`) with the options and EMA state of VQP ``ResidualVQ``
    ``module``. ``overrides``: fastrq options to set differently (e.g. ``backend``)."""
    layers = list(getattr(module, "layers", []))
    if not layers:
        raise InvalidArgumentError(f"expected a vector_quantize_pytorch.ResidualVQ, got {type(module).__name__}")
    options = _codebook_options(layers[0])
    shared = bool(getattr(module, "shared_codebook", False))
    sizes = [int(layer._codebook.codebook_size) for layer in layers]
    codebook_size = sizes[0] if len(set(sizes)) == 1 else sizes
    dim = int(getattr(module, "dim", None) or (module.project_in.in_features if getattr(module, "has_projections", False) else layers[0].dim))
    projections = None
    codebook_dim = None
    if getattr(module, "has_projections", False):
        projections = (module.project_in, module.project_out)
        codebook_dim = int(module.project_in.out_features)
    initted = all(bool(layer._codebook.initted) for layer in layers)
    kwargs = dict(
        options,
        kmeans_init=not initted,
        shared_codebook=shared,
        quantize_dropout=bool(getattr(module, "quantize_dropout", False)),
        quantize_dropout_cutoff_index=int(getattr(module, "quantize_dropout_cutoff_index", 0) or 0),
        quantize_dropout_multiple_of=int(getattr(module, "quantize_dropout_multiple_of", 1) or 1),
        codebook_dim=codebook_dim,
        **_layout(module),
    )
    beam = getattr(module, "eval_beam_size", None) or getattr(module, "beam_size", None)
    if beam:
        kwargs["beam_size"] = int(beam)
    kwargs.update(overrides)
    rq = cls(dim, codebook_size, len(layers), **kwargs)
    stored = layers[:1] if shared else layers
    books = [layer._codebook.embed.detach()[0] for layer in stored]
    avgs = [layer._codebook.embed_avg.detach()[0] for layer in stored]
    sizes = [layer._codebook.cluster_size.detach()[0] for layer in stored]
    _load_state(rq, books, avgs, sizes, initted, projections)
    return _finish(rq, _notes(options, len(layers), layers[0], float(getattr(module, "quant_grad_frac", 0.0) or 0.0)))


def vector_quantizer_from(cls, module, **overrides):
    """A ``cls`` (:class:`fastrq.VectorQuantizer`) with the options and EMA state of VQP ``VectorQuantize``."""
    if not hasattr(module, "_codebook"):
        raise InvalidArgumentError(f"expected a vector_quantize_pytorch.VectorQuantize, got {type(module).__name__}")
    options = _codebook_options(module)
    cb = module._codebook
    projections = None
    codebook_dim = None
    if getattr(module, "has_projections", False):
        projections = (module.project_in, module.project_out)
        codebook_dim = int(module.project_in.out_features)
        dim = int(module.project_in.in_features)
    else:
        dim = int(module.dim) if hasattr(module, "dim") else int(cb.embed.shape[-1])
    initted = bool(cb.initted)
    kwargs = dict(options, kmeans_init=not initted, codebook_dim=codebook_dim, **_layout(module))
    kwargs.update(overrides)
    vq = cls(dim, int(cb.codebook_size), **kwargs)
    _load_state(vq, [cb.embed.detach()[0]], [cb.embed_avg.detach()[0]], [cb.cluster_size.detach()[0]], initted, projections)
    return _finish(vq, _notes(options, 1, module))
