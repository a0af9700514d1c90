"""timm_backbone: timm's ViT grid follows the input and patch, and the drop-path rate reaches timm's blocks."""

from __future__ import annotations

import pytest
from tiny_models import build


def test_timm_vit_grid_follows_input_and_patch():
    spec = build("test_vit")
    assert spec.model.patch_embed.grid_size == (8, 8)  # 32 px / patch 4


def test_drop_path_rate_reaches_the_backbone():
    spec = build("test_vit", drop_path_rate=0.1)
    assert spec.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # rates rise linearly to it
