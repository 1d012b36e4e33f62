"""The quantizer module's training step at real batch sizes (issue 10), and its share of the MNIST RQ-VAE's step.

    python -m benchmarks.module_step [--preset full|quick] [--shapes NAME ...] [--n N ...] [--providers ...]
    python -m benchmarks.module_step --render benchmarks/results/<date>/module_step.json   # the README table

One step = forward (search, straight-through output, commitment loss, EMA update) + backward of
``(quantized · g).sum() + loss`` for a fixed batch x ``[N, D]`` ~ N(0, 1/D) (the scale of the modules' initial
codebooks) and upstream gradient g ~ N(0, 1). Providers (columns), every one starting from the same codebooks:

- ``fastrq``: ``fastrq.VectorQuantizer`` (L = 1) / ``ResidualQuantizer`` with default settings (EMA, decay 0.99,
  commitment 0.25, backend ``auto``);
- ``vqp``: vector-quantize-pytorch ``VectorQuantize`` (L = 1) / ``ResidualVQ``, EMA, ``rotation_trick=False``, same
  K, L, decay, eps, commitment weight, no k-means, no dead-code restarts, fastrq's initial codebooks copied into
  every layer's ``embed`` / ``embed_avg`` (cluster sizes 1 in both), input ``[1, N, D]``;
- ``naive``: the fastrq module with ``backend="reference"`` (the float64-checked oracle: N×K matrices);
- ``search``: the bare search ``fastrq.residual_quantize(x, codebooks)`` on the module's codebooks, no grad — the
  floor the step is compared against;
- ``plain``: the fastrq module with ``FASTRQ_FAISS=0`` set around its own calls (no faiss: what a plain
  ``pip install fastrq`` runs: the native C kernel at D ≤ 32 and at D ≤ 64 with K ≤ 1,024 where a C compiler
  exists, PyTorch elsewhere);
- ``pure``: the fastrq module with ``FASTRQ_FAISS=0`` and ``FASTRQ_CPU_KERNEL=0`` (pure PyTorch: no faiss, no
  native kernel).

The gate (:mod:`benchmarks.harness`) checks every provider's codes of the first step against the torch backend's
search on the initial codebooks, by distance (:mod:`benchmarks.codes_check`); then the providers run interleaved
(2 threads by default). Reported: ms per step (median, p20 / p80), ns per row, peak extra memory of the first step,
and the per-round ratios ResidualVQ / fastrq, naive / fastrq, fastrq / search, plain / fastrq, pure / fastrq. Providers whose
estimated working set exceeds ``--mem-cap-gib`` (ResidualVQ and the reference build N×K buffers), and those two
when their step, extrapolated from the next smaller N, would take longer than ``--max-call-s``, are skipped with the
estimate as the reason (never timed on a subsample and scaled: a training step on fewer rows is another step).

Quantizer share: a full training step of the MNIST autoencoder from ``fastrq.models`` (encoder + quantizer + decoder
+ loss + backward + Adam step, batch 128, ``return_stats=True`` as the trainer calls it) against the same network
with the quantizer replaced by an identity, interleaved; share = (t_model − t_identity) / t_model, per round.

Writes ``module_step.json`` / ``.md`` into ``--out`` (default ``benchmarks/results/<date>/``).

Note (2026-12-01): at D ≤ 32 the small-N steps are slow partly because faiss switches to a sequential kernel when
``nx · d < faiss.cvar.distance_compute_blas_threshold`` (recorded in the metadata).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

import fastrq

from . import harness, memory
from .codes_check import codes_checker

__all__ = ["Shape", "SHAPES", "PRESETS", "PROVIDERS", "RATIOS", "run_shape", "run_share", "render_table", "main"]


@dataclass(frozen=True)
class Shape:
    label: str
    dim: int
    num_codes: int
    levels: int


SHAPES = {
    "mnist-vq": Shape("MNIST VQ (7×7×4 latents)", 4, 256, 1),
    "mnist-rq2": Shape("MNIST RQ 2×128", 4, 128, 2),
    "mnist-rq3": Shape("MNIST RQ 3×128", 4, 128, 3),
    "dac": Shape("DAC-like (low-dimensional codes)", 8, 1024, 9),
    "encodec": Shape("EnCodec-like", 128, 1024, 8),
    "semantic-id": Shape("semantic-ID encoder (TIGER-like)", 64, 256, 3),
    "image-tokenizer": Shape("image tokenizer (ViT-VQGAN-like)", 32, 8192, 1),
}
PRESETS = {
    # ≈ 10 minutes on 2 cores
    "full": dict(shapes=tuple(SHAPES), ns=(1024, 6272, 65536), reps=21, budget_s=8.0),
    # CI-sized smoke run: a few seconds
    "quick": dict(shapes=("mnist-vq", "mnist-rq2", "dac", "encodec"), ns=(1024,), reps=3, budget_s=1.0),
}
PROVIDERS = {
    "fastrq": "fastrq module (EMA, backend auto)",
    "vqp": "vector-quantize-pytorch ResidualVQ / VectorQuantize (EMA, rotation_trick=False)",
    "naive": "fastrq module, backend='reference' (naive)",
    "search": "fastrq.residual_quantize on the module's codebooks (bare search, no grad)",
    "plain": "fastrq module, FASTRQ_FAISS=0 (no faiss: native kernel at D <= 32 and D <= 64 with K <= 1024, PyTorch above)",
    "pure": "fastrq module, FASTRQ_FAISS=0 FASTRQ_CPU_KERNEL=0 (pure PyTorch)",
}
RATIOS = (("vqp", "fastrq"), ("naive", "fastrq"), ("fastrq", "search"), ("plain", "fastrq"), ("pure", "fastrq"))
ENV = {"plain": {"FASTRQ_FAISS": "0"}, "pure": {"FASTRQ_FAISS": "0", "FASTRQ_CPU_KERNEL": "0"}}
DECAY, COMMITMENT, EPS = 0.99, 0.25, 1e-5  # fastrq's defaults, given to ResidualVQ too
# Estimated peak bytes per (row, code) of one step, measured at N = 4,096–6,272 (2026-12-01): ResidualVQ keeps
# about 24 B per row and code of one level alive (distance, one-hot, their copies), the reference 12–16 B.
BYTES_PER_ROW_CODE = {"vqp": 32, "naive": 16}


# ---------------------------------------------------------------------------------------------------- providers
def _fastrq_module(shape: Shape, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if shape.levels == 1:
        return fastrq.VectorQuantizer(shape.dim, shape.num_codes).train()
    return fastrq.ResidualQuantizer(shape.dim, shape.num_codes, shape.levels).train()


def _vqp_module(shape: Shape, codebooks: torch.Tensor) -> torch.nn.Module:
    from vector_quantize_pytorch import ResidualVQ, VectorQuantize

    options = dict(dim=shape.dim, codebook_size=shape.num_codes, decay=DECAY, eps=EPS, commitment_weight=COMMITMENT,
                   kmeans_init=False, rotation_trick=False, threshold_ema_dead_code=0)
    if shape.levels == 1:
        module = VectorQuantize(**options)
        layers = [module]
    else:
        module = ResidualVQ(num_quantizers=shape.levels, **options)
        layers = list(module.layers)
    with torch.no_grad():
        for layer, book in zip(layers, codebooks):
            codebook = layer._codebook
            codebook.embed.copy_(book[None])  # [heads = 1, K, D]
            codebook.embed_avg.copy_(book[None] * codebook.cluster_size[..., None])  # = embed_sum, as fastrq's
    return module.train()


def _module_step(module: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor, batch_dim: bool):
    """One training step; returns the codes ``[N, L]`` (for the gate)."""

    def step():
        leaf = x.detach().requires_grad_()
        quantized, codes, loss = module(leaf[None] if batch_dim else leaf)
        ((quantized * (upstream[None] if batch_dim else upstream)).sum() + loss.sum()).backward()
        return codes.reshape(x.shape[0], -1).long()

    return step


def _search(x: torch.Tensor, codebooks: torch.Tensor):
    def step():
        with torch.no_grad():
            return fastrq.residual_quantize(x, codebooks)[1]

    return step


def _inputs(shape: Shape, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 7919 * shape.dim + 104729 * shape.num_codes + shape.levels)
    return torch.randn(n, shape.dim, generator=gen) / shape.dim ** 0.5, torch.randn(n, shape.dim, generator=gen)


def _too_big(provider: str, shape: Shape, n: int, cap_bytes: int) -> str | None:
    estimate = BYTES_PER_ROW_CODE.get(provider, 0) * n * shape.num_codes
    if estimate > cap_bytes:
        return (f"estimated working set {estimate / (1 << 30):.1f} GiB (≈{BYTES_PER_ROW_CODE[provider]} B per row and "
                f"code) exceeds --mem-cap-gib {cap_bytes / (1 << 30):g}")
    return None


def _too_slow(provider: str, n: int, settings: dict) -> str | None:
    """Skip a reference (ResidualVQ, naive) whose step, extrapolated linearly from its time at the largest smaller N
    of this shape, would take longer than ``max_call_s`` (its gate call and one timed step would cost twice that).
    fastrq's own providers are never skipped for time."""
    seen = settings.get("ns_per_row", {}).get(provider)
    if seen is None or provider not in BYTES_PER_ROW_CODE:
        return None
    rows, ns_per_row = seen
    estimate = ns_per_row * n / 1e9
    if estimate > settings["max_call_s"]:
        return (f"estimated {estimate:.0f} s per step (from {ns_per_row:,.0f} ns/row at N = {rows:,}) exceeds "
                f"--max-call-s {settings['max_call_s']:g}")
    return None


def contenders(shape: Shape, n: int, providers: list[str], settings: dict) -> list[harness.Contender]:
    """The providers of one (shape, N), built outside the timed region, each gated on its first step's codes."""
    x, upstream = _inputs(shape, n, settings["seed"])
    module = _fastrq_module(shape, settings["seed"])
    codebooks = module.codebooks.detach().clone()
    base = fastrq.residual_quantize(x, codebooks, backend="torch")[1]
    check = codes_checker("residual_quantize", x, codebooks, base, n)
    out = []
    for name in providers:
        label = PROVIDERS[name]
        reason = _too_big(name, shape, n, settings["mem_cap_bytes"]) or _too_slow(name, n, settings)
        if name == "vqp" and importlib.util.find_spec("vector_quantize_pytorch") is None:
            reason = "vector-quantize-pytorch is not installed (pip install 'fastrq[bench]')"
        if reason is not None:
            out.append(harness.Contender(name, label=label, skip=reason))
            continue
        env: dict[str, str] = {}
        if name == "fastrq":
            call = _module_step(module, x, upstream, batch_dim=False)
        elif name == "vqp":
            call = _module_step(_vqp_module(shape, codebooks), x, upstream, batch_dim=True)
        elif name == "search":
            call = _search(x, codebooks)
        else:
            twin = copy.deepcopy(module)  # the same initial state
            if name == "naive":
                twin.backend = "reference"
            else:
                env = dict(ENV[name])
            call = _module_step(twin, x, upstream, batch_dim=False)
        out.append(harness.Contender(name, call, check, label=label, env=env))
    return out


def run_shape(key: str, shape: Shape, n: int, providers: list[str], settings: dict, log=print) -> list[dict]:
    """Gate and time one (shape, N); its long-format records."""
    outcomes = harness.run(contenders(shape, n, providers, settings), reps=settings["reps"],
                           budget_s=settings["budget_s"], log=log)
    for o in outcomes.values():
        s = o.summary()
        timing = f"{s['median_ms']:10.2f} ms ({s['median_ms'] * 1e6 / n:8.0f} ns/row, reps {s['reps']})" if o.times \
            else f"{o.status}: {o.detail}"
        log(f"  {o.name:<7} {timing}")
    case = {"shape": key, "shape_label": shape.label, "N": n, "D": shape.dim, "K": shape.num_codes, "L": shape.levels}
    for o in outcomes.values():  # the cost per row seen so far, for _too_slow at the next (larger) N
        if o.times:
            settings.setdefault("ns_per_row", {})[o.name] = (n, o.summary()["median_ms"] * 1e6 / n)
    records = harness.timing_records(case, outcomes, RATIOS, per_row=n)
    for r in records:
        if r["metric"] == "time_ratio":
            log(f"  {r['provider']} / {r['baseline']} = {r['value']:.2f} (rounds {r['rounds']})")
    return records


# ------------------------------------------------------------------------------------------ share of the RQ-VAE
def _autoencoders():
    """The one place that imports the MNIST autoencoders (public names of ``fastrq.models``)."""
    from fastrq.models import ModelConfig, build_model

    return ModelConfig, build_model


SHARE_MODELS = {  # name → (ModelConfig fields, the matching module-step shape)
    "vq256": (dict(model="vqvae", codebook_size=256, num_quantizers=1), "mnist-vq"),
    "rq2x128": (dict(model="rqvae", codebook_size=128, num_quantizers=2), "mnist-rq2"),
    "rq3x128": (dict(model="rqvae", codebook_size=128, num_quantizers=3), "mnist-rq3"),
}


class IdentityQuantizer(torch.nn.Module):
    """Stands in for the quantizer: passes the latent through in the memory layout the quantizer's output has
    (channels-last strides for a channel-first latent: the decoder's convolutions run at another speed on the
    plain NCHW latent, which once made the subtraction negative), codes 0, loss 0, empty statistics."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, z: torch.Tensor, *, return_stats: bool = False):
        codes = torch.zeros(z.shape[0], *z.shape[2:], self.levels, dtype=torch.long)
        loss = z.new_zeros(())
        out = z.movedim(1, -1).contiguous().movedim(-1, 1)  # [B, C, H, W] with channels-last strides
        return (out, codes, loss, {}) if return_stats else (out, codes, loss)


def _quantizer_step(quantizer: torch.nn.Module, latent: torch.Tensor):
    """The model's quantizer alone on its latent: forward with statistics (as the trainer calls it) + backward."""
    upstream = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))

    def step():
        z = latent.detach().requires_grad_()
        out, codes, loss, _ = quantizer(z, return_stats=True)
        ((out * upstream).sum() + loss).backward()
        return codes

    return step


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor):
    def step():
        out = model(images, return_stats=True)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return out["codes"]

    return step


def run_share(name: str, batch: int, settings: dict, log=print) -> list[dict]:
    """Full training step of the MNIST model ``name`` with its quantizer and with an identity in its place."""
    model_config, build_model = _autoencoders()
    fields, _ = SHARE_MODELS[name]
    torch.manual_seed(settings["seed"])
    model = build_model(model_config(**fields)).train()
    identity = copy.deepcopy(model)
    identity.quantizer = IdentityQuantizer(fields["num_quantizers"])
    images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(settings["seed"]))
    alone = copy.deepcopy(model.quantizer)
    with torch.no_grad():  # the reference answer: the search on the initial encoder's latents and codebooks
        latent = model.encoder(images)
        rows = latent.movedim(1, -1).reshape(-1, fields.get("latent_dim", 4))
    codebooks = model.quantizer.codebooks.detach().clone()
    check_codes = codes_checker("residual_quantize", rows, codebooks,
                                fastrq.residual_quantize(rows, codebooks, backend="torch")[1], rows.shape[0])
    contenders = [
        harness.Contender("model", _train_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), images),
                          lambda codes: check_codes(codes.reshape(rows.shape[0], -1)),
                          label=f"MNIST {fields['model']} {name}: full training step"),
        harness.Contender("identity", _train_step(identity, torch.optim.Adam(identity.parameters(), lr=1e-3), images),
                          label="the same network, quantizer replaced by an identity"),
        harness.Contender("quantizer", _quantizer_step(alone, latent),
                          lambda codes: check_codes(codes.reshape(rows.shape[0], -1)),
                          label="the model's quantizer alone on the initial latent (forward with stats + backward)"),
    ]
    outcomes = harness.run(contenders, reps=settings["share_reps"], log=log)
    case = {"model": name, "batch": batch, "N": rows.shape[0], "D": rows.shape[1], "K": fields["codebook_size"],
            "L": fields["num_quantizers"]}
    records = harness.timing_records(case, outcomes, [("identity", "model"), ("quantizer", "model")])
    alone = harness.ratio(outcomes, "quantizer", "model")
    if alone is not None:  # the quantizer's own step / the model's step, per round
        records.append({**case, "provider": "quantizer", "baseline": "model", "metric": "quantizer_alone_share",
                        "unit": "fraction", "value": alone["value"], "p20": alone["p20"], "p80": alone["p80"],
                        "rounds": alone["rounds"]})
    found = harness.ratio(outcomes, "identity", "model")
    if found is not None:  # share per round = 1 − t_identity / t_model
        records.append({**case, "provider": "model", "baseline": "identity", "metric": "quantizer_share",
                        "unit": "fraction", "value": 1 - found["value"], "p20": 1 - found["p80"],
                        "p80": 1 - found["p20"], "rounds": found["rounds"]})
        log(f"  {name}: quantizer share {1 - found['value']:.1%} of the training step "
            f"(model {outcomes['model'].summary()['median_ms']:.1f} ms, identity "
            f"{outcomes['identity'].summary()['median_ms']:.1f} ms)")
    else:
        log(f"  {name}: " + "; ".join(f"{o.name} {o.status}: {o.detail}" for o in outcomes.values()))
    return records


# ------------------------------------------------------------------------------------------------------ tables
def _value(records, metric: str, **match) -> Any:
    found = harness.select(records, metric=metric, **match)
    return found[0]["value"] if found else None


def _ms(value) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def render_table(document: dict) -> str:
    """The markdown tables of a module_step results document (``harness.read_results``): the step per shape and
    N, then the quantizer's share of the MNIST models' training step when measured."""
    records = document["records"]
    cases = []
    for r in records:
        if r["metric"] == "time_ms" and "shape" in r and (r["shape"], r["N"]) not in cases:
            cases.append((r["shape"], r["N"]))
    lines = ["| shape | N | D | K | L | fastrq ms | bare search ms | no-faiss ms | pure PyTorch ms | naive ms "
             "| ResidualVQ ms | ResidualVQ / fastrq | naive / fastrq | fastrq / search | no-faiss / fastrq "
             "| pure / fastrq | fastrq ns/row |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, n in cases:
        rows = harness.select(records, shape=key, N=n)
        first = rows[0]
        ms = {p: _value(rows, "time_ms", provider=p) for p in PROVIDERS}
        ratios = [_ratio(_value(rows, "time_ratio", provider=a, baseline=b)) for a, b in RATIOS]
        per_row = _value(rows, "ns_per_row", provider="fastrq")
        busy = any(harness.contended(r) for r in harness.select(rows, metric="time_ms"))
        lines.append(f"| {first['shape_label']}{' †' if busy else ''} | {n:,} | {first['D']} | {first['K']:,} | {first['L']} | {_ms(ms['fastrq'])} "
                     f"| {_ms(ms['search'])} | {_ms(ms.get('plain'))} | {_ms(ms['pure'])} | {_ms(ms['naive'])} | {_ms(ms['vqp'])} | "
                     + " | ".join(ratios) + f" | {'–' if per_row is None else f'{per_row:,.0f}'} |")
    shares = harness.select(records, metric="quantizer_share")
    if shares:
        lines += ["", "| MNIST model (batch) | rows N | training step ms | identity-quantizer step ms "
                  "| quantizer alone ms | share: 1 − identity / model | share: quantizer alone / model |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in shares:
            model = _value(records, "time_ms", model=r["model"], provider="model")
            ident = _value(records, "time_ms", model=r["model"], provider="identity")
            alone = _value(records, "time_ms", model=r["model"], provider="quantizer")
            alone_share = _value(records, "quantizer_alone_share", model=r["model"])
            busy = any(harness.contended(t) for t in harness.select(records, metric="time_ms", model=r["model"]))
            lines.append(f"| {r['model']} ({r['batch']}){' †' if busy else ''} | {r['N']:,} | {_ms(model)} | "
                         f"{_ms(ident)} | {_ms(alone)} | {r['value']:.1%} | "
                         f"{'–' if alone_share is None else f'{alone_share:.1%}'} |")
    if any(harness.contended(r) for r in records if r["metric"] == "time_ms"):
        lines += ["", "† contended: other processes took the cores during this row (its calls were preempted "
                  f"> {harness.CONTENDED_RATE:g} times a second and got < {harness.CONTENDED_CPU:g} CPU seconds per "
                  "second per thread): its times and ratios are unreliable; re-measure on a quiet machine."]
    return "\n".join(lines)


def contention_line(document: dict) -> str:
    """One line on how busy the machine was during the run (metadata and the harness' per-call counters)."""
    meta = document["meta"]
    timings = [r for r in document["records"] if r["metric"] == "time_ms" and r.get("value")]
    busy = sum(harness.contended(r) for r in timings)
    load = f"load average {meta.get('load_average', ['?'])[0]} at the start, {(meta.get('load_average_end') or ['?'])[0]} "
    return (f"Run of {meta.get('date')} ({meta.get('threads', {}).get('torch')} threads, {meta.get('cpu_count')} "
            f"cores): {load}at the end; {busy} of {len(timings)} timings contended.")


def _markdown(document: dict) -> str:
    meta = document["meta"]
    skipped = [f"- {r.get('shape', r.get('model'))} N={r['N']:,} {r['provider']}: {r['check']}"
               for r in document["records"] if r["metric"] == "time_ms" and r["status"] != "ok"]
    return "\n".join([
        "# Quantizer module training step (forward + backward + EMA update)", "",
        f"Threads {meta['threads']['torch']}; interleaved rounds, medians; ratios are medians of per-round ratios. "
        f"faiss `distance_compute_blas_threshold` = {meta.get('faiss_blas_threshold')}.", "",
        render_table(document), "", contention_line(document), "",
        *(["Not timed:", "", *skipped, ""] if skipped else [])])


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.module_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="shapes (preset default)")
    parser.add_argument("--custom", metavar="D,K,L", help="one custom shape instead of --shapes")
    parser.add_argument("--n", type=int, nargs="+", help="batch rows N (preset default)")
    parser.add_argument("--providers", nargs="+", choices=list(PROVIDERS), default=list(PROVIDERS))
    parser.add_argument("--reps", type=int, help="timed steps per provider and case (at most)")
    parser.add_argument("--budget-s", type=float, help="time budget per provider and case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mem-cap-gib", type=float, default=6.0,
                        help="skip providers whose estimated working set is larger (ResidualVQ, the reference)")
    parser.add_argument("--max-call-s", type=float, default=30.0,
                        help="skip providers whose step, extrapolated from a smaller N, would take longer")
    parser.add_argument("--share", nargs="*", choices=sorted(SHARE_MODELS), default=None,
                        help="MNIST models whose quantizer share to measure (default: all with --preset full, none "
                             "with quick; give the flag alone for none)")
    parser.add_argument("--share-batch", type=int, default=128)
    parser.add_argument("--share-reps", type=int, default=20)
    parser.add_argument("--name", default="module_step", help="results file name")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<date>)")
    parser.add_argument("--render", metavar="JSON", help="print the markdown table of a results file and exit")
    parser.add_argument("--exact-memory", action="store_true",
                        help="re-execute with glibc's mmap threshold pinned (exact peak memory, slower allocation)")
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        attr = {"ns": "n"}.get(key, key)
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)
    if args.share is None:
        args.share = sorted(SHARE_MODELS) if args.preset == "full" else []
    return args


def _shapes(args) -> dict[str, Shape]:
    if args.custom:
        d, k, levels = (int(v) for v in args.custom.split(","))
        return {"custom": Shape(f"D={d} K={k} L={levels}", d, k, levels)}
    return {key: SHAPES[key] for key in args.shapes}


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    args = parse_args(argv)
    if args.render:
        print(render_table(harness.read_results(args.render)))
        return {}
    harness.set_threads(args.threads)
    settings = dict(reps=args.reps, budget_s=args.budget_s, seed=args.seed, threads=args.threads,
                    mem_cap_bytes=int(args.mem_cap_gib * (1 << 30)), max_call_s=args.max_call_s,
                    share_reps=args.share_reps)
    shapes = _shapes(args)
    meta = harness.collect_metadata(args.name, {**settings, "preset": args.preset, "n": list(args.n),
                                                "shapes": {k: vars(s) for k, s in shapes.items()},
                                                "providers": args.providers, "share": args.share,
                                                "share_batch": args.share_batch})
    if importlib.util.find_spec("faiss") is not None:
        import faiss

        meta["faiss_blas_threshold"] = faiss.cvar.distance_compute_blas_threshold
    started = time.perf_counter()
    records = []
    for key, shape in shapes.items():
        settings["ns_per_row"] = {}
        for n in sorted(args.n):
            log(f"{shape.label}: N={n:,} D={shape.dim} K={shape.num_codes} L={shape.levels}")
            records += run_shape(key, shape, n, args.providers, settings, log)
    for name in args.share:
        log(f"share of the quantizer in the MNIST {name} training step (batch {args.share_batch})")
        records += run_share(name, args.share_batch, settings, log)
    meta["wall_s"] = time.perf_counter() - started
    meta["load_average_end"] = harness.load_average()
    document = {"meta": meta, "records": [{**r, "threads": args.threads} for r in records]}
    path = harness.write_results(args.name, records, meta, _markdown(document), args.out)
    written = harness.read_results(path)  # the records as stored (stamped with the run's metadata)
    log(render_table(written))
    log(f"\nwrote {path} and {path.with_suffix('.md').name} ({meta['wall_s']:.0f} s)")
    return {**written, "path": str(path)}


if __name__ == "__main__":
    if "--exact-memory" in sys.argv[1:]:
        memory.ensure_allocator_env("benchmarks.module_step", sys.argv[1:])
    main()
