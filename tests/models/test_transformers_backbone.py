"""transformers_backbone: the label names in the config, the drop-path rate, a pretrained patch size that
cannot change, and trust_remote_code."""

from __future__ import annotations

import json

import pytest
from tiny_models import LABELS, build, vit_folder

from accel_recipes.models import ModelError


@pytest.mark.parametrize("kind", ["vit", "resnet", "efficientnet"])
def test_transformers_models_carry_the_label_names(kind, hf_folders):
    spec = build(hf_folders[kind])
    config = spec.model.config
    assert config.num_labels == len(LABELS)
    assert config.id2label[3] == "class_3" and config.label2id["class_7"] == 7


def test_drop_path_rate_reaches_the_backbone(hf_folders):
    assert build(hf_folders["efficientnet"], drop_path_rate=0.1).model.config.drop_connect_rate == pytest.approx(0.1)


def test_pretrained_patch_size_cannot_change_in_transformers(tmp_path):
    folder = vit_folder(tmp_path / "vit")
    build(folder).model.save_pretrained(folder)
    with pytest.raises(ModelError, match="patch_size 8 differs from the patch size 4"):
        build(folder, pretrained=True, patch_size=8)


def test_trust_remote_code_is_passed_through(tmp_path):
    auto_map = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForImageClassification": "modeling_tiny.Tiny"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "tiny-custom", "auto_map": auto_map}))
    (tmp_path / "configuration_tiny.py").write_text("raise RuntimeError('the remote code ran')\n")
    with pytest.raises(ModelError, match="trust_remote_code"):
        build(tmp_path)
    with pytest.raises(RuntimeError, match="the remote code ran"):
        build(tmp_path, trust_remote_code=True)
