"""The plan: one run per arm and repeat, interleaved, and what every arm holds fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from accel_recipes.bench.ablate.plan import AblationOptions, arm_notes, held_fixed, plan_ablation
from accel_recipes.errors import ConfigError


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
    assert ablation.resolved(ablation.arms[1]).training.gradient_accumulation_steps == 2
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
