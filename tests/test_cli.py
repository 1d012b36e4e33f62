"""The ``fastrq`` console script and the train / reproduce entry points (small, in-process where possible)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastrq import cli
from fastrq.models.training.metrics_log import read_jsonl


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("info", "train", "reproduce", "sample"))
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_info_does_not_import_torchvision_or_models():
    code = ("import sys, fastrq.cli as c; rc = c.main(['info']); "
            "bad = [m for m in ('torchvision', 'matplotlib', 'fastrq.models.train', 'fastrq.models.training', "
            "'fastrq.models.study') if m in sys.modules]; "
            "print('LOADED', bad); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout and "backends for cpu" in result.stdout


def test_console_script_is_installed():
    import importlib.metadata

    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "fastrq"]
    assert scripts and scripts[0].value == "fastrq.cli:main"


def test_train_dispatches_prior_and_classifier(monkeypatch):
    """``fastrq train --model`` picks the trainer; the other options become that trainer's config."""
    from fastrq.models.study import sampling
    from fastrq.models.training import classifier, prior

    calls = {}
    monkeypatch.setattr(prior, "train_prior", lambda config: calls.setdefault("rqtransformer", config) and {})
    monkeypatch.setattr(classifier, "train_classifier", lambda config: calls.setdefault("classifier", config) and {})
    monkeypatch.setattr(sampling, "write_run_samples", lambda run, **kw: calls.setdefault("samples", (run, kw)))
    assert cli.main(["train", "--model", "rqtransformer", "--rqvae", "runs/rqvae", "--epochs", "2"]) == 0
    assert cli.main(["train", "--model=classifier", "--lr", "0.1"]) == 0
    assert calls == {"rqtransformer": prior.PriorTrainConfig(rqvae="runs/rqvae", epochs=2),
                     "samples": ("runs/rqtransformer", {"num": 64, "seed": 0}),
                     "classifier": classifier.ClassifierTrainConfig(lr=0.1)}


def test_train_without_data_prints_where_to_put_it(tmp_path, capsys):
    rc = cli.main(["train", "--model", "vqvae", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "MNIST was not found under" in err and "MNIST/raw" in err and "--download" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_smoke_writes_metrics_checkpoint_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--model", "rqvae", "--dataset", "synthetic", "--train-subset", "256", "--test-subset", "64",
                   "--hidden", "4", "8", "--codebook-size", "16", "--batch-size", "32", "--epochs", "1",
                   "--log-every", "2", "--out", str(out), "--threads", "1"])
    assert rc == 0
    final = json.loads((out / "final.json").read_text())
    assert final["steps"] == 8 and final["train_images_per_s"] > 0
    assert len(final["test"]["residual_norm"]) == 3
    records = read_jsonl(out / "metrics.jsonl")
    kinds = [r["kind"] for r in records]
    assert kinds.count("train") == 4 and kinds[-3:] == ["epoch", "eval", "final"]
    # codebook health per level during training: usage and perplexity of each logged batch (2 levels of 16 codes;
    # a batch of 32 images has 32·49 latent vectors, so at least one code and at most all 16 per level)
    for record in (r for r in records if r["kind"] == "train"):
        assert len(record["batch_usage"]) == len(record["batch_perplexity"]) == 2, record
        assert all(1 / 16 <= u <= 1 for u in record["batch_usage"])
        assert all(1 <= p <= 16 + 1e-4 for p in record["batch_perplexity"])
        assert all(p <= u * 16 + 1e-4 for u, p in zip(record["batch_usage"], record["batch_perplexity"]))
    assert (out / "checkpoints" / "latest.json").is_file()
    assert (out / "plots" / "curves.png").stat().st_size > 1000
    assert (out / "plots" / "reconstructions.png").stat().st_size > 1000
    assert (out / "plots" / "codebooks.png").stat().st_size > 1000  # usage and perplexity per level over training
    assert "final test: recon MSE" in capsys.readouterr().out


def test_resume_refuses_a_different_model(tmp_path, capsys):
    common = ["--dataset", "synthetic", "--train-subset", "64", "--test-subset", "32", "--hidden", "4", "8",
              "--batch-size", "32", "--epochs", "1", "--out", str(tmp_path), "--no-plots", "--no-progress"]
    assert cli.main(["train", "--model", "vqvae", "--codebook-size", "16", *common]) == 0
    assert cli.main(["train", "--model", "vqvae", "--codebook-size", "32", "--resume", *common]) == 2
    assert "was trained with" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_smoke_on_generated_data(tmp_path):
    out = tmp_path / "report"
    rc = cli.main(["reproduce", "--dataset", "synthetic", "--train-subset", "256", "--epochs", "1", "--out", str(out),
                         "--threads", "1", "--no-progress", "--no-prior", "--throughput-steps", "1", "--throughput-rounds", "1",
                         "--only", "vq256_ema", "rq2x128_ema", "rq3x128_ema"])
    assert rc == 0
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]) == {"vq256_ema", "rq2x128_ema", "rq3x128_ema"}
    assert {f["finding"][:2] for f in report["findings"]} >= {"1.", "2.", "3."}
    tp = report["throughput"]["results"]
    assert set(tp) == {"vq256_ema", "rq2x128_ema", "rq3x128_ema"} and all(v["torch"] > 0 for v in tp.values())
    text = (out / "report.md").read_text()
    assert "| RQ 3×128 (EMA) |" in text and "Not available: skipped (--no-prior)" in text
    # the title names the data set the study ran on, as the loaded data calls itself
    assert text.startswith("# RQ-VAE vs VQ-VAE on synthetic digits: reproduction report\n")
    assert report["dataset"] == {"name": "synthetic digits", "train_images": 256, "test_images": 512}
    assert report["failures"] == [] and "## Failures" not in text
    for fig in ("loss_curves", "residual_norms", "reconstructions", "ema_vs_learned"):
        assert (out / "figures" / f"{fig}.png").is_file()


def test_reproduce_prior_section_on_generated_data(tmp_path):
    """The prior section end to end (classifier, prior, generative report) on tiny generated data: the prior is
    sampled with the recommended per-depth temperatures, and plain temperature 1 is reported beside it."""
    from fastrq.models.study.sampling import recommended_temperature

    out = tmp_path / "report"
    rc = cli.main(["reproduce", "--dataset", "synthetic", "--train-subset", "256", "--epochs", "1", "--out", str(out),
                         "--threads", "1", "--no-progress", "--throughput-steps", "1", "--throughput-rounds", "1",
                         "--only", "rq2x128_ema"])
    assert rc == 0
    prior = json.loads((out / "prior_report.json").read_text())
    assert prior["sampling"]["temperature"] == recommended_temperature(2) == [1.0, 0.0]
    assert [row["sampling"]["temperature"] for row in prior["sweep"]] == [1.0]
    assert prior["samples"]["num_images"] == prior["sweep"][0]["num_images"] == 1000
    assert "prior_report.md" in (out / "report.md").read_text()


@pytest.mark.slow
def test_reproduce_reports_failing_sections_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    """A failing experiment, classifier or prior (an ImportError, a failed training) is not "not available": the
    study goes on with the other sections, report.md and results.json say what failed, and the exit status is 1."""
    from fastrq.models.study import reproduce

    real_train = reproduce.train_autoencoder

    def train_or_fail(config):
        if config.run_dir.name == "vq256_ema":
            raise RuntimeError("simulated experiment failure")
        return real_train(config)

    def missing_module(config):
        raise ImportError("simulated: the classifier module is missing")

    def failing_prior(config):
        raise RuntimeError("simulated prior failure")

    monkeypatch.setattr(reproduce, "train_autoencoder", train_or_fail)
    monkeypatch.setattr(reproduce, "train_classifier", missing_module)
    monkeypatch.setattr(reproduce, "train_prior", failing_prior)
    out = tmp_path / "report"
    rc = cli.main(["reproduce", "--dataset", "synthetic", "--train-subset", "256", "--epochs", "1", "--out", str(out),
                   "--threads", "1", "--no-progress", "--no-throughput", "--only", "vq256_ema", "rq2x128_ema"])
    assert rc == 1
    report = json.loads((out / "results.json").read_text())
    assert [f["section"] for f in report["failures"]] == ["vq256_ema", "classifier", "rqtransformer prior"]
    assert report["failures"][0]["error"] == "RuntimeError: simulated experiment failure"
    assert report["failures"][1]["error"] == "ImportError: simulated: the classifier module is missing"
    assert set(report["results"]) == {"rq2x128_ema"}  # the other experiment still ran
    assert report["prior"]["available"] is False and report["prior"]["failed"] is True
    assert not (out / "prior_report.json").exists()  # no evaluation without a classifier and a prior
    text = (out / "report.md").read_text()
    assert "## Failures" in text and "3 section(s) failed" in text and "exited with status 1" in text
    for line in ("- **vq256_ema**: RuntimeError: simulated experiment failure",
                 "- **classifier**: ImportError: simulated: the classifier module is missing",
                 "- **rqtransformer prior**: RuntimeError: simulated prior failure",
                 "**Failed**: classifier and rqtransformer prior training failed."):
        assert line in text, line
    assert "| RQ 2×128 (EMA) |" in text and "| VQ 256 (EMA) |" not in text
    err = capsys.readouterr().err
    assert "section vq256_ema failed" in err and "simulated prior failure" in err
