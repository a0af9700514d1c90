"""`python recipes/bench_datapath.py` end to end: three sources, two rounds, a tiny model, generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datagen
import pytest
from conftest import ROOT, read_jsonl

pytestmark = pytest.mark.slow


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "recipes" / "bench_datapath.py"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_sources_side_by_side_write_the_report(data_root, tmp_path):
    dataset = datagen.make_cifar_hub_dataset(data_root / "paired", num_classes=4, train_per_class=16, test_per_class=4)
    output_dir = tmp_path / "paired"
    args = [
        "--config", str(ROOT / "recipes" / "cifar10" / "resnet50.yaml"),
        "--model_name_or_path", "test_resnet",
        "--dataset_name", str(dataset),
        "--cache_dir", str(tmp_path / "cache"),
        "--per_device_train_batch_size", "8",
        "--mixed_precision", "bf16",
        "--sources", "synthetic,resident,stream:0",
        "--rounds", "2", "--window_steps", "3", "--settle_steps", "1",
        "--output_dir", str(output_dir),
    ]  # fmt: skip
    result = bench(*args)
    assert result.returncode == 0, result.stderr[-4000:]

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
    assert "| `stream:0` (best stream) | 2 |" in report and "precision bf16" in report

    again = bench(*args)
    assert again.returncode == 2 and "already holds results (paired.json)" in again.stderr
    assert json.loads((output_dir / "paired.json").read_text()) == results, "the finished results are untouched"


def test_too_few_settle_steps_fail_before_training(tmp_path):
    result = bench("--dataset_name", str(tmp_path), "--sources", "resident,stream:2", "--settle_steps", "1")
    assert result.returncode == 2
    assert "--settle_steps 1 is less than the 4 batches" in result.stderr
