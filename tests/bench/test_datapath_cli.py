"""The datapath benchmark's options: the recipe as train.py resolves it, and bad options refused before anything
runs."""

from __future__ import annotations

import pytest

from accel_recipes.bench.datapath import Source
from accel_recipes.bench.datapath_cli import parse_options
from accel_recipes.errors import ConfigError


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--window_steps", "0"], "--window_steps must be at least 1, got 0"),
        (["--settle_steps", "-1"], "--settle_steps must be 0 or more, got -1"),
        (["--overwrite_output_dir", "maybe"], "'overwrite_output_dir' must be true or false, got 'maybe'"),
        (["--sources", "resident,stream:2", "--settle_steps", "3"], "--settle_steps 3 is less than the 4 batches"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(extra, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        parse_options(["--dataset_name", "unused", "--output_dir", str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


def test_options_keep_the_recipe_and_the_benchmark_never_pushes(tmp_path):
    options, args, sources = parse_options(
        ["--dataset_name", "unused", "--dataloader_num_workers", "3", "--sources", "resident,stream",
         "--output_dir", str(tmp_path), "--per_device_train_batch_size", "64"]
    )  # fmt: skip
    assert sources == [Source("resident", "resident"), Source("stream:3", "stream", 3)]
    assert args.training.per_device_train_batch_size == 64 and args.training.output_dir == str(tmp_path)
    assert not args.hub.push_to_hub and args.training.report_to == "none"
    # No trainer is built (datapath_setup builds the sources' loaders and the step only): nothing to make lazy.
    assert args.training.dataloader_num_workers == 3


def test_unknown_arguments_are_refused_with_the_closest_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown argument '--learning_rat'; did you mean '--learning_rate'"):
        parse_options(["--learning_rat", "0.1", "--output_dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="unknown argument '--window_step'; did you mean '--window_steps'"):
        parse_options(["--window_step", "4", "--output_dir", str(tmp_path)])


def test_recipe_yaml_and_fields_resolve_as_in_train(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("per_device_train_batch_size: 16\nmixed_precision: bf16\ndataloader_num_workers: 2\n")
    options, args, sources = parse_options(
        ["--config", str(recipe), "--mixed_precision", "no", "--sources", "synthetic,stream", "--output_dir",
         str(tmp_path / "out"), "--settle_steps", "4"]
    )  # fmt: skip
    assert (args.training.per_device_train_batch_size, args.training.mixed_precision) == (16, "no")
    assert sources[1] == Source("stream:2", "stream", 2) and options.rounds == 20


def test_results_already_there_are_kept_unless_overwritten(tmp_path):
    (tmp_path / "paired.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds results"):
        parse_options(["--output_dir", str(tmp_path)])
    parse_options(["--output_dir", str(tmp_path), "--overwrite_output_dir", "true"])
