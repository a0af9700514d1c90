"""Fixtures of the ``accel_recipes.models`` tests; the helpers they share are in ``tiny_models.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import tiny_configs


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Local folders holding only a transformers config.json, as users point at for training from scratch."""
    root = tmp_path_factory.mktemp("hf-configs")
    folders = {}
    for kind, config in tiny_configs().items():
        config.save_pretrained(root / kind)
        folders[kind] = root / kind
    return folders
