"""Tiny models and a fake Hub cache shared by the tests of ``accel_recipes.models``: every build runs in
milliseconds on a CPU, and none needs the network."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import EfficientNetConfig, ResNetConfig, ViTConfig

from accel_recipes.config import make_args
from accel_recipes.models import ModelSpec, build_model

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


def vit_folder(folder: Path) -> Path:
    tiny_configs()["vit"].save_pretrained(folder)
    return folder


def build(name: str | Path, native_size: int = 32, labels: list[str] = LABELS, **fields) -> ModelSpec:
    """build_model on the model group of a recipe naming ``name`` with ``fields`` (flat recipe keys)."""
    model_args = make_args({"model_name_or_path": str(name), **fields}).model
    return build_model(model_args, labels, DATASET_MEAN, DATASET_STD, native_size)


def first_conv_and_pool(model: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    if hasattr(model, "resnet"):  # transformers ResNet
        embedder = model.resnet.embedder
        return embedder.embedder.convolution, embedder.pooler
    conv = model.conv1[0] if isinstance(model.conv1, nn.Sequential) else model.conv1  # timm, test_resnet: deep stem
    return conv, model.maxpool


def fake_hub_cache(cache_dir: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in a Hub cache laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot
