"""Recipe arguments: YAML defaults, CLI overrides, strict keys, typed values, a dump that reruns."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from accel_recipes.config import (
    FIELDS,
    GROUP_OF,
    GROUPS,
    ConfigError,
    RecipeArguments,
    _build_parser,
    dump_config,
    load_recipe,
    make_args,
    parse_args,
)

RECIPES = sorted(Path(__file__).resolve().parents[1].glob("recipes/**/*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_sets_defaults_and_cli_wins(tmp_path):
    recipe = write(tmp_path / "r.yaml", "learning_rate: 0.5\ngradient_accumulation_steps: 2\nmixed_precision: bf16\n")
    args = parse_args(["--config", str(recipe), "--gradient_accumulation_steps", "4"])
    assert args.training.learning_rate == 0.5
    assert args.training.gradient_accumulation_steps == 4
    assert args.training.mixed_precision == "bf16"
    assert args.training.per_device_train_batch_size == RecipeArguments().training.per_device_train_batch_size


def test_unknown_yaml_key_names_the_closest_valid_key(tmp_path):
    recipe = write(tmp_path / "r.yaml", "learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'.*did you mean 'learning_rate'"):
        parse_args(["--config", str(recipe)])


def test_unknown_cli_flag_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match="'gradient_accumulation_step'.*did you mean 'gradient_accumulation_steps'"):
        parse_args(["--gradient_accumulation_step", "2"])


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--per_device_train_batch_size", "big", "must be an integer, got 'big'"),
        ("--learning_rate", "fast", "must be a number"),
        ("--dataloader_pin_memory", "maybe", "must be true or false"),
        ("--mixed_precision", "fp8", r"must be one of \['no', 'fp16', 'bf16'\]"),
        ("--gradient_accumulation_steps", "0", "must be at least 1"),
        ("--report_to", "mlflow", "unknown tracker"),
        ("--learning_rate", "nan", "'learning_rate' must be a finite number, got 'nan'"),
        ("--num_train_epochs", "nan", "'num_train_epochs' must be a finite number"),
        ("--warmup_ratio", "inf", "'warmup_ratio' must be a finite number"),
        ("--drop_path_rate", "1.0", r"'drop_path_rate' must be in \[0, 1\)"),
        ("--adam_beta2", "-0.1", r"'adam_beta2' must be in \[0, 1\)"),
        ("--weight_decay", "-1", r"'weight_decay' must be in \[0, inf\]"),
        ("--adam_epsilon", "0", "'adam_epsilon' must be positive"),
        ("--max_nonfinite_steps", "0", "'max_nonfinite_steps' must be at least 1"),
    ],
)
def test_bad_values_name_the_key_and_value(flag, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_args([flag, value])


def test_yaml_value_of_wrong_type_names_the_key(tmp_path):
    recipe = write(tmp_path / "r.yaml", "num_train_epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match="'num_train_epochs' must be a number"):
        parse_args(["--config", str(recipe)])


def test_booleans_and_none_parse_from_text():
    args = parse_args(["--dataloader_pin_memory", "false", "--save_total_limit", "None", "--pretrained", "true"])
    assert args.training.dataloader_pin_memory is False
    assert args.training.save_total_limit is None
    assert args.model.pretrained is True


def test_steps_strategy_needs_its_steps():
    with pytest.raises(ConfigError, match="'eval_strategy: steps' needs 'eval_steps'"):
        parse_args(["--eval_strategy", "steps"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target_metric_value", "0.9", "--eval_strategy", "no"], "'target_metric_value' is decided at evaluations"),
        (["--early_stopping_patience", "2", "--eval_strategy", "no"], "'early_stopping_patience' is decided at"),
        (["--target_metric_value", "89.3"], r"'target_metric_value' 89.3 is out of range .* accuracy.* e.g. 0.9"),
        (["--target_metric_value", "-1", "--metric_for_best_model", "loss"], "below 0, which a loss never reaches"),
        (["--early_stopping_patience", "0"], "'early_stopping_patience' must be at least 1"),
        (["--early_stopping_threshold", "-0.1"], "'early_stopping_threshold' must be 0 or more"),
    ],
)
def test_stopping_fields_are_checked(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


def test_stopping_fields_parse_from_the_command_line():
    training = parse_args(
        ["--target_metric_value", "0.35", "--metric_for_best_model", "loss", "--early_stopping_patience", "3"]
    ).training
    assert (training.target_metric_value, training.early_stopping_patience) == (0.35, 3)
    assert training.early_stopping_threshold == 0.0


def test_synthetic_data_is_never_pushed():
    with pytest.raises(ConfigError, match="'push_to_hub' is true with 'data_pipeline: synthetic'"):
        parse_args(["--data_pipeline", "synthetic", "--push_to_hub", "true"])
    assert parse_args(["--data_pipeline", "synthetic"]).hub.push_to_hub is False


def test_an_empty_recipe_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty.yaml").write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="recipe file '.*empty.yaml' is empty"):
        parse_args(["--config", str(tmp_path / "empty.yaml")])


def test_missing_recipe_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_args(["--config", str(tmp_path / "nope.yaml")])


def test_dumped_config_reruns_to_the_same_arguments(tmp_path):
    args = parse_args(["--learning_rate", "0.03", "--image_size", "64", "--report_to", "tensorboard"])
    dump_config(args, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "# Model arguments" in text and "# Training arguments" in text
    assert parse_args(["--config", str(tmp_path / "config.yaml")]) == args


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_shipped_recipe_parses(recipe):
    values = load_recipe(recipe)
    args = parse_args(["--config", str(recipe)])
    assert args.training.output_dir == values["output_dir"]
    assert yaml.safe_load(recipe.read_text()) == values


def test_shipped_recipes_exist():
    names = {f"{path.parent.name}/{path.stem}" for path in RECIPES}
    for dataset in ("cifar10", "cifar100"):
        for model in ("resnet50", "vit", "efficientnet"):
            assert f"{dataset}/{model}" in names


def test_every_field_belongs_to_exactly_one_group():
    seen = [spec.name for cls in GROUPS.values() for spec in dataclasses.fields(cls)]
    assert len(seen) == len(set(seen)) == len(FIELDS)
    assert GROUP_OF["model_name_or_path"] == "model" and GROUP_OF["dataset_name"] == "data"
    assert GROUP_OF["learning_rate"] == "training" and GROUP_OF["push_to_hub"] == "hub"


def test_flat_values_land_in_their_groups_and_read_back_by_name():
    args = make_args({"model_name_or_path": "vit_tiny_patch16_224", "max_train_samples": 8, "hub_model_id": "me/x"})
    assert args.model.model_name_or_path == "vit_tiny_patch16_224"
    assert args.data.max_train_samples == 8 and args.hub.hub_model_id == "me/x"
    assert args.get("max_train_samples") == 8
    args.set("seed", 7)
    assert args.training.seed == 7 and args.to_dict()["seed"] == 7
    assert list(args.to_dict()) == list(FIELDS)  # flat, in recipe order


def test_help_lists_the_flags_under_their_group():
    usage = _build_parser().format_help()
    text = usage[usage.index("\n\n") :]  # past the usage line, which lists every flag
    model, data, training, hub = (text.index(f"{title} arguments") for title in ("Model", "Data", "Training", "Hub"))
    assert model < text.index("--model_name_or_path") < data < text.index("--dataset_name") < training
    assert training < text.index("--learning_rate") < hub < text.index("--push_to_hub")


def test_label_names_from_a_yaml_list_or_a_comma_separated_string():
    assert make_args({"label_names": ["cat", "dog"]}).data.label_names == ["cat", "dog"]
    assert make_args({"label_names": "cat, dog,bird"}).data.label_names == ["cat", "dog", "bird"]
    for value in ["cat,,dog", [], [["cat"]]]:
        with pytest.raises(ConfigError, match="'label_names' must be a list of"):
            make_args({"label_names": value})
