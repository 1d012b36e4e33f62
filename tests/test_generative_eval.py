"""Offline generative metrics: Fréchet distance against closed forms and scipy, confidence, class entropy, report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrq.errors import NonFiniteError, ShapeError
from fastrq.models.study.generative_metrics import (
    class_histogram_entropy,
    confident_fraction,
    frechet_distance,
    frechet_distance_from_features,
    gaussian_statistics,
    image_metrics,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@given(dim=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form(dim, seed):
    g = torch.Generator().manual_seed(seed)
    mu1, mu2 = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(dim, generator=g, dtype=torch.float64) + 0.1, torch.rand(dim, generator=g, dtype=torch.float64) + 0.1
    expected = float((mu1 - mu2).pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum())
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=15)
@given(dim=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_frechet_distance_matches_scipy_sqrtm_formula(dim, seed):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((dim, dim)), rng.standard_normal((dim, dim))
    sigma1, sigma2 = a @ a.T + 0.01 * np.eye(dim), b @ b.T + 0.01 * np.eye(dim)
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    covmean = scipy_linalg.sqrtm(sigma1 @ sigma2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))
    got = frechet_distance(*(torch.from_numpy(x) for x in (mu1, sigma1, mu2, sigma2)))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-8)
    # symmetric in its two arguments
    swapped = frechet_distance(*(torch.from_numpy(x) for x in (mu2, sigma2, mu1, sigma1)))
    assert got == pytest.approx(swapped, rel=1e-8, abs=1e-8)


def test_frechet_distance_of_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g)
    assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
    shifted = frechet_distance_from_features(a, a + 2.0)
    assert shifted == pytest.approx(4.0 * 6, rel=1e-6)  # only the mean moved: ‖Δμ‖² = 6·2²
    mu, sigma = gaussian_statistics(a.double())
    torch.testing.assert_close(sigma, torch.from_numpy(np.cov(a.double().numpy(), rowvar=False)))
    torch.testing.assert_close(mu, a.double().mean(0))
    with pytest.raises(ShapeError):
        gaussian_statistics(a[:1])
    with pytest.raises(NonFiniteError):
        frechet_distance_from_features(a.clone().index_fill_(0, torch.tensor([3]), math.nan), a)
    with pytest.raises(ShapeError):
        frechet_distance_from_features(a, a[:, :5])


def test_confidence_and_class_entropy():
    probs = torch.tensor([[0.95, 0.05], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert confident_fraction(probs) == pytest.approx(0.5)
    assert confident_fraction(probs, threshold=0.95) == pytest.approx(0.25)
    # argmax classes: 0, 0, 1, 0 (tie → 0): histogram (3, 1)
    assert class_histogram_entropy(probs) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    uniform = torch.eye(10).repeat(7, 1)
    assert class_histogram_entropy(uniform) == pytest.approx(math.log(10))
    assert class_histogram_entropy(torch.eye(10)[:1].repeat(5, 1)) == 0.0
    with pytest.raises(ShapeError):
        confident_fraction(torch.zeros(0, 10))


def test_image_metrics_with_a_classifier():
    from fastrq.models.networks.classifier import MNISTClassifier, predict

    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    images = torch.rand(40, 1, 28, 28)
    reference = predict(model, torch.rand(60, 1, 28, 28))
    assert reference["probs"].shape == (60, 10) and reference["features"].shape == (60, 128)
    out = image_metrics(model, images, reference["features"])
    assert out["num_images"] == 40 and sum(out["class_histogram"]) == 40
    assert 0.0 <= out["confident_fraction"] <= 1.0 and 0.0 <= out["class_entropy"] <= math.log(10) + 1e-12
    same = image_metrics(model, reference_images := torch.rand(60, 1, 28, 28), predict(model, reference_images)["features"])
    assert same["classifier_fid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ShapeError):
        model(torch.rand(2, 1, 27, 28))


def _untrained_runs(tmp_path):
    """Untrained tiny RQ-VAE, classifier and class-conditional prior checkpoints in their run folders' layout."""
    from fastrq.models.networks.autoencoders import ModelConfig, build_model
    from fastrq.models.networks.classifier import MNISTClassifier
    from fastrq.models.networks.rq_transformer import PriorConfig, RQTransformer
    from fastrq.models.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    vae_config = ModelConfig(model="rqvae", hidden=(8, 8), codebook_size=8, num_quantizers=2)
    save_checkpoint(tmp_path / "rqvae" / "checkpoints", step=0, model=build_model(vae_config),
                    config={"model_config": vae_config.to_dict()})
    save_checkpoint(tmp_path / "classifier" / "checkpoints", step=0, model=MNISTClassifier(), config={"model": "classifier"})
    prior_config = PriorConfig(codebook_size=8, depth=2, num_positions=49, dim=16, heads=2, spatial_layers=1,
                               depth_layers=1, num_classes=10)
    save_checkpoint(tmp_path / "prior" / "checkpoints", step=0, model=RQTransformer(prior_config),
                    config={"prior_config": prior_config.to_dict(), "height": 7, "width": 7,
                            "rqvae": str(tmp_path / "rqvae")})


def test_prior_report_end_to_end(tmp_path):
    """Untrained tiny checkpoints (the metrics' values are meaningless; the wiring, files and consistency are not)."""
    from fastrq.models.study.prior_report import TARGETS, prior_report

    _untrained_runs(tmp_path)
    report = prior_report(tmp_path / "report", prior=tmp_path / "prior", classifier=tmp_path / "classifier",
                          num_samples=24, dataset="synthetic", test_subset=40, top_k=4, batch_size=16,
                          sweep=[{"temperature": 0.0}, {"temperature": 1.0, "top_p": 0.5}])
    saved = json.loads((tmp_path / "report" / "prior_report.json").read_text())
    assert saved["num_samples"] == 24 and saved["samples"]["num_images"] == 24
    assert saved["reconstructions"]["num_images"] == 24
    assert len(saved["test_bits_per_code_by_depth"]) == 2 and all(b > 0 for b in saved["test_bits_per_code_by_depth"])
    assert report["targets_met"]["confident_fraction"] == (report["samples"]["confident_fraction"] >= TARGETS["confident_fraction"])
    assert report["fid_ratio_to_reconstructions"] == pytest.approx(
        report["samples"]["classifier_fid"] / report["reconstructions"]["classifier_fid"])
    for name in ("prior_samples.png", "prior_reconstructions.png", "prior_grids/samples_by_class.png", "prior_report.md"):
        assert (tmp_path / "report" / name).is_file(), name
    assert "classifier FID" in (tmp_path / "report" / "prior_report.md").read_text()
    assert [row["sampling"] for row in saved["sweep"]] == [
        {"temperature": 0.0, "top_k": None, "top_p": None}, {"temperature": 1.0, "top_k": None, "top_p": 0.5}]
    for row in saved["sweep"]:
        assert row["num_images"] == 24
        assert row["fid_ratio_to_reconstructions"] == pytest.approx(
            row["classifier_fid"] / report["reconstructions"]["classifier_fid"])
    assert "Sampling sweep" in (tmp_path / "report" / "prior_report.md").read_text()


def test_generative_eval_command(tmp_path, capsys):
    """``fastrq generative-eval`` (= ``python -m fastrq.models.generative_eval``): per-depth sampling settings and a
    sweep from the command line into the report."""
    import subprocess
    import sys

    from fastrq.cli import main as cli_main

    _untrained_runs(tmp_path)
    out = tmp_path / "report"
    assert cli_main(["generative-eval", "--out", str(out), "--prior", str(tmp_path / "prior"), "--classifier",
                     str(tmp_path / "classifier"), "--num-samples", "24", "--dataset", "synthetic",
                     "--temperature", "1.0,0", "--top-k", "4,0", "--sweep", "0.5:0:0.9"]) == 0
    saved = json.loads((out / "prior_report.json").read_text())
    assert saved["sampling"] == {"temperature": [1.0, 0.0], "top_k": [4, None], "top_p": None}
    assert [row["sampling"] for row in saved["sweep"]] == [{"temperature": 0.5, "top_k": None, "top_p": 0.9}]
    assert saved["rqvae"] == str(tmp_path / "rqvae") and saved["dataset"] == "synthetic digits"
    assert "## RQ-Transformer prior: generative evaluation" in capsys.readouterr().out
    assert cli_main(["generative-eval", "--prior", str(tmp_path / "prior"), "--temperature", "x"]) == 2
    assert "could not convert" in capsys.readouterr().err
    entry = subprocess.run([sys.executable, "-m", "fastrq.models.generative_eval", "--help"], capture_output=True,
                           text=True, timeout=120)
    assert entry.returncode == 0 and "usage: fastrq generative-eval" in entry.stdout


def test_parse_sweep():
    from fastrq.errors import InvalidArgumentError
    from fastrq.cli import parse_sweep

    assert parse_sweep(["0.9", "0.8:50", "1.0:0:0.9", "1.0,0.6", "1:64,0"]) == [
        {"temperature": 0.9}, {"temperature": 0.8, "top_k": 50}, {"temperature": 1.0, "top_p": 0.9},
        {"temperature": [1.0, 0.6]}, {"temperature": 1.0, "top_k": [64, None]}]
    for bad in ("", "a", "1:2:3:4", "1:x"):
        with pytest.raises(InvalidArgumentError, match="--sweep"):
            parse_sweep([bad])
