"""What follows each update: when to log, evaluate, save and end, the throughput warm-up, the non-finite streak."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from accel_recipes.checkpoints import RunState
from accel_recipes.config import make_args
from accel_recipes.engine.monitor import UpdateMonitor
from accel_recipes.errors import TrainingError
from accel_recipes.plan import TrainingPlan


def monitor_for(tmp_path, **fields) -> UpdateMonitor:
    training = make_args({"num_train_epochs": 1, **fields}).training
    plan = TrainingPlan.build(training, micro_batches_per_epoch=12, num_processes=1)
    return UpdateMonitor(training, plan, Accelerator(cpu=True), RunState(), tmp_path / "checkpoints")


def run_updates(monitor: UpdateMonitor, losses: list[float]) -> list:
    events = []
    monitor.start_timing()
    for loss in losses:
        monitor.state.update += 1
        events.append(monitor.after_update(torch.tensor(loss)))
        if events[-1].paused:
            monitor.start_timing()
    return events


def test_events_follow_the_strategies(tmp_path):
    monitor = monitor_for(
        tmp_path, logging_steps=4, eval_strategy="steps", eval_steps=6, save_strategy="steps", save_steps=3
    )
    events = run_updates(monitor, [1.0] * 12)
    assert [i + 1 for i, e in enumerate(events) if e.log] == [4, 8, 12]
    assert [i + 1 for i, e in enumerate(events) if e.evaluate] == [6, 12]
    assert [i + 1 for i, e in enumerate(events) if e.save] == [3, 6, 9, 12]
    assert [i + 1 for i, e in enumerate(events) if e.end] == [12]
    assert not any(e.stop for e in events)
    assert all(e.paused == (e.log or e.evaluate or e.save or e.end or i + 1 == 5) for i, e in enumerate(events))


def test_the_last_update_is_evaluated_also_when_eval_steps_does_not_divide_the_run(tmp_path):
    """As transformers' Trainer: the end of training is evaluated (for the best model and the target)."""
    monitor = monitor_for(tmp_path, logging_steps=100, eval_strategy="steps", eval_steps=5)
    events = run_updates(monitor, [1.0] * 12)
    assert [i + 1 for i, e in enumerate(events) if e.evaluate] == [5, 10, 12]


def test_throughput_warm_up_is_marked_once(tmp_path):
    monitor = monitor_for(tmp_path, throughput_warmup_steps=2, logging_steps=100)
    monitor.state.train_samples = 64
    run_updates(monitor, [1.0] * 3)
    assert monitor.state.steady_samples_offset == 64
    assert monitor.state.steady_seconds_offset is not None and monitor.state.train_seconds > 0


def test_a_non_finite_streak_stops_the_run_and_a_finite_loss_resets_it(tmp_path):
    monitor = monitor_for(tmp_path, max_nonfinite_steps=3, logging_steps=1)
    run_updates(monitor, [float("nan"), float("nan"), 1.0, float("inf")])
    assert not monitor.loss_is_finite()
    with pytest.raises(TrainingError, match="not finite for 3 consecutive updates.*no checkpoint was saved yet"):
        run_updates(monitor, [float("nan"), float("nan")])


@pytest.mark.parametrize("finite_updates", [0, 1, 3, 4, 7])
def test_the_run_stops_at_exactly_the_configured_streak(tmp_path, finite_updates):
    monitor = monitor_for(tmp_path, max_nonfinite_steps=5, logging_steps=1000, throughput_warmup_steps=1000)
    run_updates(monitor, [1.0] * finite_updates)
    with pytest.raises(TrainingError, match=f"not finite for 5 consecutive updates .*to {finite_updates + 5}\\)"):
        run_updates(monitor, [float("nan")] * 9)
    assert monitor.state.update == finite_updates + 5


def test_non_finite_weights_never_leave_the_run(tmp_path):
    monitor = monitor_for(tmp_path)
    model = torch.nn.Linear(2, 2)
    monitor.check_weights_finite(model)
    with torch.no_grad():
        model.bias[1] = float("nan")
    assert not monitor.weights_are_finite(model)
    with pytest.raises(TrainingError, match="weights are not finite.*no model folder was written.*no checkpoint"):
        monitor.check_weights_finite(model)
