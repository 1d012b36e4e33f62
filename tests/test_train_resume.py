"""End-to-end trainer tests in subprocesses: SIGKILL mid-epoch + --resume equals an uninterrupted run; SIGINT
saves a checkpoint; torchrun/DDP with 2 gloo processes. Tiny models on the generated dataset (no files needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastrq.models.training.checkpoint import latest_checkpoint, load_checkpoint
from fastrq.models.training.metrics_log import read_jsonl, timing_free

TINY = ["--dataset", "synthetic", "--hidden", "4", "8", "--batch-size", "32", "--threads", "1", "--no-progress",
        "--no-plots", "--log-every", "4", "--eval-batch-size", "512", "--train-subset", "1024", "--test-subset", "256"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cmd(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fastrq.models.train", "--model", model, "--out", str(out), *TINY, *extra]


def _run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _kill_after_checkpoint(cmd: list[str], ckpt_dir: Path, min_step: int, timeout: float = 180) -> int:
    """Start ``cmd``, SIGKILL it as soon as a checkpoint at step ≥ min_step exists; return the step killed at."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            newest = latest_checkpoint(ckpt_dir)
            if newest is not None and int(newest.name.split("-")[1]) >= min_step:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before it could be killed: {proc.stderr.read()}")
            time.sleep(0.01)
        else:
            pytest.fail("no checkpoint appeared in time")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return load_checkpoint(ckpt_dir).step


@pytest.mark.slow
@pytest.mark.parametrize("model,extra", [("rqvae", ["--codebook-size", "16", "--num-quantizers", "2"]),
                                         ("vae", [])])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, model, extra):
    # 2 epochs × 32 steps; checkpoints every 4 steps and an evaluation every 8 (records written mid-epoch).
    common = ["--epochs", "2", "--checkpoint-every", "4", "--eval-every", "8", "--seed", "3", *extra]
    full = _run(_cmd(model, tmp_path / "full", *common))
    assert full.returncode == 0, full.stderr

    run = tmp_path / "killed"
    killed_at = _kill_after_checkpoint(_cmd(model, run, *common), run / "checkpoints", min_step=36)
    assert 32 < killed_at < 64  # mid-epoch (the second one)
    assert not (run / "final.json").exists()
    resumed = _run(_cmd(model, run, *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["resumed_from"] is not None

    expected = json.loads((tmp_path / "full" / "final.json").read_text())
    got = json.loads((run / "final.json").read_text())
    assert got["test"] == expected["test"]  # bit-exact: deterministic CPU training
    assert got["steps"] == expected["steps"] == 64
    assert timing_free(read_jsonl(run / "metrics.jsonl")) == timing_free(read_jsonl(tmp_path / "full" / "metrics.jsonl"))


@pytest.mark.slow
def test_sigint_saves_checkpoint_and_exits(tmp_path):
    run = tmp_path / "run"
    cmd = _cmd("vqvae", run, "--epochs", "50", "--checkpoint-every", "0", "--codebook-size", "16")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for training to be under way (first train record)
            if (run / "metrics.jsonl").exists() and read_jsonl(run / "metrics.jsonl"):
                break
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.02)
        assert latest_checkpoint(run / "checkpoints") is None  # periodic checkpoints are off
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "checkpoint saved" in stderr
    ckpt = load_checkpoint(run / "checkpoints")
    assert ckpt.step > 0
    assert ckpt.state["optimizer"] is not None and ckpt.state["extra"]["step"] == ckpt.step
    assert "quantizer.codebook" in ckpt.model_state


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_gloo(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fastrq.models.train", "--model", "rqvae", "--out", str(run), *TINY,
           "--epochs", "1", "--max-steps", "12", "--codebook-size", "16", "--device", "cpu"]
    env = _env()
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    final = json.loads((run / "final.json").read_text())
    assert final["world_size"] == 2 and final["steps"] == 12
    assert final["ranks_consistent"] is True  # weights and EMA codebooks bit-identical on both ranks
    assert all(u > 0 for u in final["test"]["usage"])
    ckpt = load_checkpoint(run / "checkpoints")
    assert len(ckpt.state["rng"]) == 2  # one RNG state per rank
    assert len(ckpt.state["extra"]["epoch_sums"]) == 2
