"""Checkpoints: the run's counters round-trip, only complete checkpoints count, rotation keeps the newest, and
``resume_from_checkpoint`` resolves to a complete one or says what to pass."""

from __future__ import annotations

import pytest

from accel_recipes.checkpoints import STATE_FILE, RunState, list_checkpoints, resolve_checkpoint, rotate_checkpoints
from accel_recipes.config import make_args
from accel_recipes.errors import TrainingError


def make_checkpoint(directory, update: int, complete: bool = True):
    folder = directory / f"checkpoint-{update}"
    folder.mkdir(parents=True)
    if complete:
        (folder / STATE_FILE).write_text(RunState(update=update, num_classes=3).to_json())
    return folder


def test_counters_round_trip_and_ignore_unknown_keys(tmp_path):
    state = RunState(update=7, epoch=1, micro_in_epoch=3, train_seconds=2.5, train_samples=448, best_metric=0.5)
    path = tmp_path / STATE_FILE
    path.write_text(state.to_json().replace('"update": 7', '"update": 7, "from_a_newer_version": 1'))
    assert RunState.from_file(path) == state


def test_steady_throughput_leaves_out_the_warm_up():
    state = RunState(train_seconds=10.0, train_samples=1000, steady_seconds_offset=2.0, steady_samples_offset=100)
    assert state.steady_samples_per_second() == pytest.approx(900 / 8)
    assert RunState(train_seconds=4.0, train_samples=100).steady_samples_per_second() == 25.0


def test_only_complete_checkpoints_count_oldest_first(tmp_path):
    for update in (10, 2, 30):
        make_checkpoint(tmp_path, update)
    make_checkpoint(tmp_path, 40, complete=False)  # a save cut short: no counters
    (tmp_path / ".checkpoint-50.tmp").mkdir()
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]


def test_rotation_keeps_the_newest(tmp_path):
    for update in (1, 2, 3, 4):
        make_checkpoint(tmp_path, update)
    rotate_checkpoints(tmp_path, limit=2)
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    rotate_checkpoints(tmp_path, limit=None)
    assert len(list_checkpoints(tmp_path)) == 2


def test_resume_latest_and_explicit(tmp_path):
    training = make_args({"output_dir": str(tmp_path), "resume_from_checkpoint": "latest"}).training
    assert resolve_checkpoint(training) is None  # nothing saved yet: start fresh
    make_checkpoint(tmp_path / "checkpoints", 5)
    newest = make_checkpoint(tmp_path / "checkpoints", 9)
    assert resolve_checkpoint(training) == newest
    training.resume_from_checkpoint = str(tmp_path / "checkpoints" / "checkpoint-5")
    assert resolve_checkpoint(training).name == "checkpoint-5"
    training.resume_from_checkpoint = str(tmp_path)
    with pytest.raises(TrainingError, match="is not a checkpoint folder.*pass 'latest'"):
        resolve_checkpoint(training)
