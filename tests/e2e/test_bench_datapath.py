"""The data path benchmark end to end: three sources, two rounds, a tiny model, generated data.

It measures in one process, so the report is made by its entry point in this one (conftest's ``fresh_process``);
``python recipes/bench_datapath.py`` is launched only for its exit code and message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, fresh_process, read_jsonl

from accel_recipes.bench.datapath_cli import main

pytestmark = pytest.mark.slow


def test_sources_side_by_side_write_the_report(cifar4_hub, tmp_path, capsys):
    output_dir = tmp_path / "paired"
    args = [
        "--config", str(ROOT / "recipes" / "cifar10" / "resnet50.yaml"),
        "--model_name_or_path", "test_resnet",
        "--image_size", "16",  # a quarter of the 32 px images' compute: the report does not depend on it
        "--dataset_name", str(cifar4_hub),
        "--cache_dir", str(tmp_path / "cache"),
        "--per_device_train_batch_size", "8",
        "--mixed_precision", "no",  # over the recipe's fp16; CPU bf16 autocast is emulated on AVX2, many times slower
        "--sources", "synthetic,resident,stream:0",
        "--rounds", "2", "--window_steps", "3", "--settle_steps", "1",
        "--output_dir", str(output_dir),
    ]  # fmt: skip
    with fresh_process():
        returncode = main(args)
    assert returncode == 0, capsys.readouterr().err[-4000:]

    results = json.loads((output_dir / "paired.json").read_text())
    windows = results["windows"]
    assert len(windows) == 6 and read_jsonl(output_dir / "windows.jsonl") == windows
    assert sorted((w["round"], w["source"]) for w in windows) == [
        (r, s) for r in (1, 2) for s in ("resident", "stream:0", "synthetic")
    ]
    assert all(w["images"] == 3 * 8 and w["images_per_second"] > 0 for w in windows)
    summary = results["summary"]
    assert summary["best_stream"] == "stream:0"
    assert summary["resident_of_bound"][1] > 0 and summary["resident_over_best_stream"][1] > 0
    assert results["setup"]["command"].startswith("python recipes/bench_datapath.py --config")
    report = (output_dir / "paired.md").read_text()
    assert "| `stream:0` (best stream) | 2 |" in report and "precision no" in report

    capsys.readouterr()
    with fresh_process():
        assert main(args) == 2
    assert "already holds results (paired.json)" in capsys.readouterr().err
    assert json.loads((output_dir / "paired.json").read_text()) == results, "the finished results are untouched"


def test_too_few_settle_steps_fail_before_training(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "recipes" / "bench_datapath.py"), "--dataset_name", str(tmp_path)]
    command += ["--sources", "resident,stream:2", "--settle_steps", "1"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "--settle_steps 1 is less than the 4 batches" in result.stderr
