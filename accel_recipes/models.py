"""Backbones: a timm or transformers image classifier with its head sized to the labels.

``build_model`` decides which library builds the named model, sizes the head and the input, fits the model
to small images when it trains from scratch (the CIFAR ResNet stem, a small ViT patch) and says which
normalisation and resize the data transforms must use.

The Hugging Face Hub is asked only for what is not local or cached. When it cannot be reached (no network,
``HF_HUB_OFFLINE=1``) the build fails at once with a ``ModelError`` instead of retrying for half a minute.

Pretrained transformers ViTs asked for another ``image_size`` get their position embeddings resized once,
here (bicubic, like timm does for its ViTs), and ``config.image_size`` updated, so the model, the saved folder
and ``pipeline`` all work at the new size without ``interpolate_pos_encoding``.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from accel_recipes.config import RecipeArguments
from accel_recipes.hub_access import hub_unreachable_reason

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE_MAX = 64  # at or below this many pixels, from scratch: CIFAR stem, small ViT patches
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_VIT_MODULES = ("vision_transformer", "deit")  # timm modules whose models take img_size and patch_size
TRANSFORMERS_VIT_TYPES = ("vit", "deit", "vit_msn", "dinov2", "beit", "data2vec-vision")  # config.patch_size is a ViT's
RECIPE_KEY = "accel_recipes"  # our block in an exported config.json

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model that cannot be built as asked; the message names the model or value and what to do."""


@dataclass
class ModelSpec:
    model: nn.Module
    library: str
    name: str
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    pretrained: bool
    small_image_stem: bool
    patch_size: int | None
    num_parameters: int

    def describe(self) -> str:
        """One line for logs."""
        if self.small_image_stem:
            shape = "small-image stem (3x3 stride 1, no max-pool)"
        elif self.patch_size:
            shape = f"patch {self.patch_size}"
        else:
            shape = "standard stem"
        origin = "pretrained" if self.pretrained else "from scratch"
        return (
            f"{self.library} {self.architecture} ({self.name}): {self.num_parameters / 1e6:.2f}M params, "
            f"input {self.input_size}px, {shape}, {origin}"
        )


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model call: a Tensor as is, else ``output.logits`` (transformers ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"model output {type(output).__name__} is neither a Tensor nor has a .logits Tensor")


# ---- which library --------------------------------------------------------------------------------------------


def _strip_local_prefix(name: str) -> str:
    return name[len("local-dir:") :] if name.startswith("local-dir:") else name


def local_folder(name: str) -> Path | None:
    """The folder ``name`` points at (a plain path or timm's ``local-dir:`` form), else None."""
    path = Path(_strip_local_prefix(name)).expanduser()
    return path if path.is_dir() else None


def read_folder_config(folder: Path) -> dict[str, Any]:
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


def recorded_small_stem(config: dict[str, Any]) -> bool:
    """Whether an exported config.json records the small-image stem, which neither library can express."""
    block = config.get(RECIPE_KEY)
    return bool(block.get("small_image_stem")) if isinstance(block, dict) else False


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


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~", "local-dir:")) or name.count("/") > 1 or "\\" in name


def _unknown_model_error(name: str) -> ModelError:
    import timm

    base = name.split("/")[-1].split(".")[0]
    matches = difflib.get_close_matches(base.lower(), timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(m) for m in matches)}? " if matches else ""
    return ModelError(
        f"unknown model '{name}': not a timm architecture and not a local folder; {hint}"
        "use a timm name (timm.list_models()), a Hub id such as 'org/name', or a folder holding a config.json"
    )


def resolve_library(name: str, requested: str) -> str:
    """Which library builds ``name``: 'timm' or 'transformers'. ``requested`` is 'auto', 'timm' or 'transformers'."""
    if requested in ("timm", "transformers"):
        return requested
    if requested != "auto":
        raise ModelError(f"model_library must be 'auto', 'timm' or 'transformers', got {requested!r}")
    folder = local_folder(name)
    if folder is not None:
        return folder_library(folder)
    if name.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return "timm"
    if _looks_like_path(name):
        raise ModelError(f"model folder '{name}' does not exist; check the path, or give a model name or Hub id")
    if "/" in name:
        return "transformers"
    import timm

    if timm.is_model(name):
        return "timm"
    raise _unknown_model_error(name)


# ---- the Hub, failing fast -------------------------------------------------------------------------------------


def _unreachable_error(name: str, what: str, reason: str) -> ModelError:
    return ModelError(
        f"cannot get {what} of '{name}': the Hugging Face Hub is unreachable ({reason}) and the local cache "
        "has no copy; point model_name_or_path at a local folder holding config.json and the weights, "
        "or set pretrained false to train from scratch"
    )


def _hub_file(repo_id: str, filenames: Sequence[str], cache_dir: str | None, name: str, what: str) -> str:
    """Local path of the first of ``filenames`` in a Hub repo: from the cache, else downloaded."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    reason = hub_unreachable_reason()
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=reason is not None)
        except LocalEntryNotFoundError as error:
            if reason is None:  # online, yet the download failed: a network problem, not a missing file
                raise _unreachable_error(name, what, str(error).splitlines()[0]) from None
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError, ValueError) as error:
            raise ModelError(f"cannot get {what} of '{name}' from the Hub repo '{repo_id}': {error}") from None
    if reason is not None:
        raise _unreachable_error(name, what, reason)
    raise ModelError(f"Hub repo '{repo_id}' holds none of {list(filenames)}, so it has no {what} for '{name}'")


def _transformers_local_only(name: str, cache_dir: str | None, what: str) -> bool:
    """True when the Hub is unreachable but the config is cached (load from the cache only); raise if not cached."""
    from huggingface_hub import try_to_load_from_cache

    reason = hub_unreachable_reason()
    if reason is None:
        return False
    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    except ValueError as error:  # an invalid repo id
        raise ModelError(f"'{name}' is neither a local folder nor a valid Hub id ({error})") from None
    if isinstance(cached, str):
        return True
    raise _unreachable_error(name, what, reason)


def _call_hub(name: str, what: str, load: Callable[[], T]) -> T:
    """Run a transformers loader; its OSError (not found, no network) or ValueError (unknown model type,
    remote code not trusted) becomes a ModelError naming the model."""
    try:
        return load()
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load {what} of '{name}': {error}") from None


# ---- the small-image stem ---------------------------------------------------------------------------------------


def is_resnet(model: nn.Module) -> bool:
    """A timm ResNet (resnet*, resnext*, wide_resnet*, seresnet*...) or a transformers ResNet classifier."""
    from timm.models.resnet import ResNet

    if isinstance(model, ResNet):
        return True
    return getattr(getattr(model, "config", None), "model_type", None) == "resnet" and hasattr(model, "resnet")


def _stem_conv(like: nn.Conv2d) -> nn.Conv2d:
    conv = nn.Conv2d(like.in_channels, like.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as both libraries init ResNets
    return conv.to(device=like.weight.device, dtype=like.weight.dtype)


def apply_small_image_stem(model: nn.Module) -> None:
    """Turn a ResNet's stem into the CIFAR one: its first conv becomes 3x3 stride 1 padding 1, no max-pool.

    timm 'deep' stems (three 3x3 convs) keep their shape; only the first, strided, conv is replaced.
    """
    from timm.models.resnet import ResNet

    if isinstance(model, ResNet):
        stem = model.conv1
        if isinstance(stem, nn.Conv2d):
            model.conv1 = _stem_conv(stem)
        elif isinstance(stem, nn.Sequential) and isinstance(stem[0], nn.Conv2d):
            stem[0] = _stem_conv(stem[0])
        else:
            raise ModelError(
                f"cannot fit the small-image stem to this timm ResNet's stem ({type(stem).__name__}); "
                "set small_image_stem false"
            )
        model.maxpool = nn.Identity()
        return
    if is_resnet(model):
        embedder = model.resnet.embedder
        embedder.embedder.convolution = _stem_conv(embedder.embedder.convolution)
        embedder.pooler = nn.Identity()
        return
    raise ModelError(f"the small-image stem is for ResNets, not {type(model).__name__}; set small_image_stem false")


def _resolve_stem(requested: bool | None, model: nn.Module, name: str, pretrained: bool, input_size: int) -> bool:
    if requested is None:
        return is_resnet(model) and not pretrained and input_size <= SMALL_IMAGE_MAX
    if requested and not is_resnet(model):
        raise ModelError(
            f"small_image_stem true is for ResNets, but '{name}' builds {type(model).__name__}; "
            "set small_image_stem auto or false"
        )
    return requested


def _patch_for(args: RecipeArguments, input_size: int) -> int | None:
    """The ViT patch size to build with: patch_size if set; from scratch 4 at <= 32 px, 8 at <= 64 px; else None."""
    patch_size = args.model.patch_size
    if patch_size is None and not args.model.pretrained:
        patch_size = 4 if input_size <= 32 else 8 if input_size <= SMALL_IMAGE_MAX else None
    if patch_size is not None and (patch_size < 1 or input_size % patch_size):
        raise ModelError(f"image size {input_size} is not a multiple of patch_size {patch_size}; change one of them")
    return patch_size


def _refuse_stem_off(args: RecipeArguments) -> None:
    if args.effective_small_image_stem is False:
        raise ModelError(
            f"'{args.model.model_name_or_path}' was trained with the small-image stem and its weights need it; "
            "remove small_image_stem false"
        )


# ---- weights of an exported folder --------------------------------------------------------------------------------


def read_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's ``*.safetensors`` files (one file, or a sharded set)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"model folder '{folder}' holds no *.safetensors weights; export it again")
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


# ---- timm ------------------------------------------------------------------------------------------------------


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
        return {"file": _hub_file(hub_id, filenames, cache_dir, name, "the pretrained weights")}
    if hub_id or cfg.get("url"):
        reason = hub_unreachable_reason(None if hub_id else cfg["url"])
        if reason is not None:
            raise _unreachable_error(name, "the pretrained weights", reason)
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
            config_file = _hub_file(repo, ("config.json",), cache_dir, name, "the timm config")
            if pretrained:
                _hub_file(repo, TIMM_WEIGHT_FILES, cache_dir, name, "the pretrained weights")
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
        raise _unknown_model_error(name)
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


def _interpolation(value: Any) -> str:
    return "bicubic" if str(value).lower() in {"bicubic", "3", "pilimageresampling.bicubic"} else "bilinear"


def _triple(values: Sequence[float], what: str, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ModelError(f"{what} of '{name}' must have 3 channels, got {values}")
    return values  # type: ignore[return-value]


def _build_timm(
    args: RecipeArguments,
    label_names: list[str],
    dataset_mean: Sequence[float],
    dataset_std: Sequence[float],
    native_size: int,
) -> ModelSpec:
    import timm

    name = args.model.model_name_or_path
    source = _timm_source(name, args.model.pretrained, args.model.cache_dir)
    cfg = source.pretrained_cfg
    pretrained_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    input_size = args.model.image_size or (pretrained_size if args.model.pretrained else native_size)

    kwargs: dict[str, Any] = {"num_classes": len(label_names)}
    if args.model.cache_dir:  # only then: older timm 1.0.x create_model has no cache_dir
        kwargs["cache_dir"] = args.model.cache_dir
    if args.model.drop_path_rate:
        kwargs["drop_path_rate"] = args.model.drop_path_rate
    vit = _is_timm_vit(source.architecture)
    if vit or cfg.get("fixed_input_size", False):
        kwargs["img_size"] = input_size
    if vit:
        patch_size = _patch_for(args, input_size)
        if patch_size:
            kwargs["patch_size"] = patch_size
    elif args.model.patch_size:
        raise ModelError(f"patch_size is for ViTs, but '{name}' is a {source.architecture}; remove patch_size")

    load_in_timm = args.model.pretrained and not source.recorded_stem
    try:
        model = timm.create_model(
            source.create_name,
            pretrained=load_in_timm,
            pretrained_cfg_overlay=source.weights_overlay if load_in_timm else None,
            **kwargs,
        )
    except (RuntimeError, ValueError, TypeError, AssertionError, KeyError) as error:
        raise ModelError(f"timm cannot build '{name}' with {kwargs}: {error}") from None

    if source.recorded_stem and args.model.pretrained:
        # timm's loader cannot express the small-image stem: build it, then load the folder's weights
        _refuse_stem_off(args)
        apply_small_image_stem(model)
        classifier = model.pretrained_cfg.get("classifier") or "fc"
        head = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        load_backbone_weights(model, read_folder_weights(source.folder), head, name)
        stem = True
    else:
        stem = _resolve_stem(args.effective_small_image_stem, model, name, args.model.pretrained, input_size)
        if stem:
            apply_small_image_stem(model)

    if args.model.pretrained:
        model_cfg = model.pretrained_cfg
        mean = _triple(model_cfg.get("mean", IMAGENET_MEAN), "mean", name)
        std = _triple(model_cfg.get("std", IMAGENET_STD), "std", name)
        interpolation = _interpolation(model_cfg.get("interpolation", "bicubic"))
    else:
        mean, std = _triple(dataset_mean, "dataset mean", name), _triple(dataset_std, "dataset std", name)
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
        pretrained=args.model.pretrained,
        small_image_stem=stem,
        patch_size=int(patch[0] if isinstance(patch, (tuple, list)) else patch) if patch else None,
        num_parameters=sum(p.numel() for p in model.parameters()),
    )


# ---- transformers ----------------------------------------------------------------------------------------------


def _config_image_size(config: Any) -> int | None:
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else None


def _config_patch_size(config: Any) -> int | None:
    size = getattr(config, "patch_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else None


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
        _interpolation(getattr(processor, "resample", "bilinear")),
        _processor_size(processor),
    )


def _resize_position_embeddings(model: nn.Module, size: int, name: str) -> None:
    """Fit a pretrained ViT-style model to ``size``: resample its position embeddings and record the new size."""
    config = model.config
    old = _config_image_size(config)
    if old is None or old == size:
        return
    embeddings = getattr(model.base_model, "embeddings", None)
    position = getattr(embeddings, "position_embeddings", None)
    patches = getattr(embeddings, "patch_embeddings", None)
    patch = _config_patch_size(config)
    if isinstance(position, nn.Parameter) and position.dim() == 3 and hasattr(patches, "image_size") and patch:
        if size % patch:
            raise ModelError(f"image_size {size} is not a multiple of the patch size {patch} of '{name}'")
        old_grid, new_grid = old // patch, size // patch
        extra = position.shape[1] - old_grid * old_grid  # class (and distillation) tokens come first
        if extra >= 0:
            grid = position[:, extra:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
            grid = grid.to(position.dtype).permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)
            embeddings.position_embeddings = nn.Parameter(torch.cat([position[:, :extra].detach(), grid], dim=1))
            for module in (embeddings, patches):  # both check the input size in transformers 5
                if hasattr(module, "image_size"):
                    module.image_size = (size, size)
            if hasattr(patches, "num_patches"):
                patches.num_patches = new_grid * new_grid
            config.image_size = size
            return
    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        raise ModelError(
            f"'{name}' has position embeddings for {old} px that cannot be resized here for image_size {size}; "
            f"leave image_size unset (it then uses {old})"
        )
    # a convolutional model: any input size works


def _transformers_config(args: RecipeArguments, source: str, common: dict[str, Any], label_names: list[str]) -> Any:
    """The checkpoint's config with our labels (num_labels follows from id2label) and drop-path rate."""
    from transformers import AutoConfig

    labels = {
        "id2label": dict(enumerate(label_names)),
        "label2id": {label: index for index, label in enumerate(label_names)},
    }
    config = _call_hub(
        args.model.model_name_or_path, "the config", lambda: AutoConfig.from_pretrained(source, **common, **labels)
    )
    if args.model.drop_path_rate:
        keys = [key for key in ("drop_path_rate", "drop_connect_rate") if hasattr(config, key)]
        if not keys:
            logger.warning("%s has no stochastic depth; drop_path_rate is ignored", type(config).__name__)
        for key in keys:
            setattr(config, key, args.model.drop_path_rate)
    return config


def _pretrained_transformers(
    args: RecipeArguments, source: str, common: dict[str, Any], config: Any, config_patch: int | None
) -> tuple[nn.Module, int, tuple, tuple, str]:
    """The checkpoint's weights (a new head), and the input size, mean, std and interpolation it was trained with."""
    from transformers import AutoModelForImageClassification

    name = args.model.model_name_or_path
    mean, std, interpolation, processor_size = _pretrained_preprocessing(source, common)
    input_size = args.model.image_size or _config_image_size(config) or processor_size or 224
    if args.model.patch_size and args.model.patch_size != config_patch:
        raise ModelError(
            f"patch_size {args.model.patch_size} differs from the patch size {config_patch} of the pretrained '{name}'; "
            "remove patch_size, or set pretrained false"
        )
    folder = local_folder(name)
    if folder is not None and recorded_small_stem(read_folder_config(folder)):
        # transformers cannot express the small-image stem: build it, then load the folder's weights
        _refuse_stem_off(args)
        model = AutoModelForImageClassification.from_config(config, trust_remote_code=args.model.trust_remote_code)
        apply_small_image_stem(model)
        load_backbone_weights(model, read_folder_weights(folder), ("classifier",), name)
    else:
        model = _call_hub(
            name,
            "the pretrained weights",
            lambda: AutoModelForImageClassification.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True, **common
            ),
        )
    _resize_position_embeddings(model, input_size, name)
    return model, input_size, mean, std, interpolation


def _scratch_transformers(args: RecipeArguments, config: Any, config_patch: int | None, input_size: int) -> nn.Module:
    from transformers import AutoModelForImageClassification

    if hasattr(config, "image_size"):
        config.image_size = input_size
    if config_patch is not None:
        config.patch_size = _patch_for(args, input_size) or config_patch
    elif args.model.patch_size:
        raise ModelError(
            f"patch_size is for ViTs, but '{args.model.model_name_or_path}' is a {config.model_type} model; remove patch_size"
        )
    return AutoModelForImageClassification.from_config(config, trust_remote_code=args.model.trust_remote_code)


def _build_transformers(
    args: RecipeArguments,
    label_names: list[str],
    dataset_mean: Sequence[float],
    dataset_std: Sequence[float],
    native_size: int,
) -> ModelSpec:
    name = args.model.model_name_or_path
    folder = local_folder(name)
    if folder is not None and folder_library(folder) != "transformers":
        raise ModelError(f"'{name}' holds a timm config, not a transformers one; set model_library timm")
    source = str(folder) if folder is not None else name
    what = "the pretrained weights" if args.model.pretrained else "the config"
    local_only = False if folder is not None else _transformers_local_only(name, args.model.cache_dir, what)
    common = {"cache_dir": args.model.cache_dir, "trust_remote_code": args.model.trust_remote_code, "local_files_only": local_only}
    config = _transformers_config(args, source, common, label_names)
    config_patch = _config_patch_size(config) if config.model_type in TRANSFORMERS_VIT_TYPES else None

    if args.model.pretrained:
        model, input_size, mean, std, interpolation = _pretrained_transformers(
            args, source, common, config, config_patch
        )
        recorded_stem = folder is not None and recorded_small_stem(read_folder_config(folder))
    else:
        input_size = args.model.image_size or native_size
        model = _scratch_transformers(args, config, config_patch, input_size)
        mean, std, interpolation, recorded_stem = dataset_mean, dataset_std, "bilinear", False
    stem = recorded_stem or _resolve_stem(args.effective_small_image_stem, model, name, args.model.pretrained, input_size)
    if stem and not recorded_stem:
        apply_small_image_stem(model)
    return ModelSpec(
        model=model,
        library="transformers",
        name=name,
        architecture=type(model).__name__,
        input_size=input_size,
        mean=_triple(mean, "mean", name),
        std=_triple(std, "std", name),
        interpolation=interpolation,
        pretrained=args.model.pretrained,
        small_image_stem=stem,
        patch_size=_config_patch_size(model.config) if config_patch is not None else None,
        num_parameters=sum(p.numel() for p in model.parameters()),
    )


def build_model(
    args: RecipeArguments,
    label_names: list[str],
    dataset_mean: Sequence[float],
    dataset_std: Sequence[float],
    native_size: int,
) -> ModelSpec:
    """The backbone ``args`` name, its head sized to ``label_names``, with the input and normalisation it needs."""
    if not label_names:
        raise ModelError("the dataset has no labels; a classifier needs at least one label name")
    if args.model.image_size is not None and args.model.image_size < 1:
        raise ModelError(f"image_size must be positive, got {args.model.image_size}")
    library = resolve_library(args.model.model_name_or_path, args.model.model_library)
    build = _build_timm if library == "timm" else _build_transformers
    return build(args, list(label_names), dataset_mean, dataset_std, native_size)
