"""The one training loop (fastrq.models.training.loop) on a toy task: NaN guard before the update, stop request
with a checkpoint first, exact resume, budgets; and the classifier trainer resuming mid-epoch (in-process, fast)."""

from __future__ import annotations

import json

import pytest
import torch

from fastrq.cli import main as cli_main
from fastrq.models.training import loop as loop_module
from fastrq.models.training.checkpoint import latest_checkpoint, load_checkpoint
from fastrq.models.training.data import batch_indices, epoch_order
from fastrq.models.training.interrupt import TrainingInterrupted
from fastrq.models.training.loop import LoopState, TrainingDivergedError, TrainingLoop, TrainingTask
from fastrq.models.training.metrics_log import read_jsonl, timing_free

pytestmark = pytest.mark.usefixtures("one_thread")


class _Regression(TrainingTask):
    """Least squares with SGD on 64 fixed points, 8 per batch (8 steps per epoch); ``poison_at``: the call of
    :meth:`loss` that returns NaN."""

    name = "toy"

    def __init__(self, poison_at: int = 0):
        torch.manual_seed(0)
        self.x = torch.randn(64, 3)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.poison_at, self.calls, self.weights_seen = poison_at, 0, []

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return batch_indices(epoch_order(64, 0, epoch), 8)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.weights_seen.append(self.model.weight.detach().clone())
        loss = (self.model(self.x[batch]).squeeze(-1) - self.y[batch]).pow(2).mean()
        return loss * float("nan") if self.calls == self.poison_at else loss

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def end_epoch(self, state: LoopState) -> None:
        self.metrics.write({"kind": "eval", "step": state.step, "epoch": state.epoch,
                            "weight": self.model.weight.detach().flatten().tolist()})


def _loop(task: _Regression, out, **kw) -> TrainingLoop:
    loop = TrainingLoop(task, out=out, run_config={"toy": 1}, epochs=3, log_every=2, checkpoint_every=4,
                        progress=False, **kw)
    task.metrics = loop.metrics
    return loop


def test_non_finite_loss_stops_before_the_update(tmp_path):
    task = _Regression(poison_at=7)
    with pytest.raises(TrainingDivergedError, match="diverged"):
        _loop(task, tmp_path).run()
    # the weights are those the NaN loss was computed with: no update with it
    assert torch.equal(task.model.weight.detach(), task.weights_seen[-1])
    newest = latest_checkpoint(tmp_path / "checkpoints")
    assert newest.name == "step-00000004"  # the periodic checkpoint before the NaN, nothing after it
    assert torch.equal(load_checkpoint(newest).model_state["weight"], task.weights_seen[4])
    assert json.loads((tmp_path / "run.json").read_text())["resumed_from"] is None


def test_stop_request_checkpoints_first_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    whole = _Regression()
    assert _loop(whole, tmp_path / "whole").run() == "epochs"

    class StopAtStep(loop_module.StopRequest):
        calls = 0

        def requested(self, sync: bool = False) -> bool:
            StopAtStep.calls += 1
            return StopAtStep.calls == 11  # mid-epoch 2, between periodic checkpoints

    monkeypatch.setattr(loop_module, "StopRequest", StopAtStep)
    with pytest.raises(TrainingInterrupted, match="checkpoint saved"):
        _loop(_Regression(), tmp_path / "split").run()
    assert load_checkpoint(tmp_path / "split" / "checkpoints").step == 11
    monkeypatch.undo()
    resumed = _Regression()
    loop = _loop(resumed, tmp_path / "split", resume=True)
    assert loop.run() == "epochs"
    assert loop.resumed_from.endswith("step-00000011") and loop.state.step == 24
    assert torch.equal(resumed.model.weight, whole.model.weight)
    assert timing_free(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == \
        timing_free(read_jsonl(tmp_path / "whole" / "metrics.jsonl"))
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step-00000024"


def test_step_and_time_budgets_end_with_a_checkpoint(tmp_path):
    loop = _loop(_Regression(), tmp_path / "steps", max_steps=10)
    assert loop.run() == "max_steps" and loop.state.step == 10
    assert load_checkpoint(tmp_path / "steps" / "checkpoints").step == 10
    loop = _loop(_Regression(), tmp_path / "time", max_minutes=1e-9)
    assert loop.run() == "max_minutes" and loop.state.step == 1
    assert load_checkpoint(tmp_path / "time" / "checkpoints").step == 1


def test_classifier_resumes_mid_epoch_after_a_stop_request(tmp_path, monkeypatch):
    args = ["train", "--model", "classifier", "--dataset", "synthetic", "--train-subset", "128", "--test-subset", "32",
            "--epochs", "2", "--batch-size", "32", "--no-progress"]
    assert cli_main([*args, "--out", str(tmp_path / "whole")]) == 0

    class StopAtStep(loop_module.StopRequest):
        calls = 0

        def requested(self, sync: bool = False) -> bool:
            StopAtStep.calls += 1
            return StopAtStep.calls == 6  # mid-epoch 2

    monkeypatch.setattr(loop_module, "StopRequest", StopAtStep)
    assert cli_main([*args, "--out", str(tmp_path / "split")]) == 130
    assert load_checkpoint(tmp_path / "split" / "checkpoints").step == 6
    monkeypatch.undo()
    assert cli_main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    whole = json.loads((tmp_path / "whole" / "final.json").read_text())
    split = json.loads((tmp_path / "split" / "final.json").read_text())
    assert split["test_accuracy"] == whole["test_accuracy"]
    whole_state = load_checkpoint(tmp_path / "whole" / "checkpoints").model_state
    split_state = load_checkpoint(tmp_path / "split" / "checkpoints").model_state
    assert all(torch.equal(split_state[k], v) for k, v in whole_state.items())
    assert timing_free(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == \
        timing_free(read_jsonl(tmp_path / "whole" / "metrics.jsonl"))
