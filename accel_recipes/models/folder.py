"""The exported model folder, written and read: timm's Hub layout, or transformers' ``save_pretrained`` one.
This module alone knows the folder's format; everything else asks it.

timm folders hold ``config.json`` (architecture, num_classes, label_names, pretrained_cfg with the input size,
mean, std and interpolation used in training, model_args) and ``model.safetensors``:
``timm.create_model("local-dir:<folder>", pretrained=True)`` rebuilds the model. transformers folders hold the
model, its id2label, and a ``ViTImageProcessor`` (works for every backbone: a plain resize + normalise) so that
``pipeline("image-classification", model=folder)`` works offline. Weights are safetensors only, never pickles.

Both kinds also get an ``"accel_recipes"`` block in config.json: library, architecture, label names, the
preprocessing (input_size, mean, std, interpolation) and whether the ResNet has the small-image stem.

Neither timm's ``model_args`` nor a transformers ``ResNetConfig`` can express the small-image stem (3x3
stride-1 first conv, no max-pool). Such a folder therefore also carries transformers' custom code
(``remote_code/``: a configuration and a modeling file, named in ``auto_map`` in config.json) and, for timm, a
``preprocessor_config.json``, so ``AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)``
and ``pipeline("image-classification", model=folder, trust_remote_code=True)`` rebuild it without accel_recipes.
timm's own loader still cannot (it fails on the conv shape or, for a 'deep' stem whose first conv stays 3x3,
silently builds the strided stem); ``load_model_folder`` (and ``build_model`` on the folder) rebuild it from the
``accel_recipes`` block.

The folder is written into a temporary sibling and renamed into place (``accel_recipes.io.atomic_dir``), so
``path`` never holds a half-written model; an existing model folder there is replaced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from accel_recipes.errors import ExportError, ModelError
from accel_recipes.io import atomic_dir, write_json_atomic
from accel_recipes.models import remote_code
from accel_recipes.models.preprocess import pil_resample
from accel_recipes.models.spec import ModelSpec
from accel_recipes.models.surgery import apply_small_image_stem

RECIPE_KEY = "accel_recipes"  # our block in an exported config.json
# what timm's pretrained_cfg says about the default weights' origin, left out of a model trained from scratch
PRETRAINED_ORIGIN_KEYS = (
    "tag", "hf_hub_id", "hf_hub_filename", "url", "file", "state_dict", "source", "paper_ids", "paper_name",
    "origin_url", "notes", "license",
)  # fmt: skip
RECORDED_FACTS = ("library", "architecture", "small_image_stem", "label_names", "preprocessing")
REMOTE_CODE_CLASSES = {  # library -> (config class, model class) of remote_code/ for a small-image-stem folder
    "timm": ("SmallStemTimmResNetConfig", "SmallStemTimmResNetForImageClassification"),
    "transformers": ("SmallStemResNetConfig", "SmallStemResNetForImageClassification"),
}


# ---- what a folder says -----------------------------------------------------------------------------------------


def read_folder_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json as a dict; a ModelError saying what to do when it is missing or not JSON."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(
            f"model folder '{folder}' has no config.json; point model_name_or_path at a folder saved by timm "
            "(save_for_hf) or transformers (save_pretrained), or at a model name"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ModelError(f"'{config_file}' is not valid JSON ({error}); re-save the model folder") from None
    if not isinstance(config, dict):
        raise ModelError(f"'{config_file}' must hold a JSON object, got {type(config).__name__}")
    return config


def recorded_facts(config: dict[str, Any]) -> dict[str, Any]:
    """What an exported config.json's ``accel_recipes`` block records, among library, architecture,
    small_image_stem, label_names and preprocessing (input_size, mean, std, interpolation); {} without the block
    (a folder timm or transformers wrote)."""
    block = config.get(RECIPE_KEY)
    if not isinstance(block, dict):
        return {}
    return {key: block[key] for key in RECORDED_FACTS if key in block}


def recorded_small_stem(config: dict[str, Any]) -> bool:
    """Whether an exported config.json records the small-image stem, which neither library can express."""
    return bool(recorded_facts(config).get("small_image_stem"))


def folder_library(folder: Path, config: dict[str, Any] | None = None) -> str:
    """'timm' for timm's config.json (an "architecture" key), 'transformers' for one with "model_type"."""
    config = read_folder_config(folder) if config is None else config
    if "model_type" in config:
        return "transformers"
    if "architecture" in config:
        return "timm"
    raise ModelError(
        f'\'{folder / "config.json"}\' has neither "architecture" (timm) nor "model_type" (transformers); '
        "set model_library, or re-save the folder with timm or transformers"
    )


def check_weight_files(folder: Path) -> None:
    """Every ``*.safetensors`` file of ``folder`` opens and holds the bytes its header promises (truncated,
    garbage or unreadable files fail here); a ModelError naming the damaged file."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as weights:
                weights.keys()
        except (SafetensorError, OSError) as error:
            raise ExportError(
                f"the weights file '{file}' is damaged or unreadable ({error}); export or download the model "
                "folder again"
            ) from None


def read_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's ``*.safetensors`` files (one file, or a sharded set)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"model folder '{folder}' holds no *.safetensors weights; export it again")
    check_weight_files(folder)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file), device="cpu"))
    return state


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], head: Sequence[str], name: str) -> None:
    """Load ``state`` into ``model``; only the classifier (keys under a ``head`` prefix) may differ in shape."""
    own = model.state_dict()
    mismatched = [key for key in state if key in own and own[key].shape != state[key].shape]
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    outside_head = [key for key in mismatched + missing if not key.startswith(tuple(head))]
    if outside_head or unexpected:
        raise ModelError(
            f"the weights in '{name}' do not fit the model built from its config (differing: "
            f"{(outside_head + unexpected)[:5]}); export the folder again with this version of accel_recipes"
        )
    model.load_state_dict({key: value for key, value in state.items() if key not in mismatched}, strict=False)


# ---- writing ---------------------------------------------------------------------------------------------------


def save_model_folder(
    spec: ModelSpec,
    model: nn.Module,
    path: str | Path,
    label_names: list[str],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (the trained, unwrapped module built as ``spec`` says) as a loadable folder at ``path``.
    ``state_dict``: its whole weights when the module holds shards (``checkpoints.full_state_dict``); by default
    ``model.state_dict()``."""
    path = Path(path)
    _check_replaceable(path)
    with atomic_dir(path) as staging:
        if spec.library == "timm":
            _write_timm(spec, model, staging, list(label_names), state_dict)
        elif spec.library == "transformers":
            _write_transformers(spec, model, staging, list(label_names), state_dict)
        else:
            raise ExportError(f"cannot export a model of library {spec.library!r}; expected 'timm' or 'transformers'")
    return path


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
    write_json_atomic(file, data, sort_keys=False)  # the libraries' key order, as they wrote it


def _check_classes(count: int | None, label_names: list[str], spec: ModelSpec) -> None:
    if count is not None and count != len(label_names):
        raise ExportError(
            f"the model of '{spec.name}' has {count} outputs but {len(label_names)} label names were given; "
            "pass the label names the model was trained with"
        )


def _write_timm(
    spec: ModelSpec, model: nn.Module, folder: Path, label_names: list[str], state_dict: dict | None
) -> None:
    """timm's Hub layout: the weights, then timm's own config writer (the half of ``save_for_hf`` that fits)."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    _check_classes(getattr(model, "num_classes", None), label_names, spec)
    if not hasattr(model, "pretrained_cfg"):  # a rebuilt module without timm's attributes: take the spec's
        model.pretrained_cfg = spec.model.pretrained_cfg
        model._model_args = getattr(spec.model, "_model_args", {})
    # contiguous CPU copies: channels_last or GPU weights are fine to train with but not to serialise
    weights = model.state_dict() if state_dict is None else state_dict
    state = {key: value.detach().cpu().contiguous() for key, value in weights.items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    size = spec.input_size
    data_config = {
        "input_size": [3, size, size],
        "mean": list(spec.mean),
        "std": list(spec.std),
        "interpolation": spec.interpolation,
        "crop_pct": 1.0,
        # evaluation resizes the whole image to input_size x input_size (make_transform), as transformers'
        # image processor does; timm's default ("center": shorter side, then a centre crop) differs off square
        "crop_mode": "squash",
    }
    model_config = {"label_names": label_names}
    save_config_for_hf(model, folder / "config.json", model_config=model_config, data_config=data_config)
    # what timm carries over from the source checkpoint but no longer holds
    config = json.loads((folder / "config.json").read_text())
    pretrained_cfg = {**config.get("pretrained_cfg", {}), **data_config, "num_classes": len(label_names)}
    for stale in ("test_input_size", "test_crop_pct"):
        pretrained_cfg.pop(stale, None)
    if not spec.pretrained:  # trained from scratch: claim none of the default weights' origin
        for origin in PRETRAINED_ORIGIN_KEYS:
            pretrained_cfg.pop(origin, None)
    updates = {"pretrained_cfg": pretrained_cfg, RECIPE_KEY: _recipe_block(spec, label_names)}
    if "num_classes" in config.get("model_args", {}):
        # the top-level num_classes says it; a second one in model_args breaks transformers' TimmWrapper
        # (it passes num_classes and **model_args to timm.create_model)
        updates["model_args"] = {key: value for key, value in config["model_args"].items() if key != "num_classes"}
    if spec.small_image_stem:
        # what transformers' pipeline reads (timm reads pretrained_cfg). Up to 5.24, AutoImageProcessor reads
        # preprocessor_config.json; from 5.25 it reads a folder that looks like timm's (config.json holds a
        # pretrained_cfg) from config.json alone, so config.json carries the same processor settings: without
        # them the class defaults (224 px) win. The processor's keys (size, image_mean, ...) are not timm's.
        updates.update(_write_image_processor(spec, folder))
        updates["auto_map"] = _write_remote_code("timm", folder)
    _update_json(folder / "config.json", updates)


def _write_transformers(
    spec: ModelSpec, model: nn.Module, folder: Path, label_names: list[str], state_dict: dict | None
) -> None:
    config = model.config
    _check_classes(getattr(config, "num_labels", None), label_names, spec)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {label: index for index, label in enumerate(label_names)}
    model.save_pretrained(str(folder), state_dict=state_dict)  # transformers 5 writes safetensors only
    _write_image_processor(spec, folder)
    for pickle_file in [*folder.glob("*.bin"), *folder.glob("*.pt"), *folder.glob("*.pth")]:
        pickle_file.unlink()  # safetensors only, whatever an older transformers wrote beside them
    updates: dict[str, Any] = {RECIPE_KEY: _recipe_block(spec, label_names)}
    if spec.small_image_stem:
        updates["auto_map"] = _write_remote_code("transformers", folder)
    _update_json(folder / "config.json", updates)


def _write_image_processor(spec: ModelSpec, folder: Path) -> dict[str, Any]:
    """A ``ViTImageProcessor`` (works for every backbone: a plain resize + normalise) with the training input;
    what it wrote to preprocessor_config.json."""
    from transformers import ViTImageProcessor

    size = spec.input_size
    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=pil_resample(spec.interpolation),
        do_rescale=True,
        do_normalize=True,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
    )
    processor.save_pretrained(str(folder))
    return json.loads((folder / "preprocessor_config.json").read_text())


def _write_remote_code(library: str, folder: Path) -> dict[str, str]:
    """Copy remote_code/'s two files into ``folder``; the ``auto_map`` that names their classes."""
    source = Path(remote_code.__file__).parent
    for name in (remote_code.CONFIGURATION_FILE, remote_code.MODELING_FILE):
        (folder / name).write_bytes((source / name).read_bytes())
    config_class, model_class = REMOTE_CODE_CLASSES[library]
    return {
        "AutoConfig": f"{Path(remote_code.CONFIGURATION_FILE).stem}.{config_class}",
        "AutoModelForImageClassification": f"{Path(remote_code.MODELING_FILE).stem}.{model_class}",
    }


# ---- reading ---------------------------------------------------------------------------------------------------


def load_model_folder(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a folder written by ``save_model_folder`` (or by timm / transformers), in eval mode, and
    ``info``: library, architecture, input_size, mean, std, interpolation, label_names, small_image_stem."""
    folder = Path(path)
    if not folder.is_dir():
        raise ExportError(f"model folder '{folder}' does not exist; pass the folder save_model_folder wrote")
    config = read_folder_config(folder)
    check_weight_files(folder)
    load = _load_timm if folder_library(folder, config) == "timm" else _load_transformers
    try:
        model, info = load(folder, config)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, ModelError):
            raise
        raise ExportError(f"cannot load the model folder '{folder}': {error}; export it again") from None
    return model.eval(), info


def _load_timm(folder: Path, config: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    import timm

    stem = recorded_small_stem(config)
    if not stem:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    else:  # timm cannot express the stem: its architecture and config, the stem swapped in, then the weights
        pretrained_cfg = dict(config.get("pretrained_cfg", {}))
        model_args = dict(config.get("model_args", {}))
        model_args.setdefault("num_classes", config.get("num_classes", pretrained_cfg.get("num_classes")))
        model = timm.create_model(config["architecture"], pretrained_cfg_overlay=pretrained_cfg, **model_args)
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
    block = recorded_facts(config)
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
