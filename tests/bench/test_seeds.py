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


def write_budget_run(runs: Path, seed: str, arm: str, runtime: float, finals: dict, evals: list, **extra) -> None:
    """A run of ``runtime`` training seconds whose final validation is ``finals`` and whose evaluations during
    training are ``evals``: (train_runtime, {key: value})."""
    write_run(runs, seed, arm, 0.0, 100.0, train_runtime=runtime, **finals, **extra)
    records = [{"step": index, "train_runtime": time, **values} for index, (time, values) in enumerate(evals)]
    records.append({"step": len(evals), "final": True, **finals})
    (runs / seed / arm / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


def test_time_to_target_over_seeds_and_the_smallest_budget_reaching_it(tmp_path, capsys):
    """Target validation accuracy 0.89. `short` never reaches it; `long` reaches it in 2 of 3 seeds (the median
    seed's time, the third counting as never) and ends there in 2 of 3; `ema` exports its EMA weights, so its EMA's
    accuracy is what counts (the live one never reaches the target), and one seed trained with this very target
    reports its own time (no metrics.jsonl needed): `ema` is the smallest budget whose median run ends at the target."""
    finals = {"1": (0.85, 0.90, 0.90), "2": (0.86, 0.895, 0.91), "3": (0.84, 0.88, 0.92)}
    for seed, (short, long, ema) in finals.items():
        write_budget_run(tmp_path, seed, "short", 100.0, {"eval_accuracy": short}, [(50.0, {"eval_accuracy": 0.8})])
        long_evals = [(100.0, {"eval_accuracy": 0.85}), (200.0 + int(seed), {"eval_accuracy": long})]
        write_budget_run(tmp_path, seed, "long", 300.0, {"eval_accuracy": long}, long_evals)
        # the final evaluation scores the exported weights (the best EMA) as eval_*; eval_ema_* is the last EMA
        ema_finals = {"eval_accuracy": ema, "eval_ema_accuracy": ema - 0.02}
        ema_evals = [(80.0, {"eval_accuracy": 0.85, "eval_ema_accuracy": ema})]
        write_budget_run(tmp_path, seed, "ema", 200.0, ema_finals, ema_evals, exported_weights="ema")
    own = json.loads((tmp_path / "3" / "ema" / "all_results.json").read_text())
    own |= {"target_metric_value": 0.89, "metric_for_best_model": "ema_accuracy", "time_to_target_seconds": 150.0}
    (tmp_path / "3" / "ema" / "all_results.json").write_text(json.dumps(own))
    (tmp_path / "3" / "ema" / "metrics.jsonl").unlink()

    assert main([str(tmp_path), "--baseline", "short", "--target_metric_value", "0.89"]) == 0
    output = capsys.readouterr().out
    table, budget = output.split("\n\n")
    header = table.splitlines()[0]
    assert "s to validation accuracy >= 0.89, median (seeds reached) | time against `short` |" in header
    exported = "| final validation accuracy of the exported weights, median (min-max) | final validation reached |"
    assert exported in header
    cells = rows(table)
    # `short` never reaches the target: the times are against its median training time, 100 s
    assert cells["short"][-5:] == ["not reached (0/3)", "-", "100.0", "0.8500 (0.8400-0.8600)", "0/3"]
    assert cells["long"][-5:] == ["202.0 (2/3)", "2.02x", "300.0", "0.8950 (0.8800-0.9000)", "2/3"]  # 201, 202, never
    # seeds 1 and 2 at 80 s, seed 3 its own 150 s: median 80; the EMA's final accuracy, the weights it exported
    assert cells["ema"][-5:] == ["80.0 (3/3)", "0.80x", "200.0", "0.9100 (0.9000-0.9200)", "3/3"]
    assert budget.strip() == (
        "`short`'s median run did not reach validation accuracy >= 0.89: the times are against its median training "
        "time, 100.0 s. "
        "Smallest training budget whose median run ends at validation accuracy >= 0.89: `ema`, 200.0 s of training."
    )
    assert main([str(tmp_path), "--baseline", "long", "--target_metric_value", "0.89"]) == 0
    against_long = rows(capsys.readouterr().out.split("\n\n")[0])
    assert against_long["ema"][-4] == "0.40x" and against_long["long"][-4] == "1.00x"  # 80 / 202
