"""The prior / classifier / sample commands end to end on tiny synthetic runs: files, exact resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fastrq.cli import main as cli_main
from fastrq.models.networks.autoencoders import ModelConfig, build_model
from fastrq.models.training.checkpoint import latest_checkpoint, save_checkpoint
from fastrq.models.training.metrics_log import read_jsonl, timing_free


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def rqvae_run(tmp_path_factory):
    """An (untrained) tiny RQ-VAE checkpoint in the trainer's layout: its codes are as good as any for the prior."""
    path = tmp_path_factory.mktemp("rqvae")
    torch.manual_seed(0)
    config = ModelConfig(model="rqvae", hidden=(8, 8), codebook_size=8, num_quantizers=2)
    save_checkpoint(path / "checkpoints", step=1, model=build_model(config), config={"model_config": config.to_dict()})
    return path


def prior_args(rqvae_run, out, *extra):
    return ["train", "--model", "rqtransformer", "--rqvae", str(rqvae_run), "--out", str(out), "--dataset", "synthetic",
            "--train-subset", "96", "--test-subset", "32", "--batch-size", "16", "--epochs", "2", "--dim", "16",
            "--heads", "2", "--spatial-layers", "1", "--depth-layers", "1", "--class-cond", "--no-progress",
            "--log-every", "2", "--checkpoint-every", "4", "--warmup-steps", "3", "--grid-samples", "4", *extra]


def test_prior_training_writes_run_folder_and_samples(rqvae_run, tmp_path):
    out = tmp_path / "prior"
    assert cli_main(prior_args(rqvae_run, out)) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["steps"] == 12 and final["epochs_completed"] == 2 and final["stopped_by"] == "epochs"
    assert len(final["test_bits_per_code"]) == 2 and all(0 < b < 10 for b in final["test_bits_per_code"])
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [6, 12]
    assert (out / "samples.png").is_file() and (out / "samples_by_class.png").is_file()
    assert latest_checkpoint(out / "checkpoints") is not None

    samples = tmp_path / "samples"
    assert cli_main(["sample", "--prior", str(out), "--out", str(samples), "--num", "6", "--per-class", "2",
                     "--temperature", "1.0,0.5", "--top-k", "4", "--top-p", "0,0.9"]) == 0
    saved = torch.load(samples / "codes.pt", weights_only=True)
    assert saved["codes"].shape == (6, 7, 7, 2) and saved["class_codes"].shape == (20, 7, 7, 2)
    assert torch.equal(saved["class_labels"], torch.arange(10).repeat_interleave(2))
    assert (samples / "samples.png").is_file() and (samples / "samples_by_class.png").is_file()


def test_prior_resume_after_interrupt_equals_uninterrupted_run(rqvae_run, tmp_path, monkeypatch):
    import fastrq.models.training.loop as loop_module

    assert cli_main(prior_args(rqvae_run, tmp_path / "whole", "--grid-samples", "0")) == 0

    class StopAtSeventhStep(loop_module.StopRequest):
        calls = 0

        def requested(self, sync: bool = False) -> bool:
            StopAtSeventhStep.calls += 1
            return StopAtSeventhStep.calls == 7  # mid-epoch 2, between periodic checkpoints

    monkeypatch.setattr(loop_module, "StopRequest", StopAtSeventhStep)
    assert cli_main(prior_args(rqvae_run, tmp_path / "split", "--grid-samples", "0")) == 130
    assert not (tmp_path / "split" / "final.json").exists()
    assert cli_main(prior_args(rqvae_run, tmp_path / "split", "--grid-samples", "0", "--resume")) == 0
    whole = json.loads((tmp_path / "whole" / "final.json").read_text())
    split = json.loads((tmp_path / "split" / "final.json").read_text())
    assert split["test_bits_per_code"] == whole["test_bits_per_code"]
    assert split["steps"] == whole["steps"]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time_encode_s",)} for r in timing_free(rs)]
    assert strip(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "whole" / "metrics.jsonl"))


def test_prior_rejects_bad_inputs(rqvae_run, tmp_path, capsys):
    assert cli_main(["train", "--model", "rqtransformer", "--rqvae", str(tmp_path / "nothing"), "--out",
                     str(tmp_path / "p"), "--dataset", "synthetic"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert cli_main(["sample", "--prior", str(rqvae_run), "--out", str(tmp_path / "s")]) == 2  # not a prior
    assert "not an RQ-Transformer prior" in capsys.readouterr().err
    assert cli_main(prior_args(rqvae_run, tmp_path / "p2", "--dim", "15")) == 2  # dim not divisible by heads
    assert "divisible" in capsys.readouterr().err


def test_classifier_training_on_synthetic_digits(tmp_path):
    out = tmp_path / "classifier"
    assert cli_main(["train", "--model", "classifier", "--dataset", "synthetic", "--train-subset", "512",
                     "--test-subset", "128", "--epochs", "4", "--batch-size", "32", "--out", str(out), "--no-progress"]) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["test_accuracy"] > 0.5  # 10 synthetic stroke classes, chance is 0.1
    # `python -m fastrq.models.classifier` (the command benchmarks/results/prior_2026-11-24 records) is the same
    entry = subprocess.run([sys.executable, "-m", "fastrq.models.classifier", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert entry.returncode == 0 and "usage: fastrq train --model classifier" in entry.stdout
    from fastrq.models.training.loaders import load_classifier

    model = load_classifier(out)
    assert not model.training and model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_prior_stops_on_non_finite_loss_before_updating(rqvae_run, tmp_path, monkeypatch, capsys):
    from fastrq.models.networks.rq_transformer import RQTransformer

    original = RQTransformer.loss
    calls = {"n": 0}
    seen: list[torch.Tensor] = []

    def poisoned(self, codes, labels=None):
        calls["n"] += 1
        seen.append(self.head.weight.detach().clone())
        loss = original(self, codes, labels)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(RQTransformer, "loss", poisoned)
    assert cli_main(prior_args(rqvae_run, tmp_path / "nan")) == 2
    assert "diverged" in capsys.readouterr().err
    assert calls["n"] == 6 and not (tmp_path / "nan" / "final.json").exists()
    ckpt = latest_checkpoint(tmp_path / "nan" / "checkpoints")
    assert ckpt is not None and ckpt.name == "step-00000004"  # the periodic checkpoint before the NaN is intact
    from fastrq.models.training.checkpoint import load_checkpoint

    weights = load_checkpoint(ckpt).model_state["head.weight"]
    assert torch.isfinite(weights).all() and torch.equal(weights, seen[4])  # = the weights after step 4
