"""Recipe fields on a benchmark's command line: the one way both benchmarks take them and pass them on.

A benchmark's parser takes every field of ``recipes/train.py`` as ``--name VALUE`` (``add_recipe_fields``) beside
its own options, and ``split_fields`` parts the two. The fields stay what the user typed, a flat mapping of field
names to strings, on top of the recipe YAML (``--config``). From there:

- ``resolve_recipe(config, fields)``: the arguments a run with those fields uses, every value checked, in this
  process (the datapath benchmark trains in it; the ablation checks each arm before the first launch);
- ``recipe_flags(config, fields)``: the same fields as the command line of ``recipes/train.py``, which reads them
  back to the same arguments (the ablation's launches).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from accel_recipes.config import FIELDS, RecipeArguments, load_recipe, make_args
from accel_recipes.errors import ConfigError

OWN_FIELDS = ("output_dir", "overwrite_output_dir")  # recipe fields that mean the benchmark's own folder here


def add_recipe_fields(container: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--name VALUE`` for every recipe field but ``OWN_FIELDS``; absent from the namespace unless given, and
    left out of ``--help`` (``recipes/train.py --help`` lists them)."""
    for name in FIELDS:
        if name not in OWN_FIELDS:
            container.add_argument(f"--{name}", metavar="VALUE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def reject_unknown(unknown: list[str], options: Iterable[str]) -> None:
    """A ConfigError for the first token the parser did not know, with the closest field or ``options`` name."""
    for token in unknown:
        name = token[2:].split("=")[0] if token.startswith("--") else token
        close = difflib.get_close_matches(name, [*FIELDS, *options], n=1)
        hint = f"; did you mean '--{close[0]}'?" if close else "; see --help and recipes/train.py --help"
        raise ConfigError(f"unknown argument {token!r}{hint}")


def split_fields(namespace: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the benchmark's own options, the recipe fields given on the command line), each in the parser's order."""
    values = vars(namespace)
    own = {key: value for key, value in values.items() if key not in FIELDS or key in OWN_FIELDS}
    fields = {key: value for key, value in values.items() if key not in own}
    return own, fields


def resolve_recipe(config: str | None, fields: Mapping[str, Any]) -> RecipeArguments:
    """The recipe at ``config`` (none: the defaults) with ``fields`` on top, checked as ``recipes/train.py``
    checks them."""
    recipe = load_recipe(config) if config else {}
    return make_args({**recipe, **fields})


def format_value(value: Any) -> str:
    """A recipe value as ``recipes/train.py`` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def recipe_flags(config: str | None, fields: Mapping[str, Any]) -> list[str]:
    """``--config config --name value ...``: the command line of ``recipes/train.py`` for ``resolve_recipe(config,
    fields)``."""
    flags = ["--config", config] if config else []
    for name, value in fields.items():
        flags += [f"--{name}", format_value(value)]
    return flags
