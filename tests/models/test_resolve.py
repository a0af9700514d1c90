"""resolve: which library builds a name, and the shape tests that tell a path from a Hub id."""

from __future__ import annotations

import json

import pytest
from tiny_models import build

from accel_recipes.models import ModelError, resolve_library
from accel_recipes.models.resolve import is_hub_repo_id, local_folder, looks_like_path


@pytest.mark.parametrize(
    ("name", "library"),
    [
        ("resnet50", "timm"),
        ("efficientnet_b0", "timm"),
        ("vit_base_patch16_224", "timm"),
        ("test_resnet", "timm"),
        ("resnet50.a1_in1k", "timm"),
        ("timm/vit_base_patch16_224.augreg_in21k", "timm"),
        ("hf-hub:timm/resnet50.a1_in1k", "timm"),
        ("google/vit-base-patch16-224-in21k", "transformers"),
        ("microsoft/resnet-50", "transformers"),
    ],
)
def test_resolve_library_from_the_name(name, library):
    assert resolve_library(name, "auto") == library


def test_resolve_library_an_explicit_choice_wins():
    assert resolve_library("resnet50", "transformers") == "transformers"
    assert resolve_library("google/vit-base-patch16-224", "timm") == "timm"


def test_resolve_library_local_folders_by_their_config(tmp_path, hf_folders):
    timm_folder = tmp_path / "timm-model"
    timm_folder.mkdir()
    (timm_folder / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 3}))
    assert resolve_library(str(timm_folder), "auto") == "timm"
    assert resolve_library(f"local-dir:{timm_folder}", "auto") == "timm"
    for folder in hf_folders.values():
        assert resolve_library(str(folder), "auto") == "transformers"


def test_resolve_library_rejects_folders_it_cannot_read(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_library(str(tmp_path), "auto")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelError, match="model_library"):
        resolve_library(str(tmp_path), "auto")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_library(str(tmp_path / "missing"), "auto")
    with pytest.raises(ModelError, match="model_library must be"):
        resolve_library("resnet50", "keras")


def test_unknown_name_suggests_close_timm_names():
    with pytest.raises(ModelError, match="did you mean 'resnet50'"):
        resolve_library("resnet-50", "auto")
    with pytest.raises(ModelError, match="unknown model 'resnt18'.*'resnet18'"):
        build("resnt18")


def test_a_library_that_does_not_match_the_folder_is_an_error(hf_folders, tmp_path):
    with pytest.raises(ModelError, match="set model_library transformers"):
        build(hf_folders["vit"], model_library="timm")
    spec = build("test_vit")
    timm_folder = tmp_path / "timm-vit"
    timm_folder.mkdir()
    (timm_folder / "config.json").write_text(json.dumps({"architecture": "test_vit", "num_classes": 10}))
    with pytest.raises(ModelError, match="set model_library timm"):
        build(timm_folder, model_library="transformers")
    assert spec.library == "timm"


def test_local_folder_accepts_plain_paths_and_timms_local_dir_form(tmp_path):
    assert local_folder(str(tmp_path)) == tmp_path
    assert local_folder(f"local-dir:{tmp_path}") == tmp_path
    assert local_folder(str(tmp_path / "missing")) is None
    assert local_folder("resnet50") is None


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("/abs/model", True),
        ("./model", True),
        ("~/model", True),
        ("local-dir:models/x", True),
        ("runs/x/model", True),
        ("runs\\model", True),
        ("resnet50", False),
        ("google/vit-base-patch16-224", False),
    ],
)
def test_looks_like_path(name, path):
    assert looks_like_path(name) is path


@pytest.mark.parametrize(
    ("name", "hub_id"),
    [
        ("me/cifar10-vit", True),
        ("google/vit-base-patch16-224", True),
        ("resnet50", False),
        ("runs/x/model", False),
        ("/me/model", False),
        ("./me", False),
        ("~/me", False),
        ("me\\model", False),
        ("me/train.parquet", False),
    ],
)
def test_is_hub_repo_id(name, hub_id):
    assert is_hub_repo_id(name) is hub_id
