"""The GPU check: its plan holds every measurement the GPU table needs, its own data is what the loaders read, and
its smoke mode (the same code on a CPU) writes the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from accel_recipes.bench.gpu_check.data import write_cifar
from accel_recipes.bench.gpu_check.plan import RECIPES, Data, plan_checks
from accel_recipes.data.sources import load_cifar_python

DATA = Data(Path("c10"), Path("c100"), Path("fashion"), Path("vit"))


def test_the_full_plan_measures_what_the_table_needs():
    checks = plan_checks(DATA, smoke=False, updates=30)
    throughput = {(c.recipe, c.setting) for c in checks if c.group == "recipe throughput"}
    assert throughput == {(recipe, precision) for recipe in RECIPES for precision in ("fp32", "fp16", "bf16")}
    fp32 = [c.runs[0] for c in checks if c.setting == "fp32"]
    assert all(run["mixed_precision"] == "no" and run["tf32"] is False for run in fp32)
    paths = [c.runs[0] for c in checks if c.group == "data path"]
    assert [run["data_pipeline"] for run in paths] == ["stream", "stream", "resident", "synthetic"]
    assert [run.get("dataloader_pin_memory") for run in paths[:2]] == [True, False]
    layouts = [c.runs[0] for c in checks if c.group == "memory format, compile"]
    assert layouts[0]["channels_last"] is True and layouts[1]["torch_compile"] is True
    sharded = [c for c in checks if c.group == "sharded, one process"]
    assert [c.launch_args.split()[1] for c in sharded] == [
        "accelerate_configs/fsdp.yaml",
        "accelerate_configs/deepspeed.yaml",
    ]
    for check in sharded:  # train, checkpoint, then resume further in the same folder
        first, second = check.runs
        assert first["save_strategy"] == "steps" and second["resume_from_checkpoint"] == "latest"
        assert second["max_steps"] == 2 * first["max_steps"]
    every_run = [run for check in checks for run in check.runs]
    assert all(run["pretrained"] is False for run in every_run), "the Hub cannot be reached"
    assert all("/" not in run.get("model_name_or_path", "resnet") or run["model_name_or_path"] == "vit"
               for run in every_run)  # fmt: skip


def test_the_smoke_plan_keeps_one_check_of_every_kind():
    full = plan_checks(DATA, smoke=False, updates=30)
    smoke = plan_checks(DATA, smoke=True, updates=2)
    assert {c.group for c in smoke} == {c.group for c in full}
    assert all(run["max_steps"] <= 4 for check in smoke for run in check.runs)


def test_no_fashion_mnist_is_a_listed_skip():
    checks = plan_checks(Data(Path("c10"), Path("c100"), None, Path("vit")), smoke=False, updates=30)
    (accuracy,) = [c for c in checks if c.group == "accuracy"]
    assert "dataset-fashion-mnist" in accuracy.skip_reason and not accuracy.runs


@pytest.mark.parametrize(("variant", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_the_generated_cifar_batches_load_as_cifar(tmp_path, variant, classes):
    folder = write_cifar(tmp_path, variant, train=50, test=20)
    dataset = load_cifar_python(folder)
    assert len(dataset["train"]) == 50 and len(dataset["test"]) == 20
    assert dataset["train"].features["label"].num_classes == classes


@pytest.mark.slow
def test_smoke_mode_writes_the_table(tmp_path):
    output_dir = tmp_path / "gpu-check"
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "gpu_check.py"), "--smoke", "--output_dir", str(output_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = (output_dir / "gpu_check.md").read_text()
    for line in ("- command: python recipes/gpu_check.py --smoke", "- device: ", "- software: torch "):
        assert line in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(plan_checks(DATA, smoke=True, updates=2))
    fsdp = next(line for line in rows if "FSDP" in line)
    assert "resumed yes, exported yes" in fsdp
    assert not [line for line in rows if "FAILED" in line]
