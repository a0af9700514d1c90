"""Whole runs with a resolution schedule (``train_img_sizes``) and their own evaluation size (``eval_image_size``)
on both data paths, with gradient accumulation: the phases in the log and metrics.jsonl, the exported folder at the
evaluation size scoring what the run reported, an exact resume across phases, and the sizes a model cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_complete_run, read_jsonl, read_results, same_weights, train, train_ok
from outside_loader import top1_of_predict_in_process, top1_outside

pytestmark = pytest.mark.slow

# image_folder: 16 training images of 16 px; 4 per micro-batch x 2 accumulation steps: 2 updates an epoch, 4 in all
PHASES = [(8, 2), (12, 1), (16, 1)]  # (size, updates): equal thirds of 4 updates, the last at the input size


def schedule_args(dataset: Path, output_dir: Path, pipeline: str, *extra: str, model: str = "test_resnet") -> list[str]:
    return [
        "--dataset_name", dataset,
        "--output_dir", output_dir,
        "--model_name_or_path", model,
        "--data_pipeline", pipeline,
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8",
        "--gradient_accumulation_steps", "2",
        "--learning_rate", "0.05",
        "--num_train_epochs", "2",
        "--logging_steps", "1",
        "--disable_tqdm", "true",
        "--train_img_sizes", "8,12,16",
        "--eval_image_size", "24",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("pipeline", "model"),
    [
        ("stream", "test_resnet"),  # small-image stem: the card loads it with transformers (the folder's custom code)
        ("stream", "test_efficientnet"),  # a standard timm model: the card loads it with timm.create_model
        ("resident", "test_resnet"),
    ],
)
def test_phases_are_logged_and_the_folder_scores_at_the_eval_size_what_the_run_reported(
    image_folder, tmp_path, pipeline, model
):
    output_dir = tmp_path / "run"
    finished = train_ok(schedule_args(image_folder, output_dir, pipeline, model=model))
    assert "resolution phase 1/3: 8 px, updates 1-2" in finished.stdout
    assert "resolution phase 3/3: 16 px, updates 4-4" in finished.stdout
    results = assert_complete_run(output_dir)
    phases = [record for record in read_jsonl(output_dir / "metrics.jsonl") if "train_image_size" in record]
    assert [(record["train_image_size"], record["phase_updates"]) for record in phases] == PHASES
    assert [record["phase_samples"] for record in phases] == [8 * updates for _, updates in PHASES]
    assert all(record["phase_samples_per_second"] > 0 for record in phases)
    assert sum(record["phase_runtime"] for record in phases) == pytest.approx(results["train_runtime"], rel=0.05)

    folder = output_dir / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 24, 24]  # what timm's resolve_data_config reads
    processor = folder / "preprocessor_config.json"  # written for the small-image stem's transformers loader
    assert model != "test_resnet" or json.loads(processor.read_text())["size"] == {"height": 24, "width": 24}
    test_images = sorted((image_folder / "test").rglob("*.png"))
    truth = [image.parent.name for image in test_images]
    predicted = top1_of_predict_in_process(folder, test_images)
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    if pipeline == "stream":  # the same PIL resize to 24 px as the run's test loader: the same score
        assert accuracy == results["test_accuracy"]
        snippet, outside = top1_outside(folder / "README.md", folder, test_images, tmp_path)  # the card's loader
        assert ("timm.create_model" in snippet) == (model == "test_efficientnet")
        assert outside == predicted
    else:  # the resident test split is resized on the device (float, not rounded to uint8): close, not bitwise
        assert abs(accuracy - results["test_accuracy"]) <= 1 / len(truth)


def test_a_resume_in_the_first_phase_repeats_the_uninterrupted_run_bitwise(image_folder, tmp_path):
    save = ("--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "none")
    uninterrupted = tmp_path / "uninterrupted"
    train_ok(schedule_args(image_folder, uninterrupted, "resident", *save))
    checkpoint = uninterrupted / "checkpoints" / "checkpoint-1"  # inside the 8 px phase
    resumed_dir = tmp_path / "resumed"
    resumed = train_ok(
        schedule_args(image_folder, resumed_dir, "resident", *save, "--resume_from_checkpoint", checkpoint)
    )
    assert "resumed from" in resumed.stdout and "resolution phase 3/3: 16 px" in resumed.stdout
    assert same_weights(resumed_dir / "model" / "model.safetensors", uninterrupted / "model" / "model.safetensors")
    ours, theirs = read_results(resumed_dir), read_results(uninterrupted)
    for key in ("eval_loss", "test_loss", "train_updates", "train_samples"):
        assert ours[key] == theirs[key], key


def test_sizes_the_run_cannot_use_are_config_errors_before_anything_is_written(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    not_ending = train(schedule_args(image_folder, output_dir, "stream", "--train_img_sizes", "8,12"))
    assert not_ending.exit_code == 2
    assert "'train_img_sizes' [8, 12] must end at the model's input size 16; append 16" in not_ending.stderr
    # timm's test_vit is built with dynamic_img_size (position embeddings resampled to the input): it takes 24 px.
    # transformers' ViT takes only its configured size
    from transformers import ViTConfig

    config = tmp_path / "vit-config"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(config)
    vit = train([
        "--dataset_name", image_folder, "--output_dir", output_dir, "--model_name_or_path", config,
        "--eval_image_size", "24", "--max_steps", "1", "--per_device_train_batch_size", "4",
    ])  # fmt: skip
    assert vit.exit_code == 2
    assert "cannot take 24 px inputs" in vit.stderr and "set train_img_sizes and eval_image_size" in vit.stderr
    assert not output_dir.exists() or not any(output_dir.iterdir())
