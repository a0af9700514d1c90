"""Recipe arguments from a flat YAML recipe and the command line: strict keys with did-you-mean, typed values,
cross-field checks, and the ``config.yaml`` dump that reruns a run."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from accel_recipes.config.arguments import (
    _SECTION_TITLES,
    _TYPE_HINTS,
    FIELDS,
    GROUP_OF,
    GROUPS,
    DataArguments,
    RecipeArguments,
)
from accel_recipes.errors import ConfigError
from accel_recipes.io import write_text_atomic


def _closest(name: str) -> str:
    match = difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else "; see `recipes/train.py --help` for the valid keys"


def _unknown_key_error(name: str, where: str) -> ConfigError:
    return ConfigError(f"unknown key '{name}' in {where}{_closest(name)}")


def _coerce_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "yes", "1", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "no", "0", "off"}:
        return False
    raise ConfigError(f"'{name}' must be true or false, got {value!r}")


def coerce_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"'{name}' must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"'{name}' must be an integer, got {value!r}") from None


def coerce(name: str, value: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise a ConfigError naming the key."""
    hint = _TYPE_HINTS[name]
    options = get_args(hint)
    optional = get_origin(hint) in (typing.Union, types.UnionType) and type(None) in options
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null", ""}):
            return None
        hint = next(option for option in options if option is not type(None))
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text not in choices:
            raise ConfigError(f"'{name}' must be one of {list(choices)}, got {value!r}")
        return text
    if hint is bool:
        return _coerce_bool(name, value)
    if hint is int:
        return coerce_int(name, value)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{name}' must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"'{name}' must be a finite number, got {value!r}")
        return number
    if get_origin(hint) is list and get_args(hint) == (int,):
        return _coerce_int_list(name, value)
    if get_origin(hint) is list and get_args(hint) == (str,):
        return _coerce_str_list(name, value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"field {name} has an unsupported type {hint}")  # a bug in this module, not user input


def _coerce_int_list(name: str, value: Any) -> list[int]:
    """A YAML list of integers, or a command-line string of them separated by commas or spaces (``32,48,64``)."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"'{name}' must be a non-empty list of integers (e.g. 24,28,32), got {value!r}")
    return [coerce_int(name, item) for item in items]


def _coerce_str_list(name: str, value: Any) -> list[str]:
    """A YAML list of strings, or a command-line string of them separated by commas (``cat,dog,bird``)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or any(isinstance(item, (dict, list)) for item in items):
        raise ConfigError(f"'{name}' must be a list of names (e.g. cat,dog,bird), got {value!r}")
    names = [str(item).strip() for item in items]
    if not names or not all(names):
        raise ConfigError(f"'{name}' must be a list of non-empty names (e.g. cat,dog,bird), got {value!r}")
    return names


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML: a flat mapping of field names to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist; pass --config with a path to a YAML recipe")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe file '{path}' is not valid YAML: {error}") from None
    if data is None:
        raise ConfigError(f"recipe file '{path}' is empty; put field: value lines in it, or leave out --config")
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file '{path}' must hold a mapping of field: value, got {type(data).__name__}")
    for key in data:
        if key not in FIELDS:
            raise _unknown_key_error(str(key), f"recipe '{path}'")
    return data


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train an image classifier with Accelerate.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="YAML recipe whose values become the defaults")
    for group, cls in GROUPS.items():
        section = parser.add_argument_group(_SECTION_TITLES[group].lstrip("# "), cls.__doc__)
        for spec in dataclasses.fields(cls):
            hint = _TYPE_HINTS[spec.name]
            choices = get_args(hint) if get_origin(hint) is Literal else None
            help_text = f"{spec.metadata.get('help', '')} (default: {spec.default})"
            if choices:
                help_text += f" {{{', '.join(choices)}}}"
            section.add_argument(f"--{spec.name}", metavar="VALUE", help=help_text)
    return parser


def validate(args: RecipeArguments) -> None:
    """Cross-field checks; each error names the value and what to do."""
    data, training = args.data, args.training
    positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
    for name in positive:
        if getattr(training, name) < 1:
            raise ConfigError(f"'{name}' must be at least 1, got {getattr(training, name)}")
    if training.max_steps == 0 or training.max_steps < -1:
        raise ConfigError(f"'max_steps' must be -1 (use num_train_epochs) or positive, got {training.max_steps}")
    if training.max_steps == -1 and training.num_train_epochs <= 0:
        raise ConfigError(f"'num_train_epochs' must be positive, got {training.num_train_epochs}; or set max_steps")
    if training.learning_rate <= 0:
        raise ConfigError(f"'learning_rate' must be positive, got {training.learning_rate}")
    if not 0 <= data.validation_split_percentage < 100:
        raise ConfigError(f"'validation_split_percentage' must be in [0, 100), got {data.validation_split_percentage}")
    if not 0 <= training.warmup_ratio < 1:
        raise ConfigError(f"'warmup_ratio' must be in [0, 1), got {training.warmup_ratio}")
    if not 0 <= training.label_smoothing_factor < 1:
        raise ConfigError(f"'label_smoothing_factor' must be in [0, 1), got {training.label_smoothing_factor}")
    _check_ranges(args)
    if training.dataloader_num_workers < 0:
        raise ConfigError(f"'dataloader_num_workers' must be 0 or more, got {training.dataloader_num_workers}")
    for strategy, steps in (("eval_strategy", "eval_steps"), ("save_strategy", "save_steps")):
        if getattr(training, strategy) == "steps" and not getattr(training, steps):
            raise ConfigError(f"'{strategy}: steps' needs '{steps}' set to a positive number of updates")
    if training.save_total_limit is not None and training.save_total_limit < 1:
        raise ConfigError(f"'save_total_limit' must be at least 1 or None, got {training.save_total_limit}")
    if args.hub.push_to_hub and data.data_pipeline == "synthetic":
        raise ConfigError(
            "'push_to_hub' is true with 'data_pipeline: synthetic', which trains on one batch over and over: "
            "the model would be worthless. Set push_to_hub false for a throughput measurement, or pick a real "
            "data_pipeline"
        )
    _validate_regularization(args)
    _validate_stopping(args)
    known_trackers = {"tensorboard", "trackio", "wandb", "all", "none"}
    for tracker in training.report_targets():
        if tracker not in known_trackers:
            raise ConfigError(f"'report_to' got unknown tracker {tracker!r}; use one of {sorted(known_trackers)}")


# (field, lowest, highest, whether the highest is allowed): the ranges of the float fields not checked above
_RANGES: tuple[tuple[str, float, float, bool], ...] = (
    ("drop_path_rate", 0.0, 1.0, False),
    ("resident_memory_budget_gb", 0.0, math.inf, True),
    ("weight_decay", 0.0, math.inf, True),
    ("momentum", 0.0, 1.0, False),
    ("adam_beta1", 0.0, 1.0, False),
    ("adam_beta2", 0.0, 1.0, False),
    ("adam_epsilon", 0.0, math.inf, True),
    ("max_grad_norm", 0.0, math.inf, True),
)


def _check_ranges(args: RecipeArguments) -> None:
    for name, lowest, highest, highest_allowed in _RANGES:
        value = args.get(name)
        if value < lowest or value > highest or (value == highest and not highest_allowed):
            bracket = "]" if highest_allowed else ")"
            raise ConfigError(f"'{name}' must be in [{lowest:g}, {highest:g}{bracket}, got {value}")
    if args.training.adam_epsilon <= 0:
        raise ConfigError(f"'adam_epsilon' must be positive, got {args.training.adam_epsilon}")
    if args.training.max_nonfinite_steps < 1:
        raise ConfigError(f"'max_nonfinite_steps' must be at least 1, got {args.training.max_nonfinite_steps}")


def _validate_regularization(args: RecipeArguments) -> None:
    """EMA, mixup / cutmix, random erasing and the augmentation policies."""
    data, training = args.data, args.training
    for name in ("mixup_prob", "mixup_switch_prob", "random_erasing"):
        if not 0 <= getattr(training, name) <= 1:
            raise ConfigError(f"'{name}' is a probability and must be in [0, 1], got {getattr(training, name)}")
    for name in ("mixup_alpha", "cutmix_alpha"):
        if getattr(training, name) < 0:
            raise ConfigError(f"'{name}' must be 0 (off) or positive, got {getattr(training, name)}")
    mixing = training.mixup_alpha > 0 or training.cutmix_alpha > 0
    if mixing and training.per_device_train_batch_size % 2:
        raise ConfigError(
            f"mixup / cutmix pair each image with another of its micro-batch, so 'per_device_train_batch_size' "
            f"must be even, got {training.per_device_train_batch_size}"
        )
    if not 0 <= training.model_ema_decay < 1:
        raise ConfigError(f"'model_ema_decay' must be in [0, 1), got {training.model_ema_decay}")
    if training.metric_for_best_model.startswith("ema_") and not training.model_ema:
        raise ConfigError(
            f"'metric_for_best_model: {training.metric_for_best_model}' needs the EMA weights: pass "
            "--model_ema true, or choose accuracy, f1 or loss"
        )
    _validate_sizes(data)
    if not 0 <= data.rand_augment_magnitude <= 30:
        raise ConfigError(f"'rand_augment_magnitude' must be in [0, 30], got {data.rand_augment_magnitude}")
    if data.rand_augment_num_ops < 1:
        raise ConfigError(f"'rand_augment_num_ops' must be at least 1, got {data.rand_augment_num_ops}")


def _validate_stopping(args: RecipeArguments) -> None:
    """target_metric_value, early_stopping_patience and early_stopping_threshold."""
    training = args.training
    metric = training.metric_for_best_model
    stopping = [
        name for name in ("target_metric_value", "early_stopping_patience") if getattr(training, name) is not None
    ]
    if stopping and training.eval_strategy == "no":
        raise ConfigError(
            f"'{stopping[0]}' is decided at evaluations, but 'eval_strategy' is no; set eval_strategy to epoch or "
            "steps, or leave it unset"
        )
    target = training.target_metric_value
    if target is not None and not metric.endswith("loss") and not 0 <= target <= 1:
        raise ConfigError(
            f"'target_metric_value' {target} is out of range for metric_for_best_model {metric}, a fraction in "
            f"[0, 1]; e.g. 0.9 for 90%"
        )
    if target is not None and metric.endswith("loss") and target < 0:
        raise ConfigError(f"'target_metric_value' {target} is below 0, which a {metric} never reaches")
    if training.early_stopping_patience is not None and training.early_stopping_patience < 1:
        raise ConfigError(
            f"'early_stopping_patience' must be at least 1 (evaluations without improvement), got "
            f"{training.early_stopping_patience}; leave it unset to turn early stopping off"
        )
    if training.early_stopping_threshold < 0:
        raise ConfigError(f"'early_stopping_threshold' must be 0 or more, got {training.early_stopping_threshold}")


def _validate_sizes(data: DataArguments) -> None:
    """The resolution schedule and the evaluation size, as far as they are known without the model (whose input
    size the schedule must end at is checked when the loaders are built)."""
    if data.eval_image_size is not None and data.eval_image_size < 1:
        raise ConfigError(f"'eval_image_size' must be a positive number of pixels, got {data.eval_image_size}")
    sizes = data.train_img_sizes
    if sizes is None:
        return
    if any(size < 1 for size in sizes) or sorted(set(sizes)) != list(sizes):
        raise ConfigError(
            f"'train_img_sizes' must be distinct positive sizes, smallest first, ending at the model's input size; "
            f"got {sizes}"
        )
    if data.data_pipeline == "synthetic":
        raise ConfigError("'train_img_sizes' does nothing with 'data_pipeline: synthetic'; unset one of them")


def parse_args(argv: list[str] | None = None) -> RecipeArguments:
    """``--config recipe.yaml`` sets the defaults; every ``--field value`` on the command line wins."""
    parser = _build_parser()
    namespace, unknown = parser.parse_known_args(argv)
    for token in unknown:
        if token.startswith("--"):
            raise _unknown_key_error(token[2:].split("=")[0], "the command line")
        raise ConfigError(f"unexpected argument {token!r} on the command line; flags take the form --name value")
    given = vars(namespace)
    values: dict[str, Any] = load_recipe(given.pop("config")) if "config" in given else {}
    values.update(given)
    return make_args(values)


def make_args(values: dict[str, Any]) -> RecipeArguments:
    """Build validated arguments from a mapping of flat field names (YAML or CLI strings) to values."""
    for key in values:
        if key not in FIELDS:
            raise _unknown_key_error(key, "the arguments")
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for key, value in values.items():
        grouped[GROUP_OF[key]][key] = coerce(key, value)
    args = RecipeArguments(**{group: GROUPS[group](**fields) for group, fields in grouped.items()})
    validate(args)
    return args


def dump_config(args: RecipeArguments, path: str | Path) -> None:
    """Write every resolved field, grouped like a recipe, so ``--config path`` reruns the run."""
    lines = []
    for group in GROUPS:
        lines.append(("\n" if lines else "") + _SECTION_TITLES[group])
        for name, value in dataclasses.asdict(getattr(args, group)).items():
            lines.append(yaml.safe_dump({name: value}, default_flow_style=False, width=1000).strip())
    write_text_atomic(path, "\n".join(lines) + "\n")
