"""Training stopped at a target by two processes together, and a model with anti-aliased downsampling
(``aa_layer``) that loads outside accel_recipes and scores there what the run reported on its test split."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_complete_run, launch, read_jsonl, train_ok
from outside_loader import top1_outside

pytestmark = pytest.mark.slow


def test_two_processes_stop_together_at_the_target_and_finish_the_run(cifar4_hub, tmp_path):
    """Every process reads the same gathered metrics, so both stop after the evaluation at update 2 (a hang or a
    collective error otherwise) and the run still ends with its best model, test evaluation and model folder."""
    output_dir = tmp_path / "run"
    result = launch([
        "--dataset_name", str(cifar4_hub), "--output_dir", str(output_dir), "--model_name_or_path", "test_vit",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--max_steps", "8",
        "--learning_rate", "0.05", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "no",
        "--target_metric_value", "0.0", "--logging_steps", "1", "--disable_tqdm", "true",
    ], processes=2)  # fmt: skip
    results = assert_complete_run(output_dir)
    assert results["num_processes"] == 2 and results["stopped_early"] is True
    assert results["train_updates"] == results["time_to_target_updates"] == 2
    assert results["time_to_target_seconds"] == results["train_runtime"] > 0
    assert results["time_to_target_samples"] == results["train_samples"] == 2 * 2 * 4 * 2
    assert result.stdout.count("stopping training early: reached target_metric_value 0") == 1  # the main process
    evaluations = [r for r in read_jsonl(output_dir / "metrics.jsonl") if "eval_loss" in r and not r.get("final")]
    assert [r["step"] for r in evaluations] == [2]


@pytest.mark.parametrize("stem", ["false", "true"])
def test_an_anti_aliased_resnet_scores_outside_accel_recipes_what_the_run_reported(image_folder, tmp_path, stem):
    """resnet18 with aa_layer blur, trained from scratch on 16 px images resized to 32 px, with the standard stem
    (loaded by timm's own local-dir:) or the small-image stem (transformers' custom code), in a process that cannot
    import accel_recipes: its test accuracy there is the run's test_accuracy."""
    output_dir = tmp_path / "run"
    train_ok([
        "--dataset_name", image_folder, "--output_dir", output_dir, "--model_name_or_path", "resnet18",
        "--aa_layer", "blur", "--small_image_stem", stem, "--image_size", "32", "--per_device_train_batch_size", "8",
        "--learning_rate", "0.05", "--max_steps", "4", "--save_strategy", "no", "--disable_tqdm", "true",
    ])  # fmt: skip
    results = assert_complete_run(output_dir)
    folder = output_dir / "model"
    test_images = sorted((image_folder / "test").rglob("*.png"))
    snippet, labels = top1_outside(folder / "README.md", folder, test_images, tmp_path)
    assert ("trust_remote_code=True" in snippet) == (stem == "true")
    truth = [Path(image).parent.name for image in test_images]
    accuracy = sum(label == true for label, true in zip(labels, truth, strict=True)) / len(truth)
    assert results["test_samples"] == len(truth)
    assert accuracy == pytest.approx(results["test_accuracy"])
