"""Which library builds a model name: a local folder by the config.json it holds, timm's Hub prefixes and
registry names as timm, other 'namespace/name' Hub ids as transformers. Also the shape tests on names that tell
a path from a Hub id, so a mistyped path fails with "does not exist" rather than as a Hub lookup."""

from __future__ import annotations

import difflib
from pathlib import Path

from accel_recipes.errors import ModelError
from accel_recipes.models.folder import folder_library

LIBRARIES = ("timm", "transformers")


def _strip_local_prefix(name: str) -> str:
    return name[len("local-dir:") :] if name.startswith("local-dir:") else name


def local_folder(name: str) -> Path | None:
    """The folder ``name`` points at (a plain path or timm's ``local-dir:`` form), else None."""
    path = Path(_strip_local_prefix(name)).expanduser()
    return path if path.is_dir() else None


def looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a path (absolute, relative, home, ``local-dir:``, nested or Windows): model
    names are 'name' and Hub ids 'namespace/name'."""
    return name.startswith(("/", ".", "~", "local-dir:")) or name.count("/") > 1 or "\\" in name


def is_hub_repo_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hub repository id, 'namespace/name', rather than of a path or a data
    file (``predict`` downloads only such names; anything else must be an existing folder)."""
    if name.count("/") != 1 or "\\" in name or name.startswith(("/", ".", "~")):
        return False
    return not name.endswith(".parquet")  # a dataset file given where a model belongs


def unknown_model_error(name: str) -> ModelError:
    """The error for a name no library knows, suggesting the closest timm names."""
    import timm

    base = name.split("/")[-1].split(".")[0]
    matches = difflib.get_close_matches(base.lower(), timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(m) for m in matches)}? " if matches else ""
    return ModelError(
        f"unknown model '{name}': not a timm architecture and not a local folder; {hint}"
        "use a timm name (timm.list_models()), a Hub id such as 'org/name', or a folder holding a config.json"
    )


def resolve_library(name: str, requested: str) -> str:
    """Which library builds ``name``: 'timm' or 'transformers'. ``requested`` is 'auto', 'timm' or 'transformers'."""
    if requested in LIBRARIES:
        return requested
    if requested != "auto":
        raise ModelError(f"model_library must be 'auto', 'timm' or 'transformers', got {requested!r}")
    folder = local_folder(name)
    if folder is not None:
        return folder_library(folder)
    if name.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return "timm"
    if looks_like_path(name):
        raise ModelError(f"model folder '{name}' does not exist; check the path, or give a model name or Hub id")
    if "/" in name:
        return "transformers"
    import timm

    if timm.is_model(name):
        return "timm"
    raise unknown_model_error(name)
