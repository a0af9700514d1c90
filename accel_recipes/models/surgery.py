"""Fitting a built model to the images it will see: the CIFAR ResNet stem and small ViT patches for small
images trained from scratch, and a pretrained transformers ViT's position embeddings resized to another input
size.

The position embeddings are resampled once, here, with timm's own resampler (bicubic, as timm does for its
ViTs), and ``config.image_size`` is updated, so the model, the saved folder and ``pipeline`` all work at the new
size without ``interpolate_pos_encoding``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from accel_recipes.config import ModelArguments
from accel_recipes.errors import ModelError

SMALL_IMAGE_MAX = 64  # at or below this many pixels, from scratch: CIFAR stem, small ViT patches


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


def resolve_stem(requested: bool | None, model: nn.Module, name: str, pretrained: bool, input_size: int) -> bool:
    """Whether ``model`` gets the small-image stem: as ``requested``, or (None) for ResNets from scratch on small
    images, where a 7x7 stride-2 conv and a max-pool would throw away most of a 32 px image at once."""
    if requested is None:
        return is_resnet(model) and not pretrained and input_size <= SMALL_IMAGE_MAX
    if requested and not is_resnet(model):
        raise ModelError(
            f"small_image_stem true is for ResNets, but '{name}' builds {type(model).__name__}; "
            "set small_image_stem auto or false"
        )
    return requested


def refuse_stem_off(model_args: ModelArguments) -> None:
    """A folder exported with the small-image stem holds weights for it; building it without the stem cannot work."""
    if model_args.effective_small_image_stem is False:
        raise ModelError(
            f"'{model_args.model_name_or_path}' was trained with the small-image stem and its weights need it; "
            "remove small_image_stem false"
        )


# ---- ViT patches ------------------------------------------------------------------------------------------------


def patch_for(model_args: ModelArguments, input_size: int) -> int | None:
    """The ViT patch size to build with: patch_size if set; from scratch 4 at <= 32 px, 8 at <= 64 px; else None."""
    patch_size = model_args.patch_size
    if patch_size is None and not model_args.pretrained:
        patch_size = 4 if input_size <= 32 else 8 if input_size <= SMALL_IMAGE_MAX else None
    if patch_size is not None and (patch_size < 1 or input_size % patch_size):
        raise ModelError(f"image size {input_size} is not a multiple of patch_size {patch_size}; change one of them")
    return patch_size


def config_size(config: Any, key: str) -> int | None:
    """A transformers config's ``image_size`` or ``patch_size`` as one side: configs hold an int or a pair."""
    size = getattr(config, key, None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else None


def resize_position_embeddings(model: nn.Module, size: int, name: str) -> None:
    """Fit a pretrained ViT-style model to ``size``: resample its position embeddings and record the new size."""
    from timm.layers import resample_abs_pos_embed

    config = model.config
    old = config_size(config, "image_size")
    if old is None or old == size:
        return
    embeddings = getattr(model.base_model, "embeddings", None)
    position = getattr(embeddings, "position_embeddings", None)
    patches = getattr(embeddings, "patch_embeddings", None)
    patch = config_size(config, "patch_size")
    if isinstance(position, nn.Parameter) and position.dim() == 3 and hasattr(patches, "image_size") and patch:
        if size % patch:
            raise ModelError(f"image_size {size} is not a multiple of the patch size {patch} of '{name}'")
        old_grid, new_grid = old // patch, size // patch
        extra = position.shape[1] - old_grid * old_grid  # class (and distillation) tokens come first
        if extra >= 0:
            with torch.no_grad():
                # antialias off: what this function did before timm's resampler, and what transformers'
                # interpolate_pos_encoding does, so a resized model matches the original run at the new size
                resized = resample_abs_pos_embed(
                    position,
                    new_size=[new_grid, new_grid],
                    old_size=[old_grid, old_grid],
                    num_prefix_tokens=extra,
                    interpolation="bicubic",
                    antialias=False,
                )
            embeddings.position_embeddings = nn.Parameter(resized)
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
