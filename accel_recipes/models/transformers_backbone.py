"""The transformers builder: a Hub checkpoint or a local transformers folder, built with
``AutoModelForImageClassification``, its head sized to the labels (``id2label``).

Pretrained, the checkpoint's image processor says the mean, std, interpolation and size it was trained with
(ImageNet statistics without one), and a ViT asked for another ``image_size`` gets its position embeddings
resized (``surgery``). From scratch, the config's image size (and, for ViTs, patch size) follows the data. A
folder exported with the small-image stem is built from its config, given the stem, and loaded here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from accel_recipes.config import ModelArguments
from accel_recipes.errors import ModelError
from accel_recipes.models.folder import (
    check_weight_files,
    folder_library,
    load_backbone_weights,
    read_folder_config,
    read_folder_weights,
    recorded_small_stem,
)
from accel_recipes.models.hub_fetch import call_hub, transformers_local_only
from accel_recipes.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, interpolation_name, three_channels
from accel_recipes.models.resolve import local_folder
from accel_recipes.models.spec import ModelSpec, count_parameters
from accel_recipes.models.surgery import (
    apply_small_image_stem,
    config_size,
    patch_for,
    refuse_stem_off,
    resize_position_embeddings,
    resolve_stem,
)

TRANSFORMERS_VIT_TYPES = ("vit", "deit", "vit_msn", "dinov2", "beit", "data2vec-vision")  # config.patch_size is a ViT's

logger = logging.getLogger(__name__)


def _processor_size(processor: Any) -> int | None:
    """The side an image processor resizes (or center-crops) to; its sizes are dicts or SizeDicts."""
    sizes = [getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None]
    sizes.append(getattr(processor, "size", None))
    for size in sizes:
        if isinstance(size, int):
            return size
        for key in ("height", "shortest_edge", "width"):
            value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
            if value:
                return int(value)
    return None


def _pretrained_preprocessing(source: str, common: dict[str, Any]) -> tuple[tuple, tuple, str, int | None]:
    """mean, std, interpolation and size from the checkpoint's image processor; ImageNet stats without one."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(source, **common)
    except (OSError, ValueError, KeyError, ImportError):
        return IMAGENET_MEAN, IMAGENET_STD, "bilinear", None
    mean = getattr(processor, "image_mean", None) or IMAGENET_MEAN
    std = getattr(processor, "image_std", None) or IMAGENET_STD
    return (
        tuple(mean),
        tuple(std),
        interpolation_name(getattr(processor, "resample", "bilinear")),
        _processor_size(processor),
    )


def _transformers_config(
    model_args: ModelArguments, source: str, common: dict[str, Any], label_names: list[str]
) -> Any:
    """The checkpoint's config with our labels (num_labels follows from id2label) and drop-path rate."""
    from transformers import AutoConfig

    labels = {
        "id2label": dict(enumerate(label_names)),
        "label2id": {label: index for index, label in enumerate(label_names)},
    }
    config = call_hub(
        model_args.model_name_or_path,
        "the config",
        lambda: AutoConfig.from_pretrained(source, **common, **labels),
    )
    if model_args.drop_path_rate:
        keys = [key for key in ("drop_path_rate", "drop_connect_rate") if hasattr(config, key)]
        if not keys:
            logger.warning("%s has no stochastic depth; drop_path_rate is ignored", type(config).__name__)
        for key in keys:
            setattr(config, key, model_args.drop_path_rate)
    return config


def _pretrained_transformers(
    model_args: ModelArguments, source: str, common: dict[str, Any], config: Any, config_patch: int | None
) -> tuple[nn.Module, int, tuple, tuple, str]:
    """The checkpoint's weights (a new head), and the input size, mean, std and interpolation it was trained with."""
    from transformers import AutoModelForImageClassification

    name = model_args.model_name_or_path
    mean, std, interpolation, processor_size = _pretrained_preprocessing(source, common)
    input_size = model_args.image_size or config_size(config, "image_size") or processor_size or 224
    if model_args.patch_size and model_args.patch_size != config_patch:
        raise ModelError(
            f"patch_size {model_args.patch_size} differs from the patch size {config_patch} of the pretrained "
            f"'{name}'; remove patch_size, or set pretrained false"
        )
    folder = local_folder(name)
    if folder is not None:
        check_weight_files(folder)  # a damaged file named, not transformers' traceback
    if folder is not None and recorded_small_stem(read_folder_config(folder)):
        # transformers cannot express the small-image stem: build it, then load the folder's weights
        refuse_stem_off(model_args)
        model = AutoModelForImageClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)
        apply_small_image_stem(model)
        load_backbone_weights(model, read_folder_weights(folder), ("classifier",), name)
    else:
        model = call_hub(
            name,
            "the pretrained weights",
            lambda: AutoModelForImageClassification.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True, **common
            ),
        )
    resize_position_embeddings(model, input_size, name)
    return model, input_size, mean, std, interpolation


def _scratch_transformers(
    model_args: ModelArguments, config: Any, config_patch: int | None, input_size: int
) -> nn.Module:
    from transformers import AutoModelForImageClassification

    if hasattr(config, "image_size"):
        config.image_size = input_size
    if config_patch is not None:
        config.patch_size = patch_for(model_args, input_size) or config_patch
    elif model_args.patch_size:
        raise ModelError(
            f"patch_size is for ViTs, but '{model_args.model_name_or_path}' is a {config.model_type} model; "
            "remove patch_size"
        )
    return AutoModelForImageClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)


def build_transformers(
    model_args: ModelArguments,
    label_names: list[str],
    dataset_mean: Sequence[float],
    dataset_std: Sequence[float],
    native_size: int,
) -> ModelSpec:
    """``model_args``' transformers model with a head for ``label_names``, sized and normalised for its data."""
    name = model_args.model_name_or_path
    folder = local_folder(name)
    if folder is not None and folder_library(folder) != "transformers":
        raise ModelError(f"'{name}' holds a timm config, not a transformers one; set model_library timm")
    source = str(folder) if folder is not None else name
    what = "the pretrained weights" if model_args.pretrained else "the config"
    local_only = False if folder is not None else transformers_local_only(name, model_args.cache_dir, what)
    common = {
        "cache_dir": model_args.cache_dir,
        "trust_remote_code": model_args.trust_remote_code,
        "local_files_only": local_only,
    }
    config = _transformers_config(model_args, source, common, label_names)
    config_patch = config_size(config, "patch_size") if config.model_type in TRANSFORMERS_VIT_TYPES else None

    if model_args.pretrained:
        model, input_size, mean, std, interpolation = _pretrained_transformers(
            model_args, source, common, config, config_patch
        )
        recorded_stem = folder is not None and recorded_small_stem(read_folder_config(folder))
    else:
        input_size = model_args.image_size or native_size
        model = _scratch_transformers(model_args, config, config_patch, input_size)
        mean, std, interpolation, recorded_stem = dataset_mean, dataset_std, "bilinear", False
    requested_stem = model_args.effective_small_image_stem
    stem = recorded_stem or resolve_stem(requested_stem, model, name, model_args.pretrained, input_size)
    if stem and not recorded_stem:
        apply_small_image_stem(model)
    return ModelSpec(
        model=model,
        library="transformers",
        name=name,
        architecture=type(model).__name__,
        input_size=input_size,
        mean=three_channels(mean, "mean", name),
        std=three_channels(std, "std", name),
        interpolation=interpolation,
        pretrained=model_args.pretrained,
        small_image_stem=stem,
        patch_size=config_size(model.config, "patch_size") if config_patch is not None else None,
        num_parameters=count_parameters(model),
    )
