"""Models, data, checkpoints and metrics log of fastrq.models (fast, in-process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastrq
from fastrq.models.training import checkpoint as ckpt_mod
from fastrq.models.networks.autoencoders import VAE, VQVAE, RQVAE, ModelConfig, build_model
from fastrq.models.training.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from fastrq.models.training.data import MissingDataError, batch_indices, default_data_dir, epoch_order, load_dataset
from fastrq.models.training.metrics_log import MetricsLog, read_jsonl
from fastrq.models.training.evaluation import evaluate, psnr_from_mse

SMALL = dict(hidden=(4, 8), codebook_size=16)
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _model(kind: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(model=kind, **{**SMALL, **kw}))


# ------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("kind,levels", [("vae", 0), ("vqvae", 1), ("rqvae", 2)])
def test_forward_shapes_and_losses(kind, levels):
    model = _model(kind)
    x = torch.rand(3, 1, 28, 28)
    out = model(x, return_stats=True)
    assert out["recon"].shape == x.shape
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], out["recon_loss"] + (model.config.kl_weight if kind == "vae" else 1.0) * out["aux_loss"])
    torch.testing.assert_close(out["recon_loss"], torch.nn.functional.mse_loss(out["recon"], x))
    if levels:
        assert out["codes"].shape == (3, 7, 7, levels) and out["codes"].dtype == torch.int64
        assert set(out["stats"]) >= {"mse", "usage", "perplexity", "dead_codes"}
        assert all(v.shape == (levels,) for v in out["stats"].values())
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(("encoder", "decoder")))


def test_models_built_on_fastrq_quantizers():
    assert isinstance(_model("vqvae").quantizer, fastrq.VectorQuantizer)
    rq = _model("rqvae", num_quantizers=3)
    assert isinstance(rq.quantizer, fastrq.ResidualQuantizer) and rq.quantizer.num_quantizers == 3
    assert isinstance(_model("rqvae", ema=False).quantizer.codebook, torch.nn.Parameter)
    assert type(_model("vae")) is VAE and type(_model("vqvae")) is VQVAE and type(_model("rqvae")) is RQVAE


def test_bad_input_and_config_raise_clear_errors():
    model = _model("rqvae")
    with pytest.raises(fastrq.ShapeError):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(fastrq.ShapeError):
        model(torch.rand(2, 1, 30, 30))
    with pytest.raises(fastrq.InvalidArgumentError):
        build_model(ModelConfig(model="gan"))
    with pytest.raises(fastrq.InvalidArgumentError):
        VQVAE(ModelConfig(model="vqvae", num_quantizers=2))


def test_encode_decode_codes_match_eval_forward():
    model = _model("rqvae", num_quantizers=3).eval()
    x = torch.rand(4, 1, 28, 28)
    codes = model.encode_codes(x)
    assert codes.shape == (4, 7, 7, 3)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(codes, out["codes"])
    torch.testing.assert_close(model.decode_codes(codes), out["recon"])
    vq = _model("vqvae").eval()
    assert vq.encode_codes(x).shape == (4, 7, 7, 1)


def test_config_round_trip_through_json():
    config = ModelConfig(model="rqvae", hidden=(8, 16), num_quantizers=3, ema=False)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_evaluate_changes_nothing_and_reports_consistent_numbers():
    model = _model("rqvae", num_quantizers=3).train()
    images = torch.rand(20, 1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = evaluate(model, images, batch_size=7)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert len(result["residual_norm"]) == 4 and len(result["usage"]) == 3
    # independent check of the residual after all levels: latent minus the decoded codes
    model.eval()
    with torch.no_grad():
        z = model.encoder(images).movedim(1, -1).reshape(-1, 4)
        decoded = model.quantizer.decode(model.encode_codes(images)).movedim(1, -1).reshape(-1, 4)
        with torch.no_grad():
            recon = model(images)["recon"]
    expected_norm = (z - decoded).norm(dim=-1).mean().item()
    assert result["residual_norm"][-1] == pytest.approx(expected_norm, rel=1e-5, abs=1e-7)
    assert result["level_mse"][-1] == pytest.approx((z - decoded).pow(2).mean().item(), rel=1e-5, abs=1e-9)
    assert result["recon_mse"] == pytest.approx(torch.nn.functional.mse_loss(recon, images).item(), rel=1e-5)
    per_image = (recon.clamp(0, 1) - images).pow(2).flatten(1).mean(1)
    assert result["psnr"] == pytest.approx(psnr_from_mse(per_image).mean().item(), rel=1e-5)
    assert all(0 < u <= 1 for u in result["usage"]) and all(p >= 1 for p in result["perplexity"])


# ------------------------------------------------------------------------------------------------ checkpoints


def _trained(kind="rqvae"):
    model = _model(kind)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(torch.rand(4, 1, 28, 28))
    out["loss"].backward()
    optimizer.step()
    return model, optimizer


def test_checkpoint_round_trip(tmp_path):
    model, optimizer = _trained()
    path = save_checkpoint(tmp_path, step=7, model=model, optimizer=optimizer, config={"name": "x"}, extra={"k": 3})
    assert path.name == "step-00000007" and latest_checkpoint(tmp_path) == path
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 7 and loaded.config["name"] == "x" and loaded.state["extra"] == {"k": 3}
    fresh = _model("rqvae", ema=True)
    torch.manual_seed(99)
    fresh = build_model(model.config)
    load_model_weights(fresh, loaded)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    new_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    new_opt.load_state_dict(loaded.state["optimizer"])
    assert new_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, optimizer = _trained()
    first = save_checkpoint(tmp_path, step=1, model=model, optimizer=optimizer, config={})
    before = (first / "model.safetensors").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, step=2, model=model, optimizer=optimizer, config={})
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert (first / "model.safetensors").read_bytes() == before
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "step-00000002").exists()


def test_latest_checkpoint_falls_back_and_prunes(tmp_path):
    model, optimizer = _trained("vae")
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step=step, model=model, optimizer=optimizer, config={}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    (tmp_path / "latest.json").unlink()
    (tmp_path / ".tmp-step-00000004-abc").mkdir()  # a folder a killed writer left behind
    (tmp_path / "step-00000009").mkdir()  # incomplete: ignored
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    with pytest.raises(fastrq.StateDictError):
        load_checkpoint(tmp_path / "empty")


def test_loading_wrong_checkpoint_raises_and_changes_nothing(tmp_path):
    model, optimizer = _trained("rqvae")
    save_checkpoint(tmp_path, step=1, model=model, optimizer=optimizer, config={})
    other = _model("rqvae", codebook_size=32)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(fastrq.StateDictError):
        load_model_weights(other, tmp_path)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(fastrq.StateDictError):
        load_model_weights(_model("vae"), tmp_path)


def test_rng_state_capture_restore():
    import random

    import numpy as np

    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), float(np.random.rand()), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


# ------------------------------------------------------------------------------------------------ metrics log


def test_metrics_log_truncates_after_step_and_skips_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in range(1, 6):
        log.write({"kind": "train", "step": step, "loss": torch.tensor(step / 10)})
    log.write({"kind": "final", "step": 5, "loss": float("nan")})
    with open(tmp_path / "m.jsonl", "a") as handle:
        handle.write('{"kind": "train", "st')  # torn by a kill
    assert read_jsonl(tmp_path / "m.jsonl")[-1] == {"kind": "final", "step": 5, "loss": "nan"}
    log.truncate_after(5, drop_at_step=("final",))
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1, 2, 3, 4, 5]
    log.truncate_after(3)
    assert [r["loss"] for r in read_jsonl(tmp_path / "m.jsonl")] == pytest.approx([0.1, 0.2, 0.3])
    MetricsLog(tmp_path / "off.jsonl", enabled=False).write({"step": 1})
    assert not (tmp_path / "off.jsonl").exists()


# ------------------------------------------------------------------------------------------------ data


def test_missing_mnist_gives_a_clear_offline_message(tmp_path):
    with pytest.raises(MissingDataError) as info:
        load_dataset("mnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "--download" in message and "FASTRQ_DATA" in message
    assert isinstance(info.value, fastrq.FastRQError)


def test_data_dir_default_from_environment(monkeypatch):
    monkeypatch.setenv("FASTRQ_DATA", "/somewhere/data")
    assert default_data_dir() == "/somewhere/data"
    monkeypatch.delenv("FASTRQ_DATA")
    assert default_data_dir() == "./data"


def test_synthetic_dataset_is_deterministic_and_in_range():
    a = load_dataset("synthetic", subset=64)
    b = load_dataset("synthetic", subset=64)
    assert a.images.shape == (64, 1, 28, 28) and torch.equal(a.images, b.images)
    assert a.images.min() >= 0 and a.images.max() <= 1 and a.images.std() > 0.05


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8, 300), batch=st.integers(1, 16), world=st.integers(1, 4), seed=st.integers(0, 10**6),
       epoch=st.integers(0, 50))
def test_batches_partition_each_global_batch_across_ranks(n, batch, world, seed, epoch):
    order = epoch_order(n, seed, epoch)
    assert torch.equal(order, epoch_order(n, seed, epoch)) and sorted(order.tolist()) == list(range(n))
    if n < batch * world:
        with pytest.raises(fastrq.InvalidArgumentError):
            batch_indices(order, batch, 0, world)
        return
    per_rank = [batch_indices(order, batch, r, world) for r in range(world)]
    steps = n // (batch * world)
    assert all(len(b) == steps for b in per_rank)
    for s in range(steps):
        together = torch.cat([per_rank[r][s] for r in range(world)])
        assert sorted(together.tolist()) == sorted(order[s * batch * world:(s + 1) * batch * world].tolist())


@pytest.mark.skipif(not (MNIST_DIR / "MNIST" / "raw").is_dir(), reason=f"MNIST IDX files not at {MNIST_DIR}/MNIST/raw")
def test_real_mnist_loads_from_shared_folder():
    split = load_dataset("mnist", data_dir=str(MNIST_DIR), train=False, subset=100)
    assert split.images.shape == (100, 1, 28, 28) and split.images.dtype == torch.float32
    assert 0.0 <= float(split.images.min()) and float(split.images.max()) == 1.0
    assert split.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits
    assert split.name == "MNIST"


def _write_idx(path: Path, array: "np.ndarray") -> None:
    """An IDX file (the MNIST format): magic 0x08 (unsigned byte) + number of dimensions, big-endian sizes, bytes."""
    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_other_mnist_format_sets_load_and_carry_their_name(tmp_path):
    """Any set in MNIST's format and torchvision layout (here a tiny Fashion-MNIST stand-in) loads the same way, and
    the split says what it is, read from the data: what reports print."""
    import numpy as np

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    split = load_dataset("fashion-mnist", data_dir=str(tmp_path), train=False)
    assert split.name == "FashionMNIST" and split.images.shape == (5, 1, 28, 28)
    assert split.labels.tolist() == [0, 1, 2, 3, 4] and 0 <= float(split.images.min()) <= float(split.images.max()) <= 1
    assert load_dataset("fashion-mnist", data_dir=str(tmp_path), subset=3).name == "FashionMNIST"
    assert load_dataset("synthetic", subset=4).name == "synthetic digits"
    with pytest.raises(MissingDataError, match="KMNIST was not found under"):
        load_dataset("kmnist", data_dir=str(tmp_path))
