"""Faults a long run meets, injected for real: kill -9, SIGTERM, out of memory, a diverging loss, bad data,
and a change in the number of processes. Each is survived or reported as the README's Reliability section says.

Only the run that is killed or signalled, and the run of two processes, get a process of their own; the runs they
are compared with and the resumes train in this process (conftest ``train``), with the subprocesses' thread count
where the comparison is bitwise."""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import datasets
import pytest
import torch
from conftest import (
    SUBPROCESS_THREADS,
    launch,
    read_jsonl,
    read_results,
    same_weights,
    start_training,
    train,
    train_ok,
    wait_for_update,
)
from PIL import Image
from safetensors.torch import load_file

from accel_recipes.checkpoints import list_checkpoints

pytestmark = pytest.mark.slow


def run_args(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir),
        "--model_name_or_path", "test_vit",
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16",
        "--learning_rate", "0.05",
        "--num_train_epochs", "3",
        "--logging_steps", "1",
        "--save_strategy", "steps",
        "--save_steps", "1",
        "--save_total_limit", "2",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(cifar4_hub, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_ok(run_args(cifar4_hub, output_dir), threads=SUBPROCESS_THREADS)
    return output_dir


def test_kill_9_at_random_moments_then_resume_gives_the_same_model(cifar4_hub, uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    generator = random.Random(99)
    for attempt in range(3):  # kill at random moments; with a save every update, some land mid-save
        process = start_training(run_args(cifar4_hub, output_dir, "--resume_from_checkpoint", "latest"))
        wait_for_update(output_dir, 3 + 6 * attempt, process)
        time.sleep(generator.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (output_dir / "all_results.json").exists()
        checkpoints = list_checkpoints(output_dir / "checkpoints")
        assert checkpoints, "latest always names a complete checkpoint"
        assert all((path / "training_state.json").is_file() for path in checkpoints)
    resumed = train_ok(run_args(cifar4_hub, output_dir, "--resume_from_checkpoint", "latest"),
                       threads=SUBPROCESS_THREADS)  # fmt: skip
    assert "resumed from" in resumed.stdout
    # bitwise on the CPU: same data order, same per-sample augmentation, restored optimizer/scheduler/RNG
    assert same_weights(output_dir / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")
    ours, theirs = read_results(output_dir), read_results(uninterrupted)
    for key in ("eval_accuracy", "eval_loss", "test_accuracy", "test_f1", "train_updates", "best_update"):
        assert ours[key] == theirs[key], key
    assert ours["train_updates"] == 27
    steps = [record["step"] for record in read_jsonl(output_dir / "metrics.jsonl") if "loss" in record]
    assert steps == sorted(set(steps)), "no update is logged twice after the resumes"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_stop_signal_saves_and_exits_cleanly_then_resume_finishes(cifar4_hub, uninterrupted, tmp_path, signal_name):
    output_dir = tmp_path / "run"
    process = start_training(run_args(cifar4_hub, output_dir, "--save_strategy", "epoch"))
    wait_for_update(output_dir, 4, process)
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]
    assert f"received {signal_name}" in stderr and "--resume_from_checkpoint latest" in stderr
    saved = list_checkpoints(output_dir / "checkpoints")
    assert saved and int(saved[-1].name.split("-")[1]) >= 4, "saved at the next update boundary, mid-epoch"
    train_ok(run_args(cifar4_hub, output_dir, "--save_strategy", "epoch", "--resume_from_checkpoint", "latest"),
             threads=SUBPROCESS_THREADS)  # fmt: skip
    assert same_weights(output_dir / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")


def test_diverging_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(cifar4_hub, tmp_path):
    output_dir = tmp_path / "run"
    result = train(run_args(cifar4_hub, output_dir, "--learning_rate", "1e30", "--max_nonfinite_steps", "2"))
    assert result.exit_code == 2
    assert "not finite for 2 consecutive updates" in result.stderr and "bf16" in result.stderr
    checkpoints = list_checkpoints(output_dir / "checkpoints")
    assert checkpoints, "the last good checkpoint is kept"
    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_corrupt_image_is_named_or_skipped_and_counted(image_folder, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(image_folder, folder)
    broken = sorted((folder / "train").rglob("*.png"))[3]
    broken.write_bytes(b"this is not a png")
    common = [
        "--dataset_name", str(folder), "--model_name_or_path", "test_vit", "--per_device_train_batch_size", "4",
        "--num_train_epochs", "1", "--disable_tqdm", "true",
    ]  # fmt: skip
    failed = train([*common, "--output_dir", str(tmp_path / "strict")])
    assert failed.exit_code == 2
    assert "cannot decode image" in failed.stderr and broken.name in failed.stderr
    assert "--skip_corrupt_images true" in failed.stderr
    skipped = train_ok([*common, "--output_dir", str(tmp_path / "lenient"), "--skip_corrupt_images", "true"])
    assert "skipped 1 undecodable" in skipped.stdout


def test_label_outside_the_class_range_is_named(tmp_path):
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(6)]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 0, 1, 7, 0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    ).cast_column("label", datasets.ClassLabel(names=["a", "b"]))  # a cast does not check the range
    path = tmp_path / "bad-labels"
    datasets.DatasetDict(train=table).save_to_disk(str(path))
    result = train(
        ["--dataset_name", str(path), "--output_dir", str(tmp_path / "run"), "--model_name_or_path", "test_vit"]
    )
    assert result.exit_code == 2
    assert "7" in result.stderr and "label" in result.stderr


def test_resuming_with_a_different_class_count_is_refused(cifar3_hub, uninterrupted, tmp_path):
    checkpoint = list_checkpoints(uninterrupted / "checkpoints")[-1]
    result = train(run_args(cifar3_hub, tmp_path / "run", "--resume_from_checkpoint", str(checkpoint)))
    assert result.exit_code == 2
    assert "trained on 4 classes" in result.stderr and "has 3" in result.stderr


def test_two_processes_equal_one_process_and_their_checkpoint_resumes_on_one(cifar4_hub, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    common = ["--dataset_name", str(cifar4_hub), "--model_name_or_path", "test_vit", "--num_train_epochs", "2",
              "--learning_rate", "0.05", "--disable_tqdm", "true", "--augmentation", "none"]  # fmt: skip
    train_ok([*common, "--output_dir", str(single), "--per_device_train_batch_size", "16"])
    # the launcher runs the console entry point's module here (-m accel_recipes.train), recipes/train.py elsewhere
    launch([*common, "--output_dir", str(double), "--per_device_train_batch_size", "8"], processes=2, module=True)
    one_process, two_processes = read_results(single), read_results(double)
    assert two_processes["num_processes"] == 2
    assert one_process["global_batch_size"] == two_processes["global_batch_size"] == 16
    assert one_process["train_updates"] == two_processes["train_updates"]
    # same samples in every update; only the order of floating-point sums differs (gloo all-reduce)
    assert two_processes["eval_loss"] == pytest.approx(one_process["eval_loss"], rel=1e-3)
    assert two_processes["eval_accuracy"] == pytest.approx(one_process["eval_accuracy"], abs=1 / 8 + 1e-9)

    # the two processes' run carries on from its last checkpoint (epoch 2) in one process, same global batch
    checkpoint = list_checkpoints(double / "checkpoints")[-1]
    (double / "all_results.json").unlink()
    updates = two_processes["train_updates"] + 3
    resumed = train_ok([*common, "--output_dir", str(double), "--per_device_train_batch_size", "16",
                        "--num_train_epochs", "3", "--max_steps", str(updates),
                        "--resume_from_checkpoint", str(checkpoint)])  # fmt: skip
    assert f"resumed from {checkpoint}" in resumed.stdout
    assert read_results(double)["train_updates"] == updates
