"""Every tracker of ``report_to`` writes its own files, read back with the tracker's own reader: TensorBoard event
files under output_dir, a local trackio project (its dashboard's database), an offline wandb run under output_dir.
The session's one finished run (conftest ``finished_run``) reports to all three."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_tensorboard_writes_event_files_with_the_training_scalars(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = {file.parent for file in (finished_run / "tiny").rglob("events.out.tfevents.*")}
    tags = set()
    for folder in event_dirs:
        tags |= set(EventAccumulator(str(folder)).Reload().Tags()["scalars"])
    assert {"train/loss", "eval/accuracy"} <= tags


def test_trackio_writes_a_local_project_its_dashboard_reads(finished_run):
    from trackio.sqlite_storage import SQLiteStorage
    from trackio.utils import TRACKIO_DIR

    # conftest points TRACKIO_DIR at a folder of this session before trackio is first imported
    assert Path(TRACKIO_DIR) == Path(os.environ["TRACKIO_DIR"])
    (logs,) = [SQLiteStorage.get_logs("tiny", run) for run in SQLiteStorage.get_runs("tiny")]
    assert any("train/loss" in entry for entry in logs) and any("eval/accuracy" in entry for entry in logs)


def test_wandb_offline_writes_its_run_under_output_dir(finished_run):
    (run_dir,) = (finished_run / "wandb").glob("offline-run-*")
    (datastore,) = run_dir.glob("run-*.wandb")
    assert datastore.stat().st_size > 0
    assert not any((finished_run.parent / "cwd").iterdir()), "nothing in the working directory"
