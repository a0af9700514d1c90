"""hub_fetch: with the Hub out of reach, a build fails fast with a useful message, and a cached checkpoint
still loads."""

from __future__ import annotations

import time

import datasets
import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file
from tiny_models import LABELS, build, fake_hub_cache, vit_folder
from transformers import ViTImageProcessor

from accel_recipes import hub_access
from accel_recipes.models import ModelError


@pytest.mark.parametrize("name", ["google/vit-base-patch16-224", "test_resnet", "timm/resnet18.a1_in1k"])
def test_pretrained_without_the_hub_fails_fast_and_says_what_to_do(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError) as error:
        build(name, pretrained=True, cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert f"'{name}'" in message and "unreachable" in message and "HF_HUB_OFFLINE" in message
    assert "local folder" in message and "pretrained false" in message


def test_no_network_is_found_in_seconds_without_offline_mode(monkeypatch, tmp_path):
    offline_flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    for variable in (*offline_flags, "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read when imported: CI may set it

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(hub_access.socket, "create_connection", no_network)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(ModelError, match="unreachable .no network connection to huggingface.co:443"):
        build("google/vit-base-patch16-224", pretrained=True, cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 5


def test_a_hub_config_needed_from_scratch_also_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot get the config of 'google/vit-base-patch16-224'"):
        build("google/vit-base-patch16-224", cache_dir=str(tmp_path))


def test_pretrained_timm_weights_in_the_cache_load_offline(monkeypatch, tmp_path):
    source = timm.create_model("test_resnet")
    snapshot = fake_hub_cache(tmp_path, "timm/test_resnet.r160_in1k")
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    spec = build("test_resnet", pretrained=True, cache_dir=str(tmp_path))
    assert spec.pretrained and not spec.small_image_stem  # auto: no stem for pretrained weights
    assert spec.input_size == 160 and spec.mean == (0.5, 0.5, 0.5) and spec.interpolation == "bilinear"
    assert torch.equal(spec.model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert spec.model.fc.out_features == len(LABELS)
    assert "pretrained" in spec.describe()


def test_pretrained_transformers_checkpoint_in_the_cache_loads_offline(monkeypatch, tmp_path):
    snapshot = fake_hub_cache(tmp_path, "someone/tiny-vit")
    source = build(vit_folder(tmp_path / "src"), labels=["a", "b"]).model
    source.save_pretrained(snapshot)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        snapshot
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    spec = build("someone/tiny-vit", pretrained=True, cache_dir=str(tmp_path))
    assert spec.mean == (0.5, 0.5, 0.5) and spec.input_size == 32
    assert spec.model.config.id2label[9] == "class_9"
    backbone = spec.model.vit.embeddings.patch_embeddings.projection.weight
    assert torch.equal(backbone, source.vit.embeddings.patch_embeddings.projection.weight)
