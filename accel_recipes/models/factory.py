"""``build_model``: the backbone a ``ModelArguments`` names, built by the library that knows it."""

from __future__ import annotations

from collections.abc import Sequence

from accel_recipes.config import ModelArguments
from accel_recipes.errors import ConfigError, ModelError
from accel_recipes.models.resolve import resolve_library
from accel_recipes.models.spec import ModelSpec
from accel_recipes.models.timm_backbone import build_timm
from accel_recipes.models.transformers_backbone import build_transformers


def build_model(
    model_args: ModelArguments,
    label_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    native_size: int,
) -> ModelSpec:
    """The backbone ``model_args`` names, its head sized to ``label_names``, with the input and normalisation it
    needs. ``mean``, ``std`` (the dataset's) and ``native_size`` (its image side) apply when training from
    scratch; pretrained weights bring their own."""
    if not label_names:
        raise ModelError("the dataset has no labels; a classifier needs at least one label name")
    if model_args.image_size is not None and model_args.image_size < 1:
        raise ModelError(f"image_size must be positive, got {model_args.image_size}")
    library = resolve_library(model_args.model_name_or_path, model_args.model_library)
    if model_args.aa_layer is not None and library != "timm":
        raise ConfigError(
            f"aa_layer {model_args.aa_layer} is for the timm ResNets, but '{model_args.model_name_or_path}' is a "
            "transformers backbone; pick a timm ResNet (resnet50) or remove aa_layer"
        )
    build = build_timm if library == "timm" else build_transformers
    return build(model_args, list(label_names), mean, std, native_size)
