"""Recipe fields on a benchmark's command line: taken one way, resolved here or forwarded to a run of train.py."""

from __future__ import annotations

import argparse

import pytest

from accel_recipes.bench.common.recipe import (
    OWN_FIELDS,
    add_recipe_fields,
    format_value,
    recipe_flags,
    reject_unknown,
    resolve_recipe,
    split_fields,
)
from accel_recipes.config import parse_args
from accel_recipes.errors import ConfigError


def parser_with_fields() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output_dir", default="runs/mine")  # an OWN_FIELDS name: the benchmark's own option
    add_recipe_fields(parser)
    return parser


def test_fields_given_are_split_from_the_benchmarks_own_options():
    parser = parser_with_fields()
    parsed, unknown = parser.parse_known_args(
        ["--mixed_precision", "bf16", "--rounds", "5", "--output_dir", "x", "--max_steps", "7"]
    )
    own, fields = split_fields(parsed)
    assert unknown == [] and own == {"config": None, "rounds": 5, "output_dir": "x"}
    assert list(fields.items()) == [("mixed_precision", "bf16"), ("max_steps", "7")]  # as typed, in order
    assert "--learning_rate" not in parser.format_help()  # train.py's --help lists them
    assert set(OWN_FIELDS) == {"output_dir", "overwrite_output_dir"}


def test_unknown_arguments_name_the_closest_field_or_option():
    with pytest.raises(ConfigError, match="unknown argument '--learning_rat'; did you mean '--learning_rate'"):
        reject_unknown(["--learning_rat", "0.1"], [])
    with pytest.raises(ConfigError, match="unknown argument '--round=2'; did you mean '--rounds'"):
        reject_unknown(["--round=2"], ["rounds"])
    with pytest.raises(ConfigError, match="unknown argument 'zzzz'; see --help and recipes/train.py --help"):
        reject_unknown(["zzzz"], ["rounds"])
    reject_unknown([], ["rounds"])


def test_forwarded_flags_read_back_to_the_resolved_arguments(tmp_path):
    """The one way both benchmarks pass fields on: what a run of train.py parses from ``recipe_flags`` is what
    ``resolve_recipe`` resolves here."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: test_resnet\nper_device_train_batch_size: 8\nmixed_precision: fp16\n")
    fields = {
        "mixed_precision": "bf16",
        "max_steps": "5",
        "tf32": False,
        "dataloader_pin_memory": True,
        "resume_from_checkpoint": None,
        "learning_rate": 0.05,
    }
    flags = recipe_flags(str(recipe), fields)
    assert flags[:2] == ["--config", str(recipe)] and flags[flags.index("--tf32") + 1] == "false"
    resolved = resolve_recipe(str(recipe), fields)
    assert parse_args(flags) == resolved
    assert (resolved.training.mixed_precision, resolved.training.per_device_train_batch_size) == ("bf16", 8)
    assert resolved.training.max_steps == 5 and resolved.training.resume_from_checkpoint is None
    assert resolve_recipe(None, {}) == parse_args([]) and recipe_flags(None, {}) == []


def test_values_print_as_train_reads_them_and_bad_ones_are_config_errors():
    assert [format_value(value) for value in (True, False, None, 0.5, 3, "x")] == [
        "true", "false", "none", "0.5", "3", "x"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="'learning_rate' must be positive"):
        resolve_recipe(None, {"learning_rate": "-1"})
    with pytest.raises(ConfigError, match="recipe file .* does not exist"):
        resolve_recipe("no/such/recipe.yaml", {})
