"""Faults a long run meets, injected for real: kill -9, SIGTERM, out of memory, a diverging loss, bad data,
and a change in the number of processes. Each is survived or reported as the README's Reliability section says."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datagen
import pytest
import torch
from conftest import ROOT, launch, read_jsonl, read_results
from PIL import Image
from safetensors.torch import load_file

from accel_recipes.checkpoints import list_checkpoints

pytestmark = pytest.mark.slow

TRAIN = [sys.executable, str(ROOT / "recipes" / "train.py")]


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


def run(arguments: list[str], **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(TRAIN + arguments, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, **options)


def start(arguments: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(TRAIN + arguments, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_step(output_dir: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    metrics = output_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()[-3000:]
        if metrics.exists() and any(record.get("step", 0) >= step for record in read_jsonl(metrics)):
            return
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def same_weights(first: Path, second: Path) -> bool:
    a, b = load_file(first), load_file(second)
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return datagen.make_cifar_hub_dataset(tmp_path_factory.mktemp("reliability"), num_classes=4, train_per_class=20)


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run(run_args(dataset, output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def test_kill_9_at_a_random_step_then_resume_gives_the_same_model(dataset, uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    kill_at = random.Random(1234).randint(2, 20)
    process = start(run_args(dataset, output_dir))
    wait_for_step(output_dir, kill_at, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output_dir / "all_results.json").exists()
    assert list_checkpoints(output_dir / "checkpoints"), "a complete checkpoint survives the kill"
    resumed = run(run_args(dataset, output_dir, "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    # bitwise on the CPU: same data order, same per-sample augmentation, restored optimizer/scheduler/RNG
    assert same_weights(output_dir / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")
    ours, theirs = read_results(output_dir), read_results(uninterrupted)
    for key in ("eval_accuracy", "eval_loss", "test_accuracy", "test_f1", "train_updates", "best_update"):
        assert ours[key] == theirs[key], key
    steps = [record["step"] for record in read_jsonl(output_dir / "metrics.jsonl") if "loss" in record]
    assert steps == sorted(set(steps)), "no update is logged twice after the resume"


def test_kill_9_during_saves_always_leaves_a_resumable_run(dataset, uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    generator = random.Random(99)
    for attempt in range(3):  # kill at random moments; with a save every update, some land mid-save
        process = start(run_args(dataset, output_dir, "--resume_from_checkpoint", "latest"))
        wait_for_step(output_dir, 3 + 6 * attempt, process)
        time.sleep(generator.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoints = list_checkpoints(output_dir / "checkpoints")
        assert checkpoints, "latest always names a complete checkpoint"
        assert all((path / "training_state.json").is_file() for path in checkpoints)
    finished = run(run_args(dataset, output_dir, "--resume_from_checkpoint", "latest"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert read_results(output_dir)["train_updates"] == read_results(uninterrupted)["train_updates"] == 27


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_stop_signal_saves_and_exits_cleanly_then_resume_finishes(dataset, uninterrupted, tmp_path, signal_name):
    output_dir = tmp_path / "run"
    process = start(run_args(dataset, output_dir, "--save_strategy", "epoch"))
    wait_for_step(output_dir, 4, process)
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr.decode()[-3000:]
    assert f"received {signal_name}" in stderr.decode() and "--resume_from_checkpoint latest" in stderr.decode()
    saved = list_checkpoints(output_dir / "checkpoints")
    assert saved and int(saved[-1].name.split("-")[1]) >= 4, "saved at the next update boundary, mid-epoch"
    resumed = run(run_args(dataset, output_dir, "--save_strategy", "epoch", "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(output_dir / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")


def test_diverging_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    output_dir = tmp_path / "run"
    result = run(run_args(dataset, output_dir, "--learning_rate", "1e30", "--max_nonfinite_steps", "2"))
    assert result.returncode == 2
    assert "not finite for 2 consecutive updates" in result.stderr and "bf16" in result.stderr
    checkpoints = list_checkpoints(output_dir / "checkpoints")
    assert checkpoints, "the last good checkpoint is kept"
    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    folder = datagen.make_image_folder(tmp_path / "data", num_classes=2, per_class=20, with_test=False)
    broken = sorted((folder / "train").rglob("*.png"))[3]
    broken.write_bytes(b"this is not a png")
    common = [
        "--dataset_name", str(folder), "--model_name_or_path", "test_vit", "--per_device_train_batch_size", "4",
        "--num_train_epochs", "1", "--validation_split_percentage", "0.01", "--disable_tqdm", "true",
    ]  # fmt: skip
    failed = run([*common, "--output_dir", str(tmp_path / "strict")])
    assert failed.returncode == 2
    assert "cannot decode image" in failed.stderr and broken.name in failed.stderr
    assert "--skip_corrupt_images true" in failed.stderr
    skipped = run([*common, "--output_dir", str(tmp_path / "lenient"), "--skip_corrupt_images", "true"])
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skipped 1 undecodable" in skipped.stdout


def test_label_outside_the_class_range_is_named(tmp_path):
    import datasets

    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(6)]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 0, 1, 7, 0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    ).cast_column("label", datasets.ClassLabel(names=["a", "b"]))  # a cast does not check the range
    path = tmp_path / "bad-labels"
    datasets.DatasetDict(train=table).save_to_disk(str(path))
    result = run(
        ["--dataset_name", str(path), "--output_dir", str(tmp_path / "run"), "--model_name_or_path", "test_vit"]
    )
    assert result.returncode == 2
    assert "7" in result.stderr and "label" in result.stderr


def test_resuming_with_a_different_class_count_is_refused(dataset, uninterrupted, tmp_path):
    other = datagen.make_cifar_hub_dataset(tmp_path / "other", num_classes=3, train_per_class=20)
    checkpoint = list_checkpoints(uninterrupted / "checkpoints")[-1]
    result = run(run_args(other, tmp_path / "run", "--resume_from_checkpoint", str(checkpoint)))
    assert result.returncode == 2
    assert "trained on 4 classes" in result.stderr and "has 3" in result.stderr


def test_two_processes_equal_one_process_with_the_same_global_batch(dataset, tmp_path):
    single = tmp_path / "single"
    double = tmp_path / "double"
    common = ["--dataset_name", str(dataset), "--model_name_or_path", "test_vit", "--num_train_epochs", "2",
              "--learning_rate", "0.05", "--disable_tqdm", "true", "--augmentation", "none"]  # fmt: skip
    launch([*common, "--output_dir", str(single), "--per_device_train_batch_size", "16"])
    launch([*common, "--output_dir", str(double), "--per_device_train_batch_size", "8"], processes=2)
    one, two = read_results(single), read_results(double)
    assert two["num_processes"] == 2 and one["global_batch_size"] == two["global_batch_size"] == 16
    assert one["train_updates"] == two["train_updates"]
    # same samples in every update; only the order of floating-point sums differs (gloo all-reduce)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-3)
    assert two["eval_accuracy"] == pytest.approx(one["eval_accuracy"], abs=1 / 8 + 1e-9)  # at most one sample flips


def test_checkpoint_of_two_processes_resumes_on_one(dataset, tmp_path):
    output_dir = tmp_path / "run"
    arguments = run_args(dataset, output_dir, "--max_steps", "6")
    launch([*arguments, "--per_device_train_batch_size", "4"], processes=2)
    checkpoint = list_checkpoints(output_dir / "checkpoints")[-1]
    (output_dir / "all_results.json").unlink()
    resumed = launch([*run_args(dataset, tmp_path / "one", "--max_steps", "9", "--resume_from_checkpoint",
                                str(checkpoint))])  # fmt: skip
    assert "resumed from" in resumed.stdout
    assert read_results(tmp_path / "one")["train_updates"] == 9
