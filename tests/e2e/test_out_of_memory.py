"""auto_find_batch_size: an out-of-memory error halves the micro-batch and doubles accumulation, in-process; on two
processes where only one runs out, both halve together (tests/oom_worker.py)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import ROOT, launch, train_ok
from safetensors.torch import load_file

from accel_recipes import run
from accel_recipes.config import make_args
from accel_recipes.errors import TrainingError

pytestmark = pytest.mark.slow


@pytest.fixture
def memory_limited_models(monkeypatch):
    """Models that raise CUDA's out-of-memory error for training micro-batches over 4, as a small GPU would."""
    real_build_model = run.build_model
    seen: list[int] = []

    def build_model(*args, **kwargs):
        spec = real_build_model(*args, **kwargs)
        forward = spec.model.forward

        def limited_forward(images, *rest, **options):
            seen.append(images.shape[0])
            if spec.model.training and images.shape[0] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return forward(images, *rest, **options)

        spec.model.forward = limited_forward
        return spec

    monkeypatch.setattr(run, "build_model", build_model)
    return seen


def arguments(dataset, tmp_path, **extra):
    return make_args(
        {
            "dataset_name": str(dataset),
            "output_dir": str(tmp_path / "run"),
            "model_name_or_path": "test_vit",
            "per_device_train_batch_size": 16,
            "gradient_accumulation_steps": 1,
            "max_steps": 2,
            "disable_tqdm": True,
            **extra,
        }
    )


def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch(
    memory_limited_models, cifar3_hub, tmp_path, in_fresh_process
):
    args = arguments(cifar3_hub, tmp_path, auto_find_batch_size=True)
    result = run.train(args)
    assert result.metrics["per_device_train_batch_size"] == 4
    assert result.metrics["gradient_accumulation_steps"] == 4
    assert result.metrics["global_batch_size"] == 16 and result.metrics["train_updates"] == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["per_device_train_batch_size"], saved["gradient_accumulation_steps"]) == (4, 4)
    assert memory_limited_models[:2] == [16, 8]


def test_out_of_memory_without_the_option_says_what_to_do(
    memory_limited_models, cifar3_hub, tmp_path, in_fresh_process
):
    with pytest.raises(TrainingError, match="out of memory at per_device_train_batch_size 16.*auto_find_batch_size"):
        run.train(arguments(cifar3_hub, tmp_path))


def two_process_arguments(dataset, output_dir, batch_size: int, accumulation: int) -> list[str]:
    return ["--dataset_name", str(dataset), "--output_dir", str(output_dir), "--model_name_or_path", "test_vit",
            "--per_device_train_batch_size", str(batch_size), "--gradient_accumulation_steps", str(accumulation),
            "--max_steps", "2", "--logging_steps", "1", "--disable_tqdm", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def one_process_at_the_global_batch(cifar3_hub, tmp_path_factory):
    """One process with the global batch the two processes end with (8 x 4 = 4 x 4 x 2): the weights to end with."""
    output_dir = tmp_path_factory.mktemp("one_process") / "run"
    train_ok(two_process_arguments(cifar3_hub, output_dir, 8, 4))
    return output_dir


def test_out_of_memory_on_one_of_two_processes_halves_the_batch_on_both(
    cifar3_hub, one_process_at_the_global_batch, tmp_path
):
    """Only process 1 runs out (tests/oom_worker.py): at 16 images in the forward pass, at 8 in the backward pass,
    where DDP's gradient all-reduce is where process 0 would wait for it."""
    output_dir = tmp_path / "run"
    arguments = [*two_process_arguments(cifar3_hub, output_dir, 16, 1), "--auto_find_batch_size", "true"]
    # a process waiting in a collective the other never reaches would hang until the timeout
    result = launch(arguments, processes=2, script=ROOT / "tests" / "oom_worker.py", timeout=180)
    for batch_size, halved in ((16, "8 x 2"), (8, "4 x 4")):
        assert (
            f"out of memory at per_device_train_batch_size {batch_size} (out of memory on process 1): retrying from "
            f"the start with {halved} accumulation steps"
        ) in result.stdout
    results = json.loads((output_dir / "all_results.json").read_text())
    assert (results["per_device_train_batch_size"], results["gradient_accumulation_steps"]) == (4, 4)
    assert results["num_processes"] == 2 and results["global_batch_size"] == 32 and results["train_updates"] == 2
    saved = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert (saved["per_device_train_batch_size"], saved["gradient_accumulation_steps"]) == (4, 4)
    logged = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged if "loss" in record] == [1, 2]  # the failed tries left no record
    # the same effective batch and schedule: the weights of one process trained at that global batch from the start
    reference = load_file(one_process_at_the_global_batch / "model" / "model.safetensors")
    trained = load_file(output_dir / "model" / "model.safetensors")
    assert trained.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(trained[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
