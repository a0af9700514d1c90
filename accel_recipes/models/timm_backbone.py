"""The timm builder: a registry name, a Hub repo (``hf-hub:``/``timm/``) or a local timm folder, built with
``timm.create_model``, its head sized to the labels.

Pretrained weights are fetched first through ``hub_fetch`` (fail fast offline, the cache otherwise) and handed
to timm as a ``pretrained_cfg_overlay`` file, so timm itself never waits on the network. A folder exported with
the small-image stem is built, given the stem, and loaded here: timm's loader cannot express the stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_recipes.config import ModelArguments
from accel_recipes.errors import ModelError
from accel_recipes.hub_access import hub_unreachable_reason
from accel_recipes.models.anti_alias import anti_aliased_architecture, check_input_size
from accel_recipes.models.folder import (
    check_weight_files,
    folder_library,
    load_backbone_weights,
    read_folder_config,
    read_folder_weights,
    recorded_small_stem,
)
from accel_recipes.models.hub_fetch import hub_file, unreachable_error
from accel_recipes.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, interpolation_name, three_channels
from accel_recipes.models.resolve import local_folder, unknown_model_error
from accel_recipes.models.spec import ModelSpec, count_parameters
from accel_recipes.models.surgery import apply_small_image_stem, patch_for, refuse_stem_off, resolve_stem

TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_VIT_MODULES = ("vision_transformer", "deit")  # timm modules whose models take img_size and patch_size


@dataclass
class _TimmSource:
    create_name: str  # what timm.create_model is given
    architecture: str
    pretrained_cfg: dict[str, Any]
    folder: Path | None  # a local folder (or the cached Hub snapshot) holding config.json
    recorded_stem: bool  # the folder was exported with the small-image stem
    weights_overlay: dict[str, Any] | None  # pretrained_cfg_overlay pointing timm at already-fetched weights


def _timm_hub_repo(name: str) -> str | None:
    import timm

    for prefix in ("hf-hub:", "hf_hub:"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    if name.startswith("timm/") and timm.is_model(name[len("timm/") :]):
        return None  # a registry name: its pretrained cfg knows the repo
    return name if "/" in name else None


def _timm_registry_weights(name: str, cfg: dict[str, Any], cache_dir: str | None) -> dict[str, Any] | None:
    hub_id = cfg.get("hf_hub_id")
    if hub_id and not cfg.get("custom_load"):
        filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else TIMM_WEIGHT_FILES
        return {"file": hub_file(hub_id, filenames, cache_dir, name, "the pretrained weights")}
    if hub_id or cfg.get("url"):
        reason = hub_unreachable_reason(None if hub_id else cfg["url"])
        if reason is not None:
            raise unreachable_error(name, "the pretrained weights", reason)
        return None  # timm downloads them itself
    raise ModelError(
        f"timm has no pretrained weights for '{name}'; set pretrained false, or pick a tag from "
        f"timm.list_pretrained('{cfg.get('architecture', name)}*')"
    )


def _timm_source(name: str, pretrained: bool, cache_dir: str | None) -> _TimmSource:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    folder = local_folder(name)
    if folder is None:
        repo = _timm_hub_repo(name)
        if repo is not None:
            config_file = hub_file(repo, ("config.json",), cache_dir, name, "the timm config")
            if pretrained:
                hub_file(repo, TIMM_WEIGHT_FILES, cache_dir, name, "the pretrained weights")
            folder = Path(config_file).parent  # the cached snapshot is a timm folder like any other
    if folder is not None:
        config = read_folder_config(folder)
        if folder_library(folder, config) != "timm":
            raise ModelError(f"'{name}' holds a transformers config, not a timm one; set model_library transformers")
        pretrained_cfg = dict(config.get("pretrained_cfg", config))
        recorded = recorded_small_stem(config)
        return _TimmSource(f"local-dir:{folder}", config["architecture"], pretrained_cfg, folder, recorded, None)

    registry_name = name[len("timm/") :] if name.startswith("timm/") else name
    if not timm.is_model(registry_name):
        raise unknown_model_error(name)
    try:
        cfg_object = get_pretrained_cfg(registry_name)
    except RuntimeError as error:
        raise ModelError(f"'{name}': {error}; see timm.list_pretrained() for the valid tags") from None
    cfg = cfg_object.to_dict() if cfg_object is not None else {}
    overlay = _timm_registry_weights(name, cfg, cache_dir) if pretrained else None
    architecture = split_model_name_tag(registry_name)[0]
    return _TimmSource(registry_name, architecture, cfg, None, False, overlay)


def _is_timm_vit(architecture: str) -> bool:
    from timm.models import model_entrypoint

    try:
        module = model_entrypoint(architecture).__module__
    except RuntimeError:
        return False
    return module.rsplit(".", 1)[-1] in TIMM_VIT_MODULES


def build_timm(
    model_args: ModelArguments,
    label_names: list[str],
    dataset_mean: Sequence[float],
    dataset_std: Sequence[float],
    native_size: int,
) -> ModelSpec:
    """``model_args``' timm model with a head for ``label_names``, sized and normalised for its data."""
    import timm

    name = model_args.model_name_or_path
    # with aa_layer no weights are fetched: pretrained is refused below, before anything is built
    source = _timm_source(name, model_args.pretrained and model_args.aa_layer is None, model_args.cache_dir)
    if model_args.aa_layer is not None:
        architecture = anti_aliased_architecture(
            source.architecture, model_args.aa_layer, model_args.pretrained, source.folder is not None
        )
        source.create_name = source.architecture = architecture
    cfg = source.pretrained_cfg
    pretrained_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    input_size = model_args.image_size or (pretrained_size if model_args.pretrained else native_size)

    kwargs: dict[str, Any] = {"num_classes": len(label_names)}
    if model_args.drop_path_rate:
        kwargs["drop_path_rate"] = model_args.drop_path_rate
    vit = _is_timm_vit(source.architecture)
    if vit or cfg.get("fixed_input_size", False):
        kwargs["img_size"] = input_size
    if vit:
        patch_size = patch_for(model_args, input_size)
        if patch_size:
            kwargs["patch_size"] = patch_size
    elif model_args.patch_size:
        raise ModelError(f"patch_size is for ViTs, but '{name}' is a {source.architecture}; remove patch_size")

    load_in_timm = model_args.pretrained and not source.recorded_stem
    if model_args.pretrained and source.folder is not None:
        check_weight_files(source.folder)  # a damaged file named, not timm's traceback
    try:
        model = timm.create_model(
            source.create_name,
            pretrained=load_in_timm,
            pretrained_cfg_overlay=source.weights_overlay if load_in_timm else None,
            cache_dir=model_args.cache_dir,
            **kwargs,
        )
    except (RuntimeError, ValueError, TypeError, AssertionError, KeyError) as error:
        raise ModelError(f"timm cannot build '{name}' with {kwargs}: {error}") from None

    if source.recorded_stem and model_args.pretrained:
        # timm's loader cannot express the small-image stem: build it, then load the folder's weights
        refuse_stem_off(model_args)
        apply_small_image_stem(model)
        classifier = model.pretrained_cfg.get("classifier") or "fc"
        head = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        load_backbone_weights(model, read_folder_weights(source.folder), head, name)
        stem = True
    else:
        stem = resolve_stem(model_args.effective_small_image_stem, model, name, model_args.pretrained, input_size)
        if stem:
            apply_small_image_stem(model)

    if model_args.aa_layer is not None:
        check_input_size(model, source.architecture, model_args.aa_layer, input_size)
    if model_args.pretrained:
        model_cfg = model.pretrained_cfg
        mean = three_channels(model_cfg.get("mean", IMAGENET_MEAN), "mean", name)
        std = three_channels(model_cfg.get("std", IMAGENET_STD), "std", name)
        interpolation = interpolation_name(model_cfg.get("interpolation", "bicubic"))
    else:
        mean = three_channels(dataset_mean, "dataset mean", name)
        std = three_channels(dataset_std, "dataset std", name)
        interpolation = "bilinear"
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None) if vit else None
    return ModelSpec(
        model=model,
        library="timm",
        name=name,
        architecture=source.architecture,
        input_size=input_size,
        mean=mean,
        std=std,
        interpolation=interpolation,
        pretrained=model_args.pretrained,
        small_image_stem=stem,
        patch_size=int(patch[0] if isinstance(patch, (tuple, list)) else patch) if patch else None,
        num_parameters=count_parameters(model),
    )
