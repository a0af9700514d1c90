"""The ablation end to end on a tiny model and generated CIFAR-format data.

The whole report (two arms, two repeats, their bounds) from real training runs made in this process by the real
``recipes/train.py`` code (``bench/inprocess.py``); ``python recipes/ablate.py`` itself, one ``accelerate launch``
per run, with one arm and one repeat."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.inprocess import execute_in_process
from conftest import ROOT, fresh_process

from accel_recipes.bench.ablate import cli, runner
from accel_recipes.bench.ablate.report import TABLE
from accel_recipes.bench.ablate.summary import COLUMNS

pytestmark = pytest.mark.slow

POSITIVE = (
    "train_runtime_s",
    "seconds_per_epoch",
    "images_per_second_min",
    "images_per_second_median",
    "images_per_second_max",
    "speedup",
    "speedup_min",
    "speedup_max",
    "bound_images_per_second",
    "fraction_of_bound",
    "peak_memory_mb",
    "data_wait_fraction",
)
UNIT_INTERVAL = ("eval_accuracy", "eval_f1", "test_accuracy", "test_f1")


def tiny_recipe(dataset: Path, output_dir: Path) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--target_accuracy", "0.01",
        "--dataset_name", str(dataset),
        "--model_name_or_path", "test_resnet",
        "--per_device_train_batch_size", "8",
        "--max_steps", "2",  # the first update is warm-up, the second the steady throughput
        "--image_size", "16",  # a quarter of the 32 px images' compute: the report does not depend on it
        "--throughput_warmup_steps", "1",
        "--learning_rate", "0.05",
        "--dataloader_num_workers", "0",
    ]  # fmt: skip


def test_two_arms_two_repeats_write_the_whole_report(cifar4_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "execute", execute_in_process)
    output_dir = tmp_path / "ablation"
    with fresh_process():  # cli.main makes SIGTERM stop its launches: pytest's own handler comes back after
        returncode = cli.main(["--arms", "baseline,ga+amp", "--repeats", "2", *tiny_recipe(cifar4_hub, output_dir)])
    stdout = capsys.readouterr().out
    assert returncode == 0, stdout[-4000:]

    progress = [line for line in stdout.splitlines() if line.startswith("[")]
    # each repeat rotated: the second starts half-way along
    assert [line.split(":")[0] for line in progress] == [
        "[1/8] baseline repeat 1", "[2/8] ga+amp repeat 1", "[3/8] bound-1 repeat 1", "[4/8] bound-2 repeat 1",
        "[5/8] bound-1 repeat 2", "[6/8] bound-2 repeat 2", "[7/8] baseline repeat 2", "[8/8] ga+amp repeat 2",
    ]  # fmt: skip
    assert all("done in" in line for line in progress)
    for name in ("ablation.md", "ablation.csv", "ablation.json", "learning_curves.png", "speedup.png"):
        assert (output_dir / name).is_file() and (output_dir / name).stat().st_size > 0, name
    for arm in ("baseline", "ga+amp"):
        for repeat in (1, 2):
            run = output_dir / arm / f"run-{repeat}"
            assert (run / "all_results.json").is_file()
            assert not list(run.rglob("*.safetensors")), "weights are pruned unless --keep_weights true"

    markdown = (output_dir / "ablation.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| arm |"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [name for name, _ in TABLE]
    assert "**1.00**" in markdown.split("| `baseline` |")[1].splitlines()[0]
    assert "What each arm holds fixed" in markdown and "python recipes/ablate.py" in markdown

    with (output_dir / "ablation.csv").open() as handle:
        rows = {row["arm"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["baseline", "ga+amp"]
    assert list(rows["baseline"]) == list(COLUMNS)
    assert float(rows["baseline"]["speedup"]) == 1.0
    for row in rows.values():
        assert row["runs_ok"] == "2/2" and row["effective_batch"] == "8"
        for key in POSITIVE:
            assert math.isfinite(float(row[key])) and float(row[key]) > 0, (row["arm"], key, row[key])
        for key in UNIT_INTERVAL:
            assert 0 <= float(row[key]) <= 1, (row["arm"], key)
        assert row["target_reached"] == "2/2" and float(row["time_to_target_s"]) > 0
    assert (rows["ga+amp"]["micro_batch"], rows["ga+amp"]["gradient_accumulation_steps"]) == ("4", "2")
    assert rows["ga+amp"]["mixed_precision"] == "bf16" and rows["baseline"]["mixed_precision"] == "no"

    data = json.loads((output_dir / "ablation.json").read_text())
    assert len(data["runs"]) == 8 and all(run["returncode"] == 0 for run in data["runs"])
    assert [bound["arms"] for bound in data["bounds"]] == [["baseline"], ["ga+amp"]]
    assert all(bound["images_per_second"] > 0 and bound["runs_ok"] == "2/2" for bound in data["bounds"])
    bound_config = (output_dir / "bound-2" / "run-1" / "config.yaml").read_text()
    assert "data_pipeline: synthetic" in bound_config and "mixed_precision: bf16" in bound_config
    assert "## Compute-only bounds" in markdown and "| `bound-2` | `ga+amp` | bf16 | 4 x 2 | 2/2 |" in markdown
    assert data["setup"]["device"].startswith("CPU") and "torch" in data["setup"]["software"]


def test_the_command_runs_each_arm_in_its_own_launch(cifar4_hub, tmp_path):
    output_dir = tmp_path / "ablation"
    command = [
        sys.executable, str(ROOT / "recipes" / "ablate.py"), "--arms", "baseline", "--repeats", "1", "--bound", "false",
        *tiny_recipe(cifar4_hub, output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 1 and progress[0].startswith("[1/1] baseline repeat 1: ... done in"), result.stdout
    run = output_dir / "baseline" / "run-1"
    assert (run / "all_results.json").is_file() and (run / "launch.log").is_file()
    launched = (run / "launch.log").read_text().splitlines()[0]  # the command, then the run's own output
    assert " launch --num_processes 1 " in launched and "recipes/train.py --save_strategy no" in launched
    assert f"--output_dir {run}" in launched and "finished:" in (run / "launch.log").read_text()
    assert not list(run.rglob("*.safetensors")), "weights are pruned unless --keep_weights true"
    data = json.loads((output_dir / "ablation.json").read_text())
    assert [run["returncode"] for run in data["runs"]] == [0] and data["bounds"] == []
    assert data["setup"]["device"].startswith("CPU")
    assert (output_dir / "ablation.md").is_file() and (output_dir / "speedup.png").is_file()


def test_a_target_stops_every_arm_and_the_report_leads_with_the_time_to_it(cifar4_hub, tmp_path, monkeypatch, capsys):
    """--target_metric_value is a recipe field: every run stops at the first evaluation reaching it (here the first,
    at update 1 of 4) and the report gives each arm's time to it and the smallest budget ending there."""
    monkeypatch.setattr(runner, "execute", execute_in_process)
    output_dir = tmp_path / "ablation"
    recipe = tiny_recipe(cifar4_hub, output_dir)
    recipe[recipe.index("--target_accuracy") : recipe.index("--target_accuracy") + 2] = []
    recipe[recipe.index("--max_steps") + 1] = "4"
    target = ["--target_metric_value", "0.0", "--eval_strategy", "steps", "--eval_steps", "1"]
    with fresh_process():
        returncode = cli.main(["--arms", "baseline,early_stop", "--repeats", "1", "--bound", "false", *recipe, *target])
    assert returncode == 0, capsys.readouterr().out[-4000:]
    data = json.loads((output_dir / "ablation.json").read_text())
    baseline = next(run for run in data["runs"] if run["arm"] == "baseline")
    assert baseline["returncode"] == 0
    assert baseline["results"]["time_to_target_updates"] == 1 and baseline["results"]["train_updates"] == 1
    row = next(row for row in data["table"] if row["arm"] == "baseline")
    assert row["target_reached"] == "1/1" and row["final_reached_target"] == "1/1"
    assert row["time_to_target_s"] == baseline["results"]["time_to_target_seconds"]
    markdown = (output_dir / "ablation.md").read_text()
    fastest = min(data["table"], key=lambda row: row["train_runtime_s"])
    line = f"Smallest training budget whose median run ends at validation accuracy >= 0: `{fastest['arm']}`"
    assert line in markdown
