"""From the runs of each arm to one row of the table."""

from __future__ import annotations

import pytest

from accel_recipes.bench.ablate.summary import COLUMNS
from accel_recipes.bench.common.target import Target, summarize_target, time_to_target

from .fakes import fake_rows


def test_time_to_target_is_the_first_validation_reaching_it():
    metrics = [
        {"step": 5, "loss": 1.0, "train_runtime": 1.0},
        {"step": 10, "eval_accuracy": 0.5, "train_runtime": 2.0},
        {"step": 20, "eval_accuracy": 0.8, "train_runtime": 4.5},
        {"step": 30, "eval_accuracy": 0.9, "train_runtime": 7.0},
        {"step": 30, "final": True, "eval_accuracy": 0.95},
    ]
    assert time_to_target({}, metrics, Target(0.75)) == 4.5
    assert time_to_target({}, metrics, Target(0.93)) is None  # the final evaluation is not a training time


def _run(reached_at: float | None, final_accuracy: float) -> tuple[dict, list[dict]]:
    metrics = [{"eval_accuracy": 0.5, "train_runtime": 1.0}]
    if reached_at is not None:
        metrics.append({"eval_accuracy": 0.95, "train_runtime": reached_at})
    return {"eval_accuracy": final_accuracy, "train_runtime": 10.0}, metrics


def test_a_run_that_never_reached_the_target_counts_as_slower_than_any_that_did():
    target = Target(0.9)
    one_of_three = summarize_target([_run(2.0, 0.95), _run(None, 0.8), _run(None, 0.8)], target)
    assert one_of_three.time_to_target_s is None and one_of_three.reached == 1  # not the lucky seed's 2.0 s
    two_of_three = summarize_target([_run(6.0, 0.95), _run(None, 0.8), _run(2.0, 0.95)], target)
    assert two_of_three.time_to_target_s == 6.0 and two_of_three.reached == 2
    two_of_four = summarize_target([_run(2.0, 0.95), _run(4.0, 0.95), _run(None, 0.8), _run(None, 0.8)], target)
    assert two_of_four.time_to_target_s is None  # the median lies between a time and never
    assert summarize_target([_run(3.0, 0.95), _run(5.0, 0.95)], target).time_to_target_s == 4.0


def test_summary_medians_speedups_and_bound(tmp_path):
    rows, _ = fake_rows(tmp_path)
    baseline, amp, ga = rows
    assert baseline["speedup"] == 1.0  # exactly
    assert (baseline["speedup_min"], baseline["speedup_max"]) == (0.9, 1.1)
    assert amp["images_per_second_median"] == 160.0 and amp["speedup"] == pytest.approx(1.6)
    assert amp["fraction_of_bound"] == pytest.approx(0.4) and baseline["fraction_of_bound"] == pytest.approx(0.5)
    assert baseline["eval_accuracy"] == pytest.approx(0.82) and baseline["seconds_per_epoch"] == pytest.approx(5.0)
    assert baseline["time_to_target_s"] == 4.0 and baseline["target_reached"] == "3/3"
    assert baseline["final_reached_target"] == "3/3"  # final eval_accuracy 0.81 to 0.83
    assert ga["runs_ok"] == "0/1" and ga["speedup"] is None and ga["micro_batch"] == 16
    assert all(set(row) == set(COLUMNS) for row in rows)
