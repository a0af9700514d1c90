"""The trained model as a folder other tools load: timm's Hub layout, or transformers' ``save_pretrained`` one.

timm folders hold ``config.json`` (architecture, num_classes, label_names, pretrained_cfg with the input size,
mean, std and interpolation used in training, model_args) and ``model.safetensors``:
``timm.create_model("local-dir:<folder>", pretrained=True)`` rebuilds the model. transformers folders hold the
model, its id2label, and a ``ViTImageProcessor`` (works for every backbone: a plain resize + normalise) so that
``pipeline("image-classification", model=folder)`` works offline. Weights are safetensors only, never pickles.

Both kinds also get an ``"accel_recipes"`` block in config.json: library, architecture, label names, the
preprocessing (input_size, mean, std, interpolation) and whether the ResNet has the small-image stem.

Limitation: neither timm's ``model_args`` nor a transformers ``ResNetConfig`` can express the small-image stem
(3x3 stride-1 first conv, no max-pool). ``load_model_folder`` (and ``build_model`` on the folder) rebuild it from
the block, but timm's and transformers' own loaders do not: they fail on the conv shape (a 7x7 stem) or, for a
timm 'deep' stem whose first conv stays 3x3, silently build the strided stem. Load such folders with
``load_model_folder``.

The folder is written into a temporary sibling and renamed into place, so ``path`` never holds a half-written
model; an existing model folder there is replaced.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from accel_recipes.models import (
    RECIPE_KEY,
    ModelError,
    ModelSpec,
    apply_small_image_stem,
    folder_library,
    read_folder_config,
    read_folder_weights,
    recorded_small_stem,
)


class ExportError(ModelError):
    """A model folder that cannot be written or read; the message names the path and what to do."""


def save_model_folder(spec: ModelSpec, model: nn.Module, path: str | Path, label_names: list[str]) -> Path:
    """Write ``model`` (the trained, unwrapped module built as ``spec`` says) as a loadable folder at ``path``."""
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        if spec.library == "timm":
            _write_timm(spec, model, staging, list(label_names))
        elif spec.library == "transformers":
            _write_transformers(spec, model, staging, list(label_names))
        else:
            raise ExportError(f"cannot export a model of library {spec.library!r}; expected 'timm' or 'transformers'")
        _swap_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def load_model_folder(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a folder written by ``save_model_folder`` (or by timm / transformers), in eval mode, and
    ``info``: library, architecture, input_size, mean, std, interpolation, label_names, small_image_stem."""
    folder = Path(path)
    if not folder.is_dir():
        raise ExportError(f"model folder '{folder}' does not exist; pass the folder save_model_folder wrote")
    config = read_folder_config(folder)
    load = _load_timm if folder_library(folder, config) == "timm" else _load_transformers
    try:
        model, info = load(folder, config)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, ModelError):
            raise
        raise ExportError(f"cannot load the model folder '{folder}': {error}; export it again") from None
    return model.eval(), info


# ---- writing ---------------------------------------------------------------------------------------------------


def _check_replaceable(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise ExportError(f"'{path}' exists and is not a folder; remove it or export to another path")
    if any(path.iterdir()) and not (path / "config.json").is_file():
        raise ExportError(
            f"'{path}' is a non-empty folder without config.json, not a model folder; refusing to replace it: "
            "export to another path or empty it"
        )


def _swap_into_place(staging: Path, path: Path) -> None:
    """Rename the finished ``staging`` folder to ``path``; an old folder there is moved aside, then deleted."""
    if not path.exists():
        staging.rename(path)
        return
    backup = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    path.rename(backup)
    try:
        staging.rename(path)
    except BaseException:
        backup.rename(path)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _recipe_block(spec: ModelSpec, label_names: list[str]) -> dict[str, Any]:
    return {
        "library": spec.library,
        "architecture": spec.architecture,
        "small_image_stem": spec.small_image_stem,
        "label_names": label_names,
        "preprocessing": {
            "input_size": spec.input_size,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "interpolation": spec.interpolation,
        },
    }


def _update_json(file: Path, updates: dict[str, Any]) -> None:
    data = json.loads(file.read_text())
    data.update(updates)
    file.write_text(json.dumps(data, indent=2) + "\n")


def _check_classes(count: int | None, label_names: list[str], spec: ModelSpec) -> None:
    if count is not None and count != len(label_names):
        raise ExportError(
            f"the model of '{spec.name}' has {count} outputs but {len(label_names)} label names were given; "
            "pass the label names the model was trained with"
        )


def _write_timm(spec: ModelSpec, model: nn.Module, folder: Path, label_names: list[str]) -> None:
    """timm's Hub layout: the weights, then timm's own config writer (the half of ``save_for_hf`` that fits)."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    _check_classes(getattr(model, "num_classes", None), label_names, spec)
    if not hasattr(model, "pretrained_cfg"):  # a rebuilt module without timm's attributes: take the spec's
        model.pretrained_cfg = spec.model.pretrained_cfg
        model._model_args = getattr(spec.model, "_model_args", {})
    # contiguous CPU copies: channels_last or GPU weights are fine to train with but not to serialise
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    size = spec.input_size
    data_config = {
        "input_size": [3, size, size],
        "mean": list(spec.mean),
        "std": list(spec.std),
        "interpolation": spec.interpolation,
        "crop_pct": 1.0,
    }
    kwargs: dict[str, Any] = {"model_config": {"label_names": label_names}}
    if "data_config" in inspect.signature(save_config_for_hf).parameters:  # timm >= 1.0.2x
        kwargs["data_config"] = data_config
    save_config_for_hf(model, str(folder / "config.json"), **kwargs)
    # what older timm versions leave out, and what timm carries over from the source checkpoint but no longer holds
    config = json.loads((folder / "config.json").read_text())
    pretrained_cfg = {**config.get("pretrained_cfg", {}), **data_config, "num_classes": len(label_names)}
    for stale in ("test_input_size", "test_crop_pct"):
        pretrained_cfg.pop(stale, None)
    updates = {"pretrained_cfg": pretrained_cfg, RECIPE_KEY: _recipe_block(spec, label_names)}
    _update_json(folder / "config.json", updates)


def _pil_resample(interpolation: str) -> int:
    from PIL import Image

    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    return int(resample)


def _write_transformers(spec: ModelSpec, model: nn.Module, folder: Path, label_names: list[str]) -> None:
    from transformers import ViTImageProcessor

    config = model.config
    _check_classes(getattr(config, "num_labels", None), label_names, spec)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {label: index for index, label in enumerate(label_names)}
    model.save_pretrained(str(folder))  # transformers 5 writes safetensors only
    size = spec.input_size
    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=_pil_resample(spec.interpolation),
        do_rescale=True,
        do_normalize=True,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
    )
    processor.save_pretrained(str(folder))
    for pickle_file in [*folder.glob("*.bin"), *folder.glob("*.pt"), *folder.glob("*.pth")]:
        pickle_file.unlink()  # safetensors only, whatever an older transformers wrote beside them
    _update_json(folder / "config.json", {RECIPE_KEY: _recipe_block(spec, label_names)})


# ---- reading ---------------------------------------------------------------------------------------------------


def _timm_reads_local_dirs() -> bool:
    try:
        from timm.models._factory import parse_model_name

        return parse_model_name("local-dir:x")[0] == "local-dir"
    except (ImportError, ValueError):
        return False


def _load_timm(folder: Path, config: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    import timm

    stem = recorded_small_stem(config)
    if not stem and _timm_reads_local_dirs():
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    else:
        pretrained_cfg = dict(config.get("pretrained_cfg", {}))
        model_args = dict(config.get("model_args", {}))
        model_args.setdefault("num_classes", config.get("num_classes", pretrained_cfg.get("num_classes")))
        model = timm.create_model(config["architecture"], pretrained_cfg_overlay=pretrained_cfg, **model_args)
        if stem:
            apply_small_image_stem(model)
        _load_strict(model, folder)
    cfg = model.pretrained_cfg
    defaults = {
        "input_size": int(cfg["input_size"][-1]),
        "mean": tuple(cfg["mean"]),
        "std": tuple(cfg["std"]),
        "interpolation": cfg.get("interpolation", "bilinear"),
        "label_names": config.get("label_names") or cfg.get("label_names"),
    }
    return model, _info("timm", config["architecture"], stem, config, defaults)


def _load_transformers(folder: Path, config: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    from transformers import AutoConfig, AutoModelForImageClassification

    stem = recorded_small_stem(config)
    if stem:
        model = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(str(folder)))
        apply_small_image_stem(model)
        _load_strict(model, folder)
    else:
        model = AutoModelForImageClassification.from_pretrained(str(folder))
    id2label = model.config.id2label
    defaults = {"label_names": [id2label[index] for index in sorted(id2label)], **_processor_facts(folder)}
    return model, _info("transformers", type(model).__name__, stem, config, defaults)


def _processor_facts(folder: Path) -> dict[str, Any]:
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        return {}
    processor = json.loads(file.read_text())
    size = processor.get("size", {})
    facts: dict[str, Any] = {"interpolation": "bicubic" if processor.get("resample") == 3 else "bilinear"}
    if isinstance(size, dict) and (size.get("height") or size.get("shortest_edge")):
        facts["input_size"] = int(size.get("height") or size["shortest_edge"])
    if processor.get("image_mean"):
        facts["mean"] = tuple(processor["image_mean"])
    if processor.get("image_std"):
        facts["std"] = tuple(processor["image_std"])
    return facts


def _load_strict(model: nn.Module, folder: Path) -> None:
    try:
        model.load_state_dict(read_folder_weights(folder), strict=True)
    except RuntimeError as error:
        raise ExportError(f"the weights in '{folder}' do not fit its config.json: {error}") from None


def _info(library: str, architecture: str, stem: bool, config: dict[str, Any], defaults: dict) -> dict[str, Any]:
    """What the data transforms need: our block when the folder has one, else what the library's files say."""
    block = config.get(RECIPE_KEY) if isinstance(config.get(RECIPE_KEY), dict) else {}
    preprocessing = block.get("preprocessing", {})
    info = {
        "library": library,
        "architecture": architecture,
        "small_image_stem": stem,
        "input_size": preprocessing.get("input_size", defaults.get("input_size")),
        "mean": tuple(preprocessing.get("mean", defaults.get("mean", ()))),
        "std": tuple(preprocessing.get("std", defaults.get("std", ()))),
        "interpolation": preprocessing.get("interpolation", defaults.get("interpolation", "bilinear")),
        "label_names": list(block.get("label_names") or defaults.get("label_names") or []),
    }
    return info
