"""Whole runs on a streamed dataset (``--streaming true``, the one field changed): kill -9 then
``--resume_from_checkpoint latest`` ends with the uninterrupted run's weights, on one process with loader workers and
on two processes over gloo, where the uneven shards are also evaluated to the end without a process waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import datagen
import pytest
import torch
from conftest import (
    ROOT,
    SUBPROCESS_THREADS,
    free_port,
    launch,
    launch_command,
    launch_env,
    read_jsonl,
    read_results,
    same_weights,
    start_training,
    train,
    train_ok,
    wait_for_update,
)

from accel_recipes.checkpoints import list_checkpoints

pytestmark = pytest.mark.slow

# 64 training images in 3 uneven shards (split by example over 2 processes), validation and test uneven too
SHARDS = {"train": [28, 20, 16], "validation": [9, 4, 2], "test": [7, 6]}


@pytest.fixture(scope="module")
def stream_shards(tmp_path_factory) -> Path:
    # labels drawn apart from the images: the loss stays high, so every batch's place in the order shows in the weights
    return datagen.make_parquet_shards(tmp_path_factory.mktemp("stream-runs") / "pq", SHARDS, size=8, learnable=False)


def run_args(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset),
        "--streaming", "true",
        "--shuffle_buffer_size", "16",
        "--output_dir", str(output_dir),
        "--model_name_or_path", "test_vit",
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "8",
        "--learning_rate", "0.05",
        "--num_train_epochs", "2",
        "--logging_steps", "1",
        "--save_strategy", "steps",
        "--save_steps", "1",
        "--save_total_limit", "2",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def model_weights(output_dir: Path) -> Path:
    return output_dir / "model" / "model.safetensors"


def test_kill_9_mid_epoch_then_resume_latest_gives_the_uninterrupted_weights_with_workers(stream_shards, tmp_path):
    workers = ("--dataloader_num_workers", "2")
    uninterrupted = tmp_path / "uninterrupted"
    train_ok(run_args(stream_shards, uninterrupted, *workers), threads=SUBPROCESS_THREADS)
    killed = tmp_path / "killed"
    process = start_training(run_args(stream_shards, killed, *workers))
    wait_for_update(killed, 11, process)  # 8 updates an epoch: in the middle of the second
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = train_ok(run_args(stream_shards, killed, *workers, "--resume_from_checkpoint", "latest"),
                       threads=SUBPROCESS_THREADS)  # fmt: skip
    assert "resumed from" in resumed.stdout and "epoch 1 + " in resumed.stdout
    assert same_weights(model_weights(uninterrupted), model_weights(killed))
    final = [record for record in read_jsonl(killed / "metrics.jsonl") if record.get("final")]
    assert final and final[-1]["test_accuracy"] == read_results(uninterrupted)["test_accuracy"]


def test_two_processes_with_workers_kill_9_then_resume_latest_and_evaluate_uneven_shards_to_the_end(
    stream_shards, tmp_path
):
    two = ("--dataloader_num_workers", "2")
    uninterrupted = tmp_path / "uninterrupted"
    launch(run_args(stream_shards, uninterrupted, *two), processes=2, timeout=600)
    results = read_results(uninterrupted)
    assert results["num_processes"] == 2 and results["train_updates"] == 8  # 64 / (8 x 2) = 4 updates an epoch
    evaluations = [record for record in read_jsonl(uninterrupted / "metrics.jsonl") if "eval_accuracy" in record]
    assert len(evaluations) >= 2 and "test_accuracy" in results  # uneven shards evaluated without a process waiting
    killed = tmp_path / "killed"
    command = launch_command(run_args(stream_shards, killed, *two), processes=2, port=free_port())
    launcher = subprocess.Popen(command, cwd=ROOT, env=launch_env(2), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    wait_for_update(killed, 6, launcher)  # the second epoch's third update: the newest checkpoint is mid-epoch
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both training processes
    launcher.wait()
    newest = list_checkpoints(killed / "checkpoints")[-1]
    windows = torch.load(newest / "custom_checkpoint_0.pkl", weights_only=True)["next_window"]
    assert len(windows) == 2 and windows[0]["epoch"] == 1 and windows[0]["batch"] > 0  # each process's next batch
    resumed = launch(run_args(stream_shards, killed, *two, "--resume_from_checkpoint", "latest"), processes=2,
                     timeout=600)  # fmt: skip
    assert "resumed from" in resumed.stdout and "epoch 1 + " in resumed.stdout
    assert same_weights(model_weights(uninterrupted), model_weights(killed))


def test_webdataset_shards_without_a_validation_split_train_for_max_steps_and_say_what_was_held_out(tmp_path):
    """Tar shards record no size (max_steps gives the run its length) and no class names (label_names); the held-out
    validation is said in the log and the card; data_pipeline auto streams."""
    root = datagen.make_webdataset_shards(tmp_path / "wds", {"train": [30, 26]}, size=8)
    output_dir = tmp_path / "run"
    common = run_args(root, output_dir, "--label_names", "red,green,blue", "--data_pipeline", "auto")
    without_length = train(common)
    assert without_length.exit_code == 2
    assert "does not record how many training examples it holds" in without_length.stderr
    assert "--max_steps" in without_length.stderr
    finished = train_ok([*common, "--max_steps", "4", "--overwrite_output_dir", "true"])
    assert "stream data pipeline" in finished.stdout and "held out as validation by a seeded rule" in finished.stdout
    assert "unrecorded train / unrecorded validation" in finished.stdout  # a tar records no size
    assert read_results(output_dir)["train_updates"] == 4
    card = (output_dir / "model" / "README.md").read_text()
    assert "held out as validation by a seeded rule" in card
    assert json.loads((output_dir / "model" / "config.json").read_text())["label_names"] == ["red", "green", "blue"]
