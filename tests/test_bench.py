"""The ablation runner's parts: arms -> recipe overrides, the plan of runs, statistics, the bound, the report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from accel_recipes.ablation.arms import ArmContext, ArmError, effective_batch, parse_arms
from accel_recipes.ablation.bound import BOUND_FIELDS, bound_key, plan_bounds, summarize_bounds
from accel_recipes.ablation.cli import parse_options, setup_facts
from accel_recipes.ablation.plan import AblationOptions, arm_notes, held_fixed, plan_ablation, rotation
from accel_recipes.ablation.report import TABLE, Report, markdown_table, write_report
from accel_recipes.ablation.runner import (
    _last_error,
    format_value,
    launch_command,
    launched_processes,
    run_environment,
)
from accel_recipes.ablation.summary import COLUMNS, RunRecord, spread, summarize_all, time_to_target
from accel_recipes.config import ConfigError, make_args

CONTEXT = ArmContext(effective_batch=32, ga_steps=2, amp_dtype="bf16")


def arms_by_name(text: str, context: ArmContext = CONTEXT) -> dict:
    return {arm.name: arm.overrides for arm in parse_arms(text, context)}


# ---- arms ---------------------------------------------------------------------------------------------------


def test_builtin_arms_change_only_their_switch_and_keep_the_effective_batch():
    arms = arms_by_name("baseline,ga,amp,pin,all")
    assert list(arms) == ["baseline", "ga", "amp", "pin", "all"]
    assert arms["baseline"] == {
        "mixed_precision": "no",
        "tf32": False,
        "per_device_train_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "dataloader_pin_memory": False,
        "data_pipeline": "stream",
    }
    assert arms["ga"] == {**arms["baseline"], "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2}
    assert arms["amp"] == {**arms["baseline"], "mixed_precision": "bf16"}
    assert arms["pin"] == {**arms["baseline"], "dataloader_pin_memory": True}
    assert arms["all"] == {**arms["ga"], "mixed_precision": "bf16", "dataloader_pin_memory": True}
    assert {effective_batch(overrides) for overrides in arms.values()} == {32}
    assert all(overrides["tf32"] is False for overrides in arms.values())


def test_combinations_custom_arms_and_field_settings():
    arms = arms_by_name("ga+amp,resident=data_pipeline:resident,fast=all+resident+channels_last:true")
    assert list(arms) == ["baseline", "ga+amp", "resident", "fast"]  # the baseline is added, first
    assert arms["ga+amp"]["mixed_precision"] == "bf16" and arms["ga+amp"]["gradient_accumulation_steps"] == 2
    assert arms["resident"] == {**arms["baseline"], "data_pipeline": "resident"}
    assert arms["fast"]["data_pipeline"] == "resident" and arms["fast"]["channels_last"] is True
    assert arms["fast"]["dataloader_pin_memory"] is True and arms["fast"]["per_device_train_batch_size"] == 16


def test_unknown_arm_names_the_valid_ones():
    with pytest.raises(ArmError) as error:
        parse_arms("baseline,gaa", CONTEXT)
    message = str(error.value)
    assert "'gaa'" in message
    for name in ("baseline", "ga", "amp", "pin", "all"):
        assert f"'{name}'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x=mixed_precision:fp8", "'mixed_precision' must be one of"),
        ("x=learning_rat:0.1", "names no recipe field 'learning_rat'"),
        ("ga,ga", "named twice"),
        ("amp=mixed_precision:fp16", "is a built-in arm"),
        ("", "--arms is empty"),
    ],
)
def test_bad_arms_are_config_errors(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_arms(text, CONTEXT)


def test_ga_needs_a_divisor_of_the_effective_batch():
    with pytest.raises(ArmError, match="30 is not divisible by 4.*--ga_steps"):
        parse_arms("ga", ArmContext(effective_batch=30, ga_steps=4, amp_dtype="fp16"))


@pytest.mark.parametrize(("micro", "steps", "asked", "expected"), [(128, 2, None, (256, 2)), (64, 1, None, (64, 2))])
def test_context_from_the_recipe(micro, steps, asked, expected):
    args = make_args({"per_device_train_batch_size": micro, "gradient_accumulation_steps": steps})
    context = ArmContext.from_args(args, asked, "fp16")
    assert (context.effective_batch, context.ga_steps) == expected
    with pytest.raises(ArmError, match="ga_steps must be at least 2"):
        ArmContext.from_args(args, 1, "fp16")


# ---- the plan -----------------------------------------------------------------------------------------------


def write_recipe(tmp_path: Path) -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model_name_or_path: test_resnet\nper_device_train_batch_size: 8\ngradient_accumulation_steps: 2\n"
        "mixed_precision: fp16\ndataloader_num_workers: 2\noutput_dir: runs/tiny\nlogging_steps: 50\n"
    )
    return str(recipe)


def test_plan_interleaves_repeats_and_arms_override_the_recipe(tmp_path):
    options = AblationOptions(
        config=write_recipe(tmp_path),
        arms="baseline,ga",
        repeats=2,
        output_dir=str(tmp_path / "ablation"),
        recipe_overrides={"max_steps": "100", "mixed_precision": "bf16", "output_dir": "ignored"},
        bound=False,
    )
    ablation = plan_ablation(options, "cpu")
    runs = ablation.planned_runs()
    assert [(run.arm, run.repeat) for run in runs] == [("baseline", 1), ("ga", 1), ("ga", 2), ("baseline", 2)]
    assert runs[1].output_dir == tmp_path / "ablation" / "ga" / "run-1"
    first, second = runs[0].overrides, runs[1].overrides
    assert first["output_dir"] == str(runs[0].output_dir)  # the runner owns the folders
    assert first["mixed_precision"] == "no"  # the arm wins over the user's override
    assert first["per_device_train_batch_size"] == 16 and second["per_device_train_batch_size"] == 8
    assert first["overwrite_output_dir"] is True and first["push_to_hub"] is False
    assert first["save_strategy"] == "no" and first["logging_steps"] == 4  # 100 updates / 25 points
    assert ablation.resolved(ablation.arms[1]).gradient_accumulation_steps == 2
    text = " ".join(held_fixed(ablation, "cpu"))
    assert "effective batch is 16" in text and "2 micro-batches of 8" in text
    assert "`pin`" not in text and "`amp`" not in text  # only the switches the arms use are explained
    assert arm_notes(ablation) == ["--mixed_precision on the command line is replaced by each arm's own setting"]


def test_plan_refuses_a_non_empty_output_dir_and_bad_fields(tmp_path):
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "ablation.md").write_text("old")
    options = AblationOptions(config=write_recipe(tmp_path), arms="baseline", output_dir=str(tmp_path / "ablation"))
    with pytest.raises(ConfigError, match="is not empty.*--overwrite_output_dir true"):
        plan_ablation(options, "cpu")
    options.overwrite_output_dir = True
    options.recipe_overrides = {"learning_rate": "-1"}
    with pytest.raises(ConfigError, match="'learning_rate' must be positive"):
        plan_ablation(options, "cpu")


def test_command_line_options_and_launch_command(tmp_path):
    options = parse_options(
        ["--arms", "baseline,amp", "--launch_args", "--multi_gpu --num_processes 2", "--max_steps", "5"]
    )
    assert options.arms == "baseline,amp" and options.recipe_overrides == {"max_steps": "5"}
    assert launched_processes(options.launch_args) == 2 and launched_processes("") == 1
    command = launch_command(Path("recipes/train.py"), options.launch_args, "r.yaml", {"tf32": False, "x": None})
    assert command[command.index("launch") + 1 :] == [
        "--multi_gpu", "--num_processes", "2", "recipes/train.py",
        "--config", "r.yaml", "--tf32", "false", "--x", "none",
    ]  # fmt: skip
    assert format_value(True) == "true" and format_value(0.5) == "0.5"
    with pytest.raises(ConfigError, match="unknown argument '--learning_rat'; did you mean '--learning_rate'"):
        parse_options(["--learning_rat", "0.1"])


def test_setup_names_each_arms_worker_count_when_the_arms_set_it(tmp_path):
    facts = setup_facts(
        plan_ablation(AblationOptions(config=None, arms="baseline,amp", output_dir=str(tmp_path / "a")), "cpu"),
        [], "ablate", threads=2,
    )  # fmt: skip
    assert "0 loader worker(s)" in facts["training"]  # the recipe default's, in every arm
    arms = "baseline,w0=amp+dataloader_num_workers:0,w1=amp+dataloader_num_workers:2,r=amp+data_pipeline:resident"
    ablation = plan_ablation(AblationOptions(config=None, arms=arms, output_dir=str(tmp_path / "b")), "cpu")
    training = setup_facts(ablation, [], "ablate", threads=2)["training"]
    assert "loader workers baseline 0, w0 0, w1 2, seed" in training  # the resident arm has no loader workers


def test_cpu_runs_get_the_thread_count_and_the_callers_openmp_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = run_environment(threads=2)
    assert env["OMP_NUM_THREADS"] == "2" and "OMP_WAIT_POLICY" not in env  # OpenMP's default: fastest alone
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert run_environment(threads=2)["OMP_WAIT_POLICY"] == "PASSIVE"  # the user's choice is kept
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" in run_environment(threads=None)  # on a GPU machine nothing is changed


def test_a_failed_run_is_described_by_its_own_error(tmp_path):
    log = tmp_path / "launch.log"
    log.write_text(
        "Traceback (most recent call last):\n  File x\nValueError: bad value\n"
        "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1.\n"
    )
    assert _last_error(log) == "ValueError: bad value"
    log.write_text("error: output_dir 'x' already holds a run\nTraceback\nsubprocess.CalledProcessError: 1\n")
    assert _last_error(log) == "error: output_dir 'x' already holds a run"


# ---- statistics and summary ---------------------------------------------------------------------------------


def test_spread_ignores_missing_and_non_finite_values():
    found = spread([3.0, None, 1.0, math.nan, 2.0])
    assert (found.min, found.median, found.max) == (1.0, 2.0, 3.0)
    assert spread([4.0, 2.0]).median == 3.0
    assert spread([None]) is None


def test_time_to_target_is_the_first_validation_reaching_it():
    metrics = [
        {"step": 5, "loss": 1.0, "train_runtime": 1.0},
        {"step": 10, "eval_accuracy": 0.5, "train_runtime": 2.0},
        {"step": 20, "eval_accuracy": 0.8, "train_runtime": 4.5},
        {"step": 30, "eval_accuracy": 0.9, "train_runtime": 7.0},
        {"step": 30, "final": True, "eval_accuracy": 0.95},
    ]
    assert time_to_target(metrics, 0.75) == 4.5
    assert time_to_target(metrics, 0.93) is None  # the final evaluation is not a training time


def fake_record(arm: str, repeat: int, images_per_second: float, tmp_path: Path, **extra) -> RunRecord:
    results = {
        "steady_samples_per_second": images_per_second,
        "train_runtime": 1000 / images_per_second,
        "epoch": 2.0,
        "eval_accuracy": 0.8 + 0.01 * repeat,
        "eval_f1": 0.79,
        "test_accuracy": 0.78,
        "test_f1": 0.77,
        "peak_memory_mb": 1000.0,
        "skipped_updates": 0,
        "data_wait_fraction": 0.1,
        "num_processes": 1,
        "per_device_train_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "global_batch_size": 32,
        "mixed_precision": "no",
        **extra,
    }
    metrics = [
        {"step": 1, "epoch": 0.5, "loss": 2.0, "train_runtime": 1.0},
        {"step": 2, "epoch": 1.0, "loss": 1.5, "train_runtime": 2.0},
        {"step": 2, "epoch": 1.0, "eval_loss": 1.6, "eval_accuracy": 0.7, "train_runtime": 2.0},
        {"step": 4, "epoch": 2.0, "eval_loss": 1.2, "eval_accuracy": 0.85, "train_runtime": 4.0},
        {"step": 4, "final": True, "eval_accuracy": 0.85},
    ]
    return RunRecord(arm, repeat, tmp_path / arm / f"run-{repeat}", 0, 30.0, results, metrics)


def fake_rows(tmp_path: Path) -> tuple[list, list[RunRecord]]:
    arms = parse_arms("baseline,amp,ga", CONTEXT)
    records = [
        fake_record("baseline", 1, 90.0, tmp_path),
        fake_record("baseline", 2, 110.0, tmp_path),
        fake_record("baseline", 3, 100.0, tmp_path),
        fake_record("amp", 1, 150.0, tmp_path, mixed_precision="bf16"),
        fake_record("amp", 2, 170.0, tmp_path, mixed_precision="bf16"),
        RunRecord("ga", 1, tmp_path / "ga" / "run-1", 1, 5.0, error="out of memory"),
    ]
    bounds = {"baseline": 200.0, "amp": 400.0}
    return summarize_all(arms, records, bounds, target_accuracy=0.8), records


def test_summary_medians_speedups_and_bound(tmp_path):
    rows, _ = fake_rows(tmp_path)
    baseline, amp, ga = rows
    assert baseline["speedup"] == 1.0  # exactly
    assert (baseline["speedup_min"], baseline["speedup_max"]) == (0.9, 1.1)
    assert amp["images_per_second_median"] == 160.0 and amp["speedup"] == pytest.approx(1.6)
    assert amp["fraction_of_bound"] == pytest.approx(0.4) and baseline["fraction_of_bound"] == pytest.approx(0.5)
    assert baseline["eval_accuracy"] == pytest.approx(0.82) and baseline["seconds_per_epoch"] == pytest.approx(5.0)
    assert baseline["time_to_target_s"] == 4.0 and baseline["target_reached"] == "3/3"
    assert ga["runs_ok"] == "0/1" and ga["speedup"] is None and ga["micro_batch"] == 16
    assert all(set(row) == set(COLUMNS) for row in rows)


def test_report_files_from_fake_results(tmp_path):
    rows, records = fake_rows(tmp_path)
    report = Report(
        title="Ablation: fake",
        setup={"command": "python recipes/ablate.py --arms baseline,amp,ga", "device": "cpu"},
        rows=rows,
        held_fixed=["the effective batch"],
        notes=["a note"],
        arms=[{"name": name} for name in ("baseline", "amp", "ga")],
        bounds=summarize_bounds(
            plan_bounds(parse_arms("baseline", CONTEXT), lambda arm: make_args(arm.overrides)),
            [fake_record("bound-1", 1, 190.0, tmp_path), fake_record("bound-1", 2, 200.0, tmp_path)],
            lambda arm: make_args(arm.overrides),
        ),
        records=records,
    )
    paths = write_report(report, tmp_path / "out")
    assert [path.name for path in paths] == [
        "ablation.md", "ablation.csv", "ablation.json", "learning_curves.png", "speedup.png"
    ]  # fmt: skip
    assert all(path.stat().st_size > 0 for path in paths)
    text = paths[0].read_text()
    assert markdown_table(rows) in text and "| `baseline` |" in text and "**1.00** (0.90-1.10)" in text
    assert "`ga` repeat 1 (exit 1): out of memory" in text and "python recipes/ablate.py" in text
    assert "| `bound-1` | `baseline` | no | 32 x 1 | 2/2 | 190.0 / 195.0 / 200.0 |" in text
    header = text.split("## Results")[1].split("\n| ")[1]
    assert all(name in header for name, _ in TABLE)
    with paths[1].open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(COLUMNS) and float(table[0]["speedup"]) == 1.0 and table[2]["speedup"] == ""
    data = json.loads(paths[2].read_text())
    assert len(data["runs"]) == 6 and data["table"][1]["arm"] == "amp"


# ---- the bound ----------------------------------------------------------------------------------------------


def test_arms_with_the_same_compute_share_a_bound():
    arms = {arm.name: make_args(arm.overrides) for arm in parse_arms("baseline,pin,amp,ga", CONTEXT)}
    assert bound_key(arms["baseline"]) == bound_key(arms["pin"])
    assert len({bound_key(arms[name]) for name in ("baseline", "amp", "ga")}) == 3


def test_one_bound_arm_per_distinct_compute_on_synthetic_data():
    arms = parse_arms(
        "baseline,pin,amp,resident=amp+data_pipeline:resident,workers=amp+dataloader_num_workers:0", CONTEXT
    )
    plan = plan_bounds(arms, lambda arm: make_args(arm.overrides))
    assert [bound.name for bound in plan.arms] == ["bound-1", "bound-2"]
    assert plan.of == {
        "baseline": "bound-1", "pin": "bound-1", "amp": "bound-2", "resident": "bound-2", "workers": "bound-2"
    }  # fmt: skip
    fp32, bf16 = (bound.overrides for bound in plan.arms)
    assert fp32["data_pipeline"] == bf16["data_pipeline"] == "synthetic"
    assert fp32["mixed_precision"] == "no" and bf16["mixed_precision"] == "bf16"
    assert {fp32["per_device_train_batch_size"], bf16["per_device_train_batch_size"]} == {32}


def test_bound_arms_run_interleaved_with_the_arms(tmp_path):
    options = AblationOptions(config=None, arms="baseline,amp", repeats=2, output_dir=str(tmp_path / "a"))
    ablation = plan_ablation(options, "cpu")
    names = [(run.arm, run.repeat) for run in ablation.planned_runs()]
    # the second repeat starts half-way along
    assert names == [
        ("baseline", 1), ("amp", 1), ("bound-1", 1), ("bound-2", 1),
        ("bound-1", 2), ("bound-2", 2), ("baseline", 2), ("amp", 2),
    ]  # fmt: skip
    bound_run = ablation.planned_runs()[2]
    assert bound_run.overrides["data_pipeline"] == "synthetic" and bound_run.output_dir.name == "run-1"
    no_bound = AblationOptions(config=None, arms="baseline,amp", repeats=1, output_dir=str(tmp_path / "b"), bound=False)
    assert [run.arm for run in plan_ablation(no_bound, "cpu").planned_runs()] == ["baseline", "amp"]


def test_each_repeat_starts_further_along_so_recurring_load_moves_between_arms():
    assert [rotation(repeat, 1, 5) for repeat in (1,)] == [0]
    assert [rotation(repeat, 4, 8) for repeat in (1, 2, 3, 4)] == [0, 2, 4, 6]
    assert [rotation(repeat, 6, 11) for repeat in range(1, 7)] == [0, 2, 4, 6, 7, 9]  # spread, never repeated
    assert [rotation(repeat, 3, 2) for repeat in (1, 2, 3)] == [0, 1, 1]  # more repeats than arms: still in range
    assert rotation(1, 2, 0) == 0


def test_bound_summaries_are_the_bound_arms_medians(tmp_path):
    arms = parse_arms("baseline,amp", CONTEXT)
    plan = plan_bounds(arms, lambda arm: make_args(arm.overrides))
    records = [
        fake_record("bound-1", 1, 300.0, tmp_path),
        fake_record("bound-1", 2, 200.0, tmp_path),
        fake_record("bound-1", 3, 250.0, tmp_path),
        RunRecord("bound-2", 1, tmp_path / "bound-2" / "run-1", 1, 5.0, error="RuntimeError: boom"),
    ]
    first, second = summarize_bounds(plan, records, lambda arm: make_args(arm.overrides))
    assert first["arms"] == ["baseline"] and first["runs_ok"] == "3/3"
    assert (first["images_per_second_min"], first["images_per_second"], first["images_per_second_max"]) == (
        200.0, 250.0, 300.0
    )  # fmt: skip
    assert set(first["settings"]) == set(BOUND_FIELDS) and first["settings"]["mixed_precision"] == "no"
    assert second["images_per_second"] is None and second["error"] == "RuntimeError: boom"
