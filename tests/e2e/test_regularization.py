"""Whole runs with everything a timm train.py user turns on: EMA of the weights, mixup and cutmix, an augmentation
policy, random erasing and flip TTA, with gradient accumulation, on both data paths, two processes in bf16, and an
exact resume after kill -9."""

from __future__ import annotations

import os
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
from accel_recipes.predict import Predictor

pytestmark = pytest.mark.slow

TRAIN = [sys.executable, str(ROOT / "recipes" / "train.py")]


def everything_on(dataset: Path, output_dir: Path, pipeline: str, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir),
        "--model_name_or_path", "test_resnet",
        "--data_pipeline", pipeline,
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16",
        "--gradient_accumulation_steps", "2",
        "--learning_rate", "0.05",
        "--num_train_epochs", "2",
        "--logging_steps", "1",
        "--disable_tqdm", "true",
        "--model_ema", "true",
        "--model_ema_decay", "0.9",
        "--model_ema_warmup", "true",
        "--metric_for_best_model", "ema_accuracy",
        "--mixup_alpha", "0.8",
        "--cutmix_alpha", "1.0",
        "--label_smoothing_factor", "0.1",
        "--augmentation", "rand_augment",
        "--rand_augment_magnitude", "9",
        "--random_erasing", "0.25",
        "--eval_flip_tta", "true",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return datagen.make_cifar_hub_dataset(tmp_path_factory.mktemp("regularization"), num_classes=4, train_per_class=20)


def assert_exported_ema_model_loads(output_dir: Path) -> dict:
    results = read_results(output_dir)
    assert results["exported_weights"] == "ema"
    for key in ("eval_accuracy", "eval_tta_accuracy", "test_accuracy", "test_tta_accuracy"):
        assert 0 <= results[key] <= 1, key
    records = read_jsonl(output_dir / "metrics.jsonl")
    evaluations = [record for record in records if "eval_accuracy" in record and not record.get("final")]
    assert evaluations
    assert all("eval_ema_accuracy" in record and "eval_tta_accuracy" in record for record in evaluations)
    exported = load_file(output_dir / "model" / "model.safetensors")
    best = load_file(output_dir / "best_model" / "model.safetensors")  # the EMA weights that won
    assert exported.keys() == best.keys() and all(torch.equal(exported[key], best[key]) for key in best)
    predictor = Predictor(output_dir / "model", device="cpu")
    assert len(predictor.top_k([Image.new("RGB", (32, 32), (120, 30, 200))], k=2)[0]) == 2
    assert "exported: the EMA weights" in (output_dir / "model" / "README.md").read_text()
    return results


@pytest.mark.parametrize("pipeline", ["stream", "resident"])
def test_two_processes_bf16_with_every_switch_on_complete_and_export_the_ema_model(dataset, tmp_path, pipeline):
    output_dir = tmp_path / "run"
    result = launch(
        everything_on(
            dataset, output_dir, pipeline,
            "--mixed_precision", "bf16", "--per_device_train_batch_size", "4",
            "--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "no",
        ),
        processes=2,
    )  # fmt: skip
    assert f"augmentation crop_flip + rand_augment, {pipeline} data pipeline" in result.stdout
    results = assert_exported_ema_model_loads(output_dir)
    assert results["num_processes"] == 2 and results["mixed_precision"] == "bf16"
    assert results["train_updates"] == 4


def run(arguments: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(TRAIN + arguments, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("pipeline", ["stream", "resident"])
def test_kill_9_then_resume_repeats_the_uninterrupted_run_bitwise(dataset, tmp_path, pipeline):
    save = ("--save_strategy", "steps", "--save_steps", "1", "--num_train_epochs", "2")
    uninterrupted = tmp_path / "uninterrupted"
    finished = run(everything_on(dataset, uninterrupted, pipeline, *save))
    assert finished.returncode == 0, finished.stderr[-3000:]

    output_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        TRAIN + everything_on(dataset, output_dir, pipeline, *save),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    metrics, deadline = output_dir / "metrics.jsonl", time.monotonic() + 300
    while not (metrics.exists() and any(record.get("step", 0) >= 4 for record in read_jsonl(metrics))):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1].decode()[-3000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list_checkpoints(output_dir / "checkpoints") and not (output_dir / "all_results.json").exists()

    resumed = run(everything_on(dataset, output_dir, pipeline, *save, "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    for name in ("model/model.safetensors", "best_model/model.safetensors"):
        ours, theirs = load_file(output_dir / name), load_file(uninterrupted / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours), name
    # the EMA itself, in the last checkpoints of both runs (Accelerate's custom_checkpoint_1: after the scheduler)
    last = list_checkpoints(uninterrupted / "checkpoints")[-1].name  # checkpoint-10: 5 updates x 2 epochs
    assert [path.name for path in list_checkpoints(output_dir / "checkpoints")][-1] == last
    ema_state = f"checkpoints/{last}/custom_checkpoint_1.pkl"
    ours, theirs = torch.load(output_dir / ema_state), torch.load(uninterrupted / ema_state)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    ours, theirs = read_results(output_dir), read_results(uninterrupted)
    for key in ("eval_accuracy", "eval_loss", "eval_tta_loss", "test_loss", "best_update", "train_updates"):
        assert ours[key] == theirs[key], key
    assert_exported_ema_model_loads(output_dir)
