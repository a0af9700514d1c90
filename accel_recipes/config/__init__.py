"""Recipe arguments: four groups (model, data, training, Hub), one flat YAML recipe for defaults, the command
line on top.

A recipe and the command line stay flat (``--learning_rate 0.1``); each field belongs to exactly one group, and each
builder takes the group(s) it needs (``build_model(args.model, ...)``), as the alignment-handbook scripts do.
"""

from accel_recipes.config.arguments import (
    FIELDS,
    GROUP_OF,
    GROUPS,
    DataArguments,
    HubArguments,
    ModelArguments,
    RecipeArguments,
    TrainingArguments,
)
from accel_recipes.config.parsing import (
    _build_parser,
    coerce,
    dump_config,
    load_recipe,
    make_args,
    parse_args,
    validate,
)
from accel_recipes.errors import ConfigError

__all__ = [
    "FIELDS",
    "GROUPS",
    "GROUP_OF",
    "ConfigError",
    "DataArguments",
    "HubArguments",
    "ModelArguments",
    "RecipeArguments",
    "TrainingArguments",
    "_build_parser",
    "coerce",
    "dump_config",
    "load_recipe",
    "make_args",
    "parse_args",
    "validate",
]
