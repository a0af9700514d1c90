"""The ablation's command line and the setup its report states."""

from __future__ import annotations

from pathlib import Path

import pytest

from accel_recipes.bench.ablate.cli import parse_options, setup_facts
from accel_recipes.bench.ablate.plan import AblationOptions, plan_ablation
from accel_recipes.bench.ablate.runner import launch_command, launched_processes
from accel_recipes.bench.common.recipe import format_value
from accel_recipes.errors import ConfigError


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
