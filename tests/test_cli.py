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


def test_train_exposes_every_codebook_health_option(tmp_path, monkeypatch):
    """Each quantizer option of ModelConfig has a ``fastrq train`` flag, with ModelConfig's value as its default,
    and reaches the model (run.json's model_config and the quantizer itself)."""
    from fastrq.models.networks.autoencoders import ModelConfig
    from fastrq.models.training import autoencoder

    seen = {}
    monkeypatch.setattr(autoencoder, "train_autoencoder", lambda config: seen.setdefault("config", config) and {})
    assert cli.main(["train", "--model", "rqvae", "--no-plots"]) == 0
    defaults = seen.pop("config").model
    for name in ("kmeans_init", "dead_code_threshold", "rotation_trick", "use_cosine_sim", "codebook_dim", "decay"):
        assert getattr(defaults, name) == getattr(ModelConfig, name), name
    flipped = ["--no-kmeans-init" if ModelConfig.kmeans_init else "--kmeans-init",
               "--no-rotation-trick" if ModelConfig.rotation_trick else "--rotation-trick",
               "--no-cosine" if ModelConfig.use_cosine_sim else "--cosine"]
    assert cli.main(["train", "--model", "vqvae", "--no-plots", "--codebook-dim", "3", "--dead-code-threshold", "5",
                     "--decay", "0.7", *flipped]) == 0
    model = seen["config"].model
    assert model.kmeans_init is not ModelConfig.kmeans_init and model.rotation_trick is not ModelConfig.rotation_trick
    assert model.use_cosine_sim is not ModelConfig.use_cosine_sim
    assert (model.codebook_dim, model.dead_code_threshold, model.decay) == (3, 5.0, 0.7)
    from fastrq.models.networks.autoencoders import build_model

    quantizer = build_model(model).quantizer
    assert (quantizer.codebook_dim, quantizer.dead_code_threshold, quantizer.decay) == (3, 5.0, 0.7)
    assert quantizer.rotation_trick == model.rotation_trick and quantizer.use_cosine_sim == model.use_cosine_sim
    assert quantizer.kmeans_init == model.kmeans_init


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
                         "--seeds", "1", "--no-ablation", "--no-stability",
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
                         "--seeds", "1", "--no-ablation", "--no-stability", "--only", "rq2x128_ema"])
    assert rc == 0
    prior = json.loads((out / "prior_report.json").read_text())
    assert prior["sampling"]["temperature"] == recommended_temperature(2) == [1.0, 0.0]
    assert [row["sampling"]["temperature"] for row in prior["sweep"]] == [1.0]
    assert prior["samples"]["num_images"] == prior["sweep"][0]["num_images"] == 1000
    text = (out / "report.md").read_text()
    assert "prior_report.md" in text
    # below 60 % confident samples the report says plainly that the prior section is a smoke run
    smoke = prior["samples"]["confident_fraction"] < 0.6
    assert ("**This is a smoke run, not a result**" in text) == smoke
    assert ("benchmarks/results/prior_2026-11-24/" in text) == smoke


@pytest.mark.slow
def test_reproduce_reports_failing_sections_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    """A failing experiment, classifier or prior (an ImportError, a failed training) is not "not available": the
    study goes on with the other sections, report.md and results.json say what failed, and the exit status is 1."""
    from fastrq.models.study import reproduce

    real_train = reproduce.train_autoencoder

    def train_or_fail(config):
        if config.run_dir.parent.name == "vq256_ema":  # runs/<experiment>/seed<k>
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
                   "--threads", "1", "--no-progress", "--no-throughput", "--seeds", "1", "--no-ablation",
                   "--no-stability", "--only", "vq256_ema", "rq2x128_ema"])
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


@pytest.mark.slow
def test_reproduce_seeds_ablation_and_stability_in_two_workers(tmp_path):
    """The whole study on tiny generated data with 2 seeds in 2 worker processes: every configuration is trained
    once per seed (the ablation's defaults and the sweep's default learning rate are the main runs), the ablation and
    stability tables and finding 4 are in the report, and running it again reuses every run."""
    out = tmp_path / "report"
    args = ["reproduce", "--dataset", "synthetic", "--train-subset", "256", "--epochs", "1", "--out", str(out),
            "--threads", "2", "--jobs", "2", "--seeds", "2", "--no-progress", "--no-prior", "--no-throughput",
            "--only", "vq256_ema", "vq256_learned", "rq2x128_ema", "rq2x128_learned"]
    assert cli.main(args) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["jobs"] == 2 and report["threads_per_job"] == 1 and report["seeds"] == [0, 1]
    runs = sorted(p.parent.name for p in (out / "runs").glob("*/seed1"))
    # 4 main experiments + 2 models × the ablation rows but "defaults" + 4 experiments × the other learning rates,
    # each trained once
    from fastrq.models.study.experiments import ABLATION_ROWS, PRESETS

    other_lrs = len(PRESETS["quick"]["stability_lrs"]) - 1
    assert len(runs) == 4 + 2 * (len(ABLATION_ROWS) - 1) + 4 * other_lrs and "ablation_vq256_defaults" not in runs
    assert all((out / "runs" / name / f"seed{s}" / "final.json").is_file() for name in runs for s in (0, 1))
    for result in report["results"].values():
        assert result["seeds"] == [0, 1] and set(result["test_std"]) >= {"recon_mse", "usage", "perplexity"}
    ablation = report["ablation"]
    assert set(ablation) == {"vq256", "rq2x128"}
    rows = ablation["rq2x128"]["rows"]
    assert list(rows)[0] == "none" and list(rows)[-1] == "defaults" and rows["defaults"]["run"] == "rq2x128_ema"
    assert all(row["available"] and len(row["usage"]) == 2 for row in rows.values())
    stability = report["stability"]
    assert len(stability["rows"]) == 4 * len(stability["lrs"]) and all(r["runs"] == 2 for r in stability["rows"])
    assert set(stability["comparisons"]) == {"VQ 256", "RQ 2×128"}
    verdicts = {f["finding"][:2]: f["verdict"] for f in report["findings"]}
    assert verdicts["4."] in ("reproduced", "not reproduced", "not distinguishable")
    assert (out / "figures" / "lr_sweep_vq256.png").is_file() and (out / "figures" / "lr_sweep_rq2x128.png").is_file()
    text = (out / "report.md").read_text()
    for heading in ("## Codebook health (test set)", "## Codebook-health ablation", "### VQ 256", "### RQ 2×128",
                    "## Training stability", "not distinguishable"):
        assert heading in text, heading
    # again: every run is reused, the numbers are the same
    first_mtime = (out / "runs" / "vq256_ema" / "seed0" / "final.json").stat().st_mtime_ns
    assert cli.main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["results"]["vq256_ema"]["test"] == report["results"]["vq256_ema"]["test"]
    assert (out / "runs" / "vq256_ema" / "seed0" / "final.json").stat().st_mtime_ns == first_mtime
