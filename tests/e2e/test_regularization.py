"""Whole runs with everything a timm train.py user turns on: EMA of the weights, mixup and cutmix, an augmentation
policy, random erasing and flip TTA, with gradient accumulation, on both data paths, two processes in bf16, and an
exact resume after kill -9."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import (
    SUBPROCESS_THREADS,
    assert_complete_run,
    launch,
    read_jsonl,
    read_results,
    same_weights,
    start_training,
    train_ok,
    wait_for_update,
)
from PIL import Image
from safetensors.torch import load_file

from accel_recipes.checkpoints import list_checkpoints
from accel_recipes.predict import Predictor

pytestmark = pytest.mark.slow


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


# One launch of two processes per data path also carries the sample-counting checks of a two-process run: the stream
# run on 45 images with 9 (an odd count) held out, so the sampler pads a duplicate that must not be counted; the
# resident run on cifar10's schema, whose shards must hold every validation and test sample once.
TWO_PROCESS_RUNS = {
    "stream": ("image_folder_odd", ["--validation_split_percentage", "20", "--per_device_eval_batch_size", "4",
                                    "--max_steps", "4", "--eval_steps", "2"]),
    "resident": ("cifar10_hub", ["--num_train_epochs", "1", "--eval_steps", "4"]),  # 7 updates: evaluated at 4, 7
}  # fmt: skip


@pytest.mark.parametrize("pipeline", ["stream", "resident"])
def test_two_processes_bf16_with_every_switch_on_count_each_sample_once_and_export_the_ema_model(
    request, tmp_path, pipeline
):
    dataset_fixture, extra = TWO_PROCESS_RUNS[pipeline]
    dataset = request.getfixturevalue(dataset_fixture)
    output_dir = tmp_path / "run"
    result = launch(
        everything_on(
            dataset, output_dir, pipeline,
            "--mixed_precision", "bf16", "--per_device_train_batch_size", "4",
            "--eval_strategy", "steps", "--save_strategy", "no", *extra,
        ),
        processes=2,
    )  # fmt: skip
    assert f"augmentation crop_flip + rand_augment, {pipeline} data pipeline" in result.stdout
    assert_complete_run(output_dir)
    results = assert_exported_ema_model_loads(output_dir)
    assert results["num_processes"] == 2, result.stdout + result.stderr
    assert results["mixed_precision"] == "bf16"
    assert results["global_batch_size"] == 16  # 4 per process x 2 processes x 2 accumulation steps
    if pipeline == "stream":
        assert results["train_updates"] == 4
        assert results["eval_samples"] == 9  # not 10: the padded duplicate is dropped when gathering
    else:
        assert results["eval_samples"] == 12 and results["test_samples"] == 50  # every sample once, none padded in
        assert results["train_updates"] == 7  # 108 images -> 13 micro-batches of 8 -> 7 updates per epoch


@pytest.mark.parametrize("pipeline", ["stream", "resident"])
def test_kill_9_then_resume_repeats_the_uninterrupted_run_bitwise(cifar4_hub, tmp_path, pipeline):
    save = ("--save_strategy", "steps", "--save_steps", "1", "--num_train_epochs", "2")
    uninterrupted = tmp_path / "uninterrupted"
    train_ok(everything_on(cifar4_hub, uninterrupted, pipeline, *save), threads=SUBPROCESS_THREADS)

    output_dir = tmp_path / "killed"  # only the run that is killed needs a process of its own
    process = start_training(everything_on(cifar4_hub, output_dir, pipeline, *save), stdout=None)
    wait_for_update(output_dir, 4, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list_checkpoints(output_dir / "checkpoints") and not (output_dir / "all_results.json").exists()

    resumed = train_ok(
        everything_on(cifar4_hub, output_dir, pipeline, *save, "--resume_from_checkpoint", "latest"),
        threads=SUBPROCESS_THREADS,
    )
    assert "resumed from" in resumed.stdout
    for name in ("model/model.safetensors", "best_model/model.safetensors"):
        assert same_weights(output_dir / name, uninterrupted / name), name
    # the EMA itself, in the last checkpoints of both runs (Accelerate's custom_checkpoint_1: after the scheduler)
    last = list_checkpoints(uninterrupted / "checkpoints")[-1].name  # checkpoint-10: 5 updates x 2 epochs
    assert [path.name for path in list_checkpoints(output_dir / "checkpoints")][-1] == last
    ema_state = f"checkpoints/{last}/custom_checkpoint_1.pkl"
    assert same_weights(output_dir / ema_state, uninterrupted / ema_state)
    ours, theirs = read_results(output_dir), read_results(uninterrupted)
    for key in ("eval_accuracy", "eval_loss", "eval_tta_loss", "test_loss", "best_update", "train_updates"):
        assert ours[key] == theirs[key], key
    assert_exported_ema_model_loads(output_dir)
