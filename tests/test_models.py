"""build_model: which library, the head, the input size and normalisation, the small-image stem and ViT patch,
and failing fast (with a useful message) when the Hub is needed but out of reach."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import EfficientNetConfig, ResNetConfig, ViTConfig, ViTImageProcessor

from accel_recipes import hub_access
from accel_recipes.config import RecipeArguments
from accel_recipes.models import ModelError, build_model, logits_of, resolve_library

LABELS = [f"class_{index}" for index in range(10)]
DATASET_MEAN = (0.49, 0.48, 0.45)
DATASET_STD = (0.25, 0.24, 0.26)


def tiny_configs() -> dict:
    return {
        "vit": ViTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32
        ),  # patch_size: the default 16; from scratch at 32 px build_model makes it 4
        "resnet": ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
        "efficientnet": EfficientNetConfig(
            image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128
        ),  # hidden_dim must equal round_filters(1280) = 128 at width 0.1
    }


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Local folders holding only a transformers config.json, as users point at for training from scratch."""
    root = tmp_path_factory.mktemp("hf-configs")
    folders = {}
    for kind, config in tiny_configs().items():
        config.save_pretrained(root / kind)
        folders[kind] = root / kind
    return folders


def vit_folder(folder: Path) -> Path:
    tiny_configs()["vit"].save_pretrained(folder)
    return folder


def build(name: str, native_size: int = 32, labels: list[str] = LABELS, **fields):
    args = RecipeArguments(model_name_or_path=str(name), **fields)
    return build_model(args, labels, DATASET_MEAN, DATASET_STD, native_size)


def first_conv_and_pool(model: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    if hasattr(model, "resnet"):  # transformers ResNet
        embedder = model.resnet.embedder
        return embedder.embedder.convolution, embedder.pooler
    conv = model.conv1[0] if isinstance(model.conv1, nn.Sequential) else model.conv1  # timm, test_resnet: deep stem
    return conv, model.maxpool


# ---- resolve_library -------------------------------------------------------------------------------------------


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


# ---- build_model: heads, inputs, normalisation -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_efficientnet", "vit", "resnet", "efficientnet"])
def test_build_from_scratch_gives_the_head_the_dataset_stats_and_native_size(name, hf_folders):
    source = hf_folders.get(name, name)
    spec = build(source)
    logits = logits_of(spec.model(torch.randn(2, 3, 32, 32)))
    assert logits.shape == (2, len(LABELS))
    assert spec.library == ("timm" if name.startswith("test_") else "transformers")
    assert spec.input_size == 32
    assert spec.mean == DATASET_MEAN and spec.std == DATASET_STD
    assert spec.interpolation == "bilinear" and not spec.pretrained
    assert spec.num_parameters == sum(p.numel() for p in spec.model.parameters())
    assert spec.architecture in spec.describe() and "from scratch" in spec.describe()


@pytest.mark.parametrize("kind", ["vit", "resnet", "efficientnet"])
def test_transformers_models_carry_the_label_names(kind, hf_folders):
    spec = build(hf_folders[kind])
    config = spec.model.config
    assert config.num_labels == len(LABELS)
    assert config.id2label[3] == "class_3" and config.label2id["class_7"] == 7


def test_image_size_wins_over_the_native_size():
    spec = build("test_efficientnet", image_size=48)
    assert spec.input_size == 48
    assert logits_of(spec.model(torch.randn(1, 3, 48, 48))).shape == (1, len(LABELS))


# ---- the small-image stem ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "resnet"])
def test_resnets_from_scratch_at_32px_get_the_small_image_stem(name, hf_folders):
    spec = build(hf_folders.get(name, name))
    conv, pool = first_conv_and_pool(spec.model)
    assert spec.small_image_stem and "small-image stem" in spec.describe()
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.bias is None
    assert isinstance(pool, nn.Identity)
    features = spec.model.forward_features if hasattr(spec.model, "forward_features") else None
    if features is not None:  # timm: a 32 px image keeps 4x4 of its resolution at the end, not 1x1
        assert features(torch.randn(1, 3, 32, 32)).shape[-1] == 4


@pytest.mark.parametrize("name", ["test_resnet", "resnet"])
@pytest.mark.parametrize("case", [{"small_image_stem": "false"}, {"native_size": 224}])
def test_resnets_keep_their_stem_when_told_or_at_imagenet_size(name, case, hf_folders):
    spec = build(hf_folders.get(name, name), **case)
    conv, pool = first_conv_and_pool(spec.model)
    assert not spec.small_image_stem
    assert conv.stride == (2, 2) and isinstance(pool, nn.MaxPool2d)


def test_forcing_the_stem_at_224px():
    spec = build("test_resnet", native_size=224, small_image_stem="true")
    conv, pool = first_conv_and_pool(spec.model)
    assert spec.small_image_stem and conv.stride == (1, 1) and isinstance(pool, nn.Identity)


@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet", "vit"])
def test_forcing_the_stem_on_a_non_resnet_is_an_error(name, hf_folders):
    with pytest.raises(ModelError, match="small_image_stem true is for ResNets"):
        build(hf_folders.get(name, name), small_image_stem="true")


# ---- ViT patch size ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_vit", "vit"])
def test_vits_from_scratch_use_small_patches_on_small_images(name, hf_folders):
    source = hf_folders.get(name, name)
    at_32 = build(source)
    assert at_32.patch_size == 4 and "patch 4" in at_32.describe()
    at_64 = build(source, native_size=64)
    assert at_64.patch_size == 8
    assert logits_of(at_64.model(torch.randn(1, 3, 64, 64))).shape == (1, len(LABELS))
    explicit = build(source, patch_size=2)
    assert explicit.patch_size == 2


def test_timm_vit_grid_follows_input_and_patch():
    spec = build("test_vit")
    assert spec.model.patch_embed.grid_size == (8, 8)  # 32 px / patch 4


def test_patch_size_errors_name_the_problem():
    with pytest.raises(ModelError, match="patch_size is for ViTs"):
        build("test_resnet", patch_size=4)
    with pytest.raises(ModelError, match="not a multiple of patch_size 5"):
        build("test_vit", patch_size=5)


# ---- pretrained: the Hub out of reach, and the cache ------------------------------------------------------------


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


def fake_hub_cache(cache_dir: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in a Hub cache laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


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


def test_pretrained_transformers_vit_at_another_size_resizes_its_position_embeddings(tmp_path):
    source = build(vit_folder(tmp_path / "src"), labels=["a", "b"]).model.eval()
    source.save_pretrained(tmp_path / "trained")

    spec = build(tmp_path / "trained", pretrained=True, image_size=64)
    model = spec.model.eval()
    assert spec.input_size == 64 and model.config.image_size == 64
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source.vit(images, interpolate_pos_encoding=True).last_hidden_state
        assert torch.allclose(model.vit(images).last_hidden_state, expected, atol=1e-5)
        assert logits_of(model(images)).shape == (2, len(LABELS))


def test_pretrained_patch_size_cannot_change_in_transformers(tmp_path):
    folder = vit_folder(tmp_path / "vit")
    build(folder).model.save_pretrained(folder)
    with pytest.raises(ModelError, match="patch_size 8 differs from the patch size 4"):
        build(folder, pretrained=True, patch_size=8)


def test_logits_of_accepts_tensors_and_model_outputs():
    logits = torch.randn(2, 3)

    class Output:
        pass

    output = Output()
    output.logits = logits
    assert logits_of(logits) is logits and logits_of(output) is logits
    with pytest.raises(TypeError, match="neither a Tensor"):
        logits_of({"scores": logits})


def test_drop_path_rate_reaches_the_backbone(hf_folders):
    spec = build("test_vit", drop_path_rate=0.1)
    assert spec.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # rates rise linearly to it
    assert build(hf_folders["efficientnet"], drop_path_rate=0.1).model.config.drop_connect_rate == pytest.approx(0.1)


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


def test_trust_remote_code_is_passed_through(tmp_path):
    auto_map = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForImageClassification": "modeling_tiny.Tiny"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "tiny-custom", "auto_map": auto_map}))
    (tmp_path / "configuration_tiny.py").write_text("raise RuntimeError('the remote code ran')\n")
    with pytest.raises(ModelError, match="trust_remote_code"):
        build(tmp_path)
    with pytest.raises(RuntimeError, match="the remote code ran"):
        build(tmp_path, trust_remote_code=True)
