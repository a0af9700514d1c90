"""Whole runs of ``recipes/train.py`` on generated data in the real formats, tiny models, in this process (conftest
``train``: the script's own ``main``). The runs of two processes are in test_regularization.py and
test_reliability.py, which make the assertions this file made of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import assert_complete_run, read_jsonl, train, train_ok
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def common(output_dir: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16",
        "--learning_rate", "0.05",
        "--logging_steps", "2",
        "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def test_cifar_hub_schema_timm_resnet_accumulation_bf16(cifar10_hub, tmp_path):
    output_dir = tmp_path / "run"
    run = train_ok(
        common(
            output_dir,
            "--dataset_name", str(cifar10_hub),
            "--model_name_or_path", "test_resnet",
            "--gradient_accumulation_steps", "2",
            "--mixed_precision", "bf16",
            "--num_train_epochs", "2",
            "--save_total_limit", "1",
            "--report_to", "tensorboard",
        )
    )  # fmt: skip
    results = assert_complete_run(output_dir)
    # 120 train images, 10% (12) held out for validation: 108 -> 13 full micro-batches of 8 -> 7 updates/epoch
    assert results["train_updates"] == 14
    assert results["eval_samples"] == 12 and results["test_samples"] == 50
    assert results["mixed_precision"] == "bf16" and "mixed_precision fp16 on a CPU" not in run.stderr
    config = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert config["gradient_accumulation_steps"] == 2 and config["dataset_name"] == str(cifar10_hub)
    checkpoints = sorted((output_dir / "checkpoints").iterdir())
    assert [path.name for path in checkpoints] == ["checkpoint-14"]  # save_total_limit 1 keeps the newest
    assert (output_dir / "best_model" / "model.safetensors").is_file()
    assert load_file(output_dir / "best_model" / "model.safetensors")
    assert list(output_dir.rglob("events.out.tfevents.*")), "tensorboard is a tracker"


def test_cifar100_python_batches_transformers_vit_fp16_loss_scaling(cifar100_python, tmp_path):
    model_dir = tmp_path / "tiny-vit"
    from transformers import ViTConfig

    ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    ).save_pretrained(model_dir)
    output_dir = tmp_path / "run"
    run = train_ok(
        common(
            output_dir,
            "--dataset_name", str(cifar100_python),
            "--model_name_or_path", str(model_dir),
            "--gradient_accumulation_steps", "2",
            "--mixed_precision", "fp16",
            "--optim", "adamw",
            "--learning_rate", "0.001",
            "--max_steps", "4",
            "--validation_split_percentage", "20",
        )
    )  # fmt: skip
    results = assert_complete_run(output_dir)
    assert results["train_updates"] == 4 and results["mixed_precision"] == "fp16"
    records = read_jsonl(output_dir / "metrics.jsonl")
    scales = [record["loss_scale"] for record in records if "loss_scale" in record]
    assert scales and all(scale > 1 for scale in scales), "fp16 runs with a dynamic loss scale"
    assert "mixed_precision fp16 on a CPU" in run.stderr and "--mixed_precision bf16" in run.stderr
    config = (model_dir / "config.json").read_text()
    assert "id2label" not in config  # our tiny config; the exported one must carry the 100 labels
    exported = yaml.safe_load((output_dir / "model" / "config.json").read_text())
    assert len(exported["id2label"]) == 100


def test_existing_run_is_not_overwritten(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "all_results.json").write_text("{}")
    result = train(["--output_dir", str(output_dir), "--dataset_name", "unused"])
    assert result.exit_code == 2
    assert "already holds a run" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert (output_dir / "all_results.json").read_text() == "{}"


def test_unknown_flag_fails_with_the_closest_key(tmp_path):
    # through make and the launcher, the same mistake is one line and a non-zero exit: test_first_run.py
    result = train(["--output_dir", str(tmp_path / "x"), "--learnin_rate", "0.1"])
    assert result.exit_code == 2
    assert "did you mean 'learning_rate'" in result.stderr


def test_resident_data_pipeline_with_accumulation_and_mixed_precision(cifar10_hub, tmp_path):
    # the same on two processes: test_regularization.py (two processes, every switch on, resident)
    output_dir = tmp_path / "run"
    result = train_ok(
        common(
            output_dir,
            "--dataset_name", str(cifar10_hub),
            "--model_name_or_path", "test_resnet",
            "--data_pipeline", "resident",
            "--gradient_accumulation_steps", "2",
            "--mixed_precision", "bf16",
            "--num_train_epochs", "1",  # one epoch: bf16 is emulated (slow) on CPUs without AVX512-BF16 or AMX
        ),
    )  # fmt: skip
    results = assert_complete_run(output_dir)
    assert "resident data pipeline" in result.stdout
    assert results["num_processes"] == 1
    assert results["eval_samples"] == 12 and results["test_samples"] == 50  # every sample once, none padded in
    assert results["train_updates"] == 7  # 108 images -> 13 micro-batches of 8 -> 7 updates per epoch


def test_torch_compile_and_channels_last_keep_checkpoint_keys_plain(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    train_ok(
        common(
            output_dir,
            "--dataset_name", str(image_folder),
            "--model_name_or_path", "test_resnet",
            "--torch_compile", "true",
            "--channels_last", "true",
            "--optimizer_implementation", "foreach",
            "--max_steps", "3",
        )
    )  # fmt: skip
    for weights in [output_dir / "model" / "model.safetensors", output_dir / "best_model" / "model.safetensors",
                    *sorted((output_dir / "checkpoints").glob("*/model.safetensors"))]:  # fmt: skip
        keys = list(load_file(weights))
        assert keys and not any("_orig_mod" in key for key in keys), weights
