"""Training throughput of the study's models with each fastrq backend usable here (``fastrq reproduce``'s last
table): forward + backward + Adam step, interleaved rounds, medians."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from fastrq.ops.backends import BACKENDS, backend_status

from ..networks.autoencoders import build_model
from .experiments import THROUGHPUT_MODELS, experiment_model

__all__ = ["measure_throughput"]


def _time_steps(model, optimizer, batches: list[torch.Tensor]) -> float:
    tick = time.perf_counter()
    for x in batches:
        out = model(x, return_stats=True)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return sum(b.shape[0] for b in batches) / (time.perf_counter() - tick)


def measure_throughput(images: torch.Tensor, device: torch.device, *, steps: int, rounds: int,
                       batch_size: int = 128, models: tuple[str, ...] = THROUGHPUT_MODELS) -> dict[str, Any]:
    """Training images/s (forward + backward + Adam step, ``batch_size`` images) of each model with each fastrq
    backend usable on ``device``. Rounds are interleaved (model A backend 1, A 2, B 1, …, then again) and the median
    over rounds is reported, so slow drifts of a shared machine hit every entry alike. Returns
    ``{"results": {model: {backend: images/s}}, "unavailable": {backend: reason}, ...}``."""
    status = backend_status(device)
    usable = [b for b in BACKENDS if status.get(b) is None]
    unavailable = {b: reason for b, reason in status.items() if reason is not None}
    if device.type == "cpu" and "triton" in usable:  # only under TRITON_INTERPRET=1: an emulator, not a fast path
        usable.remove("triton")
        unavailable["triton"] = "runs only in the Triton interpreter here (TRITON_INTERPRET=1): not timed"
    batches = [images[i * batch_size:(i + 1) * batch_size].to(device) for i in range(steps)]
    combos = []
    for name in models:
        for backend in (usable if name != "vae" else ["-"]):
            torch.manual_seed(0)
            config = experiment_model(name, **({"backend": backend} if backend != "-" else {}))
            model = build_model(config).to(device).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            _time_steps(model, optimizer, batches[:1])  # warm-up
            combos.append((name, backend, model, optimizer))
    samples: dict[tuple[str, str], list[float]] = {(n, b): [] for n, b, _, _ in combos}
    for _ in range(rounds):
        for name, backend, model, optimizer in combos:
            samples[(name, backend)].append(_time_steps(model, optimizer, batches))
    results: dict[str, dict[str, float]] = {}
    for (name, backend), values in samples.items():
        results.setdefault(name, {})[backend] = statistics.median(values)
    return {"results": results, "unavailable": unavailable, "steps": steps, "rounds": rounds,
            "batch_size": batch_size, "threads": torch.get_num_threads(), "device": str(device)}
