"""timm's train.py timed as the recipes are: its training clock, its evaluations and the stop at a target.

timm's train.py is not in its wheel, so these tests hand the real wrapper a train.py shaped as timm's is (module-level
``train_one_epoch`` / ``validate`` looked up by ``main`` at call time, the epoch loop ending on ``KeyboardInterrupt``);
the run against timm's own file is the benchmark in BENCHMARKS.md.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from accel_recipes.bench.common.target import Target, time_to_target
from accel_recipes.bench.timm_reference import IDX_FILES, main, unpack_idx
from accel_recipes.errors import ConfigError

TRAIN_PY = """
import json, sys, time

class DataLoader:
    batch_size = 4

class Loader:  # timm's PrefetchLoader: the torch DataLoader's batch_size is on its .loader
    loader = DataLoader()
    def __len__(self):
        return 5

def train_one_epoch(epoch, model, loader, optimizer, args, **kwargs):
    time.sleep(0.01)
    return {"loss": 1.0}

def validate(model, loader, loss_fn, args, log_suffix="", **kwargs):
    time.sleep(0.05)  # evaluation time, which the clock must leave out
    top1 = {0: 60.0, 1: 85.0, 2: 95.0, 3: 99.0}[len(SEEN)]
    SEEN.append((sys.argv, log_suffix))
    return {"top1": top1, "loss": 1.0 - top1 / 100}

SEEN = []

def main():
    epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
    try:
        for epoch in range(epochs):
            train_one_epoch(epoch, None, Loader(), None, None)
            validate(None, None, None, None)
    except KeyboardInterrupt:
        pass
    print("RAN", json.dumps(sys.argv))
"""


def write_idx(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        with gzip.open(folder / f"{name}.gz", "wb") as stream:
            stream.write(name.encode())
    return folder


def test_the_clock_leaves_evaluation_out_and_the_run_stops_at_the_target(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_PY)
    out = tmp_path / "run"
    argv = ["--timm_train_py", str(script), "--dataset_dir", str(write_idx(tmp_path / "idx")), "--output_dir",
            str(out), "--seed", "3", "--target_metric_value", "0.9", "--", "--epochs", "4"]  # fmt: skip
    assert main(argv) == 0
    passed = json.loads(capsys.readouterr().out.split("RAN ", 1)[1].splitlines()[0])
    assert passed[passed.index("--seed") + 1] == "3" and passed[-2:] == ["--epochs", "4"]  # after timm's settings
    assert passed[passed.index("--dataset") + 1] == "torch/fashion_mnist"

    results = json.loads((out / "all_results.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["eval_accuracy"] for record in records] == [0.6, 0.85, 0.95]  # stopped at 0.95: no 4th epoch
    assert results["stopped_early"] is True and results["epoch"] == 3.0
    assert results["time_to_target_updates"] == 15 and results["time_to_target_samples"] == 60  # 3 x 5 x 4
    assert 0.03 <= results["time_to_target_seconds"] < 0.15  # 3 epochs of 10 ms; not the 3 x 50 ms evaluations
    assert results["eval_accuracy"] == 0.95 and results["exported_weights"] == "live"
    # bench.seeds reads it as it reads a recipe run: its own time, trained with this very target
    assert time_to_target(results, records, Target(0.9)) == results["time_to_target_seconds"]
    assert time_to_target(results, records, Target(0.8)) == records[1]["train_runtime"]
    assert (out / "data" / "FashionMNIST" / "raw" / IDX_FILES[0]).read_bytes() == IDX_FILES[0].encode()


def test_with_timm_ema_the_ema_evaluation_decides(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(
        TRAIN_PY.replace(
            "validate(None, None, None, None)\n",
            'validate(None, None, None, None)\n            validate(None, None, None, None, log_suffix=" (EMA)")\n',
        )
    )
    out = tmp_path / "run"
    argv = ["--timm_train_py", str(script), "--dataset_dir", str(write_idx(tmp_path / "idx")), "--output_dir",
            str(out), "--target_metric_value", "0.9", "--", "--epochs", "3", "--model-ema"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "all_results.json").read_text())
    # epoch 1: live 0.60, EMA 0.85; epoch 2: live 0.95 (not the exported weights), EMA 0.99: stops there
    assert results["time_to_target_updates"] == 10 and results["exported_weights"] == "ema"
    assert results["metric_for_best_model"] == "ema_accuracy"
    assert results["eval_ema_accuracy"] == 0.99 and results["eval_accuracy"] == 0.99  # eval_*: the exported EMA
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record.get("eval_accuracy") for record in records] == [0.6, None, 0.95, None]  # live, during training


def test_missing_files_are_named(tmp_path, capsys):
    assert main(["--timm_train_py", str(tmp_path / "nowhere.py"), "--output_dir", str(tmp_path / "run")]) == 2
    assert "pytorch-image-models" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="has no train-images-idx3-ubyte"):
        unpack_idx(tmp_path, tmp_path / "root")
