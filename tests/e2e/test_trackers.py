"""Every tracker of ``report_to`` writes its own files, read back with the tracker's own reader: TensorBoard event
files under output_dir, a local trackio project (its dashboard's database), an offline wandb run under output_dir.
One tiny run reports to all three (one training instead of three keeps the slow suite short)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datagen
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The output_dir of one tiny run reporting to tensorboard, trackio (TRACKIO_DIR beside it) and wandb offline."""
    root = tmp_path_factory.mktemp("trackers")
    dataset = datagen.make_cifar_hub_dataset(root / "data", num_classes=3, train_per_class=8)
    output_dir = root / "run"
    command = [sys.executable, str(ROOT / "recipes" / "train.py"), "--output_dir", str(output_dir)]
    command += ["--dataset_name", str(dataset), "--model_name_or_path", "test_resnet", "--run_name", "tiny"]
    command += ["--report_to", "tensorboard,trackio,wandb", "--per_device_train_batch_size", "8"]
    command += ["--num_train_epochs", "1", "--logging_steps", "1", "--disable_tqdm", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TRACKIO_DIR": str(root / "trackio"), "WANDB_MODE": "offline"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    return output_dir


def test_tensorboard_writes_event_files_with_the_training_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = {file.parent for file in (run / "tiny").rglob("events.out.tfevents.*")}
    tags = set()
    for folder in event_dirs:
        tags |= set(EventAccumulator(str(folder)).Reload().Tags()["scalars"])
    assert {"train/loss", "eval/accuracy"} <= tags


def test_trackio_writes_a_local_project_its_dashboard_reads(run):
    # read back with trackio's own storage, in a process that sees the run's TRACKIO_DIR (trackio reads it at import)
    reader = (
        "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
        "runs = S.get_runs('tiny'); print(json.dumps([S.get_logs('tiny', r) for r in runs]))"
    )
    env = {**os.environ, "TRACKIO_DIR": str(run.parent / "trackio")}
    out = subprocess.run([sys.executable, "-c", reader], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    (logs,) = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("train/loss" in entry for entry in logs) and any("eval/accuracy" in entry for entry in logs)


def test_wandb_offline_writes_its_run_under_output_dir(run):
    (run_dir,) = (run / "wandb").glob("offline-run-*")
    (datastore,) = run_dir.glob("run-*.wandb")
    assert datastore.stat().st_size > 0
    assert not (run.parent / "wandb").exists(), "nothing in the working directory"
