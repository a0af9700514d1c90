from __future__ import annotations

import json
from pathlib import Path

from accel_recipes.bench.seeds import main


def write_run(runs: Path, seed: str, arm: str, accuracy: float, throughput: float, **extra: float) -> None:
    folder = runs / seed / arm
    folder.mkdir(parents=True)
    record = {"test_accuracy": accuracy, "steady_samples_per_second": throughput, **extra}
    (folder / "all_results.json").write_text(json.dumps(record))


def rows(output: str) -> dict[str, list[str]]:
    """The table's body rows by arm name: the cells after the first."""
    body = [line.strip("|").split("|") for line in output.strip().splitlines()[2:]]
    return {cells[0].strip().strip("`"): [cell.strip() for cell in cells[1:]] for cells in body}


def test_median_and_range_over_seeds_and_throughput_against_the_baseline(tmp_path, capsys):
    for seed, (plain, mixup) in {"seed-1": (0.90, 0.88), "seed-2": (0.92, 0.86), "seed-3": (0.91, 0.87)}.items():
        write_run(tmp_path, seed, "plain", plain, 400.0, test_tta_accuracy=plain + 0.01)
        write_run(tmp_path, seed, "mixup", mixup, 300.0)
    assert main([str(tmp_path), "--metrics", "test_accuracy,test_tta_accuracy"]) == 0
    output = capsys.readouterr().out
    assert output.splitlines()[2].startswith("| `plain` |")  # the baseline first, whatever its name's order
    table = rows(output)
    assert table["plain"] == ["3", "0.9100 (0.9000-0.9200)", "0.9200 (0.9100-0.9300)", "400.0", "1.00"]
    assert table["mixup"] == ["3", "0.8700 (0.8600-0.8800)", "-", "300.0", "0.75"]


def test_an_unfinished_run_is_counted_apart_not_as_zero(tmp_path, capsys):
    write_run(tmp_path, "seed-1", "plain", 0.9, 400.0)
    write_run(tmp_path, "seed-1", "ema", 0.8, 390.0)
    write_run(tmp_path, "seed-2", "plain", 0.7, 380.0)
    (tmp_path / "seed-2" / "ema").mkdir()  # still training: no all_results.json yet
    assert main([str(tmp_path)]) == 0
    table = rows(capsys.readouterr().out)
    assert table["ema"][:2] == ["1 (1 unfinished)", "0.8000 (0.8000-0.8000)"]
    assert table["plain"][:2] == ["2", "0.8000 (0.7000-0.9000)"]


def test_bad_input_is_one_line_naming_it(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "seed-1" / "plain").mkdir(parents=True)
    assert main([str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err
    write_run(tmp_path, "seed-2", "plain", 0.9, 400.0)
    assert main([str(tmp_path), "--baseline", "baseline"]) == 2
    assert "'baseline' has no runs; the arms found are ['plain']" in capsys.readouterr().err
    assert main([str(tmp_path), "--metrics", "test_acc"]) == 2
    assert "--metrics names ['test_acc'], not keys of all_results.json" in capsys.readouterr().err
