"""Per-seed results of one configuration → mean ± std (what results.json's ``results`` / ``ablation`` hold)."""

from __future__ import annotations

from typing import Any

from .statistics import mean_std

__all__ = ["aggregate", "TEST_METRICS"]

# test metrics averaged over seeds (scalars, or one value per level)
TEST_METRICS = ("loss", "recon_mse", "psnr", "aux_loss", "usage", "perplexity", "perplexity_ceiling", "level_mse",
                "residual_norm")


def aggregate(label: str, finals: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """``finals``: seed → the run's final.json (``{"diverged": True, ...}`` for a run stopped by the NaN guard).

    Returns None when no seed finished without diverging, else ``label``, ``model_config``, ``seeds`` (those
    averaged), ``diverged_seeds``, ``test`` (metric → mean over the seeds), ``test_std`` (sample std; 0 for one
    seed), ``per_seed`` (seed → test metrics), ``train_images`` / ``test_images``, ``train_images_per_s`` (mean),
    ``time_wall_s`` (sum over seeds)."""
    finished = {seed: final for seed, final in sorted(finals.items()) if not final.get("diverged")}
    if not finished:
        return None
    first = next(iter(finished.values()))
    test, test_std = {}, {}
    for key in TEST_METRICS:
        values = [final["test"][key] for final in finished.values() if key in final["test"]]
        if len(values) == len(finished):
            test[key], test_std[key] = mean_std(values)
    speeds = [f["train_images_per_s"] for f in finished.values() if f.get("train_images_per_s")]
    return {
        "label": label,
        "model": first["model"],
        "model_config": first["model_config"],
        "seeds": list(finished),
        "diverged_seeds": [seed for seed, final in sorted(finals.items()) if final.get("diverged")],
        "test": test,
        "test_std": test_std,
        "per_seed": {seed: final["test"] for seed, final in finished.items()},
        "train_images": first.get("train_images"),
        "test_images": first.get("test_images"),
        "steps": first.get("steps"),
        "train_images_per_s": sum(speeds) / len(speeds) if speeds else None,
        "time_wall_s": sum(f.get("time_wall_s") or 0.0 for f in finals.values()),
    }
