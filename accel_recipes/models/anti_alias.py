"""``aa_layer``: anti-aliased downsampling (BlurPool, Zhang 2019) in the timm ResNets, as timm's own ``resnetblur*``
and ``resnetaa*`` architectures have it.

timm 1.0.31's ``ResNet`` takes ``aa_layer`` only as a class (its stem calls ``issubclass`` on it, so neither the
string shorthands nor the constant-padding ``blurpc`` partial build), and a class cannot be recorded in an exported
``config.json``. timm records it the way it records every variant: by the architecture's name. So ``resnet50`` with
``aa_layer: blur`` is built as timm's ``resnetblur50`` (the same ResNet with ``aa_layer=BlurPool2d``), and
``timm.create_model("local-dir:...")``, transformers' ``TimmWrapper`` and the small-image-stem custom code rebuild it
from the folder by that name. A combination timm has no architecture for is a ConfigError naming the ones it has.
"""

from __future__ import annotations

import re

from torch import nn

from accel_recipes.errors import ConfigError

# aa_layer -> the infix of timm's architectures built with it (resnet50 -> resnetblur50, resnet50d -> resnetaa50d)
INFIX = {"blur": "blur", "avg": "aa"}
RESNET_FAMILY = re.compile(r"^(resnet|resnext|seresnet|seresnext)(\d.*)$")


def anti_aliased_architecture(architecture: str, aa_layer: str, pretrained: bool, from_folder: bool) -> str:
    """The timm architecture that is ``architecture`` with ``aa_layer`` downsampling; a ConfigError when there is
    none, or when the weights would come from a checkpoint trained without it."""
    import timm

    if from_folder or pretrained:
        raise ConfigError(
            f"aa_layer {aa_layer} builds a timm ResNet from scratch, but '{architecture}' "
            f"{'is a saved model folder' if from_folder else 'is loaded with pretrained weights'} trained without "
            "it; set pretrained false with a timm architecture name (resnet18, resnet50), or start from one of "
            "timm's anti-aliased checkpoints (resnetaa50d.sw_in12k_ft_in1k) without aa_layer"
        )
    if aa_layer not in INFIX:
        raise ConfigError(
            f"aa_layer {aa_layer} cannot build a timm ResNet: timm's ResNet takes its anti-aliasing layer as a class "
            "and has no architecture with the constant-padding BlurPool; use aa_layer blur (BlurPool2d) or avg"
        )
    match = RESNET_FAMILY.match(architecture)
    existing = sorted(name for name in timm.list_models() if _is_anti_aliased_resnet(name, INFIX[aa_layer]))
    candidate = f"{match.group(1)}{INFIX[aa_layer]}{match.group(2)}" if match else None
    if candidate is None or not timm.is_model(candidate):
        what = "is not a timm ResNet" if match is None else f"has no anti-aliased variant with aa_layer {aa_layer}"
        raise ConfigError(
            f"aa_layer is for the timm ResNets, and '{architecture}' {what}; timm's ResNets with aa_layer "
            f"{aa_layer}: {', '.join(existing)} (pass the one without '{INFIX[aa_layer]}' as model_name_or_path), or "
            "remove aa_layer"
        )
    return candidate


def check_input_size(model: nn.Module, architecture: str, aa_layer: str, input_size: int) -> None:
    """One forward of a blank image at ``input_size``: BlurPool's reflect padding needs feature maps of at least
    2 px, and timm's average-pool downsampling even sides, which small inputs do not give in the deep stages. A
    ConfigError naming the size, rather than torch's padding error at the first training step."""
    import torch

    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size))
    except RuntimeError as error:
        raise ConfigError(
            f"aa_layer {aa_layer} ({architecture}) cannot take {input_size} px inputs: its downsampling runs out of "
            f"pixels in the last stages ({str(error).splitlines()[0][:120]}); raise image_size, turn on the "
            "small-image stem, or remove aa_layer"
        ) from None
    finally:
        model.train(training)


def _is_anti_aliased_resnet(name: str, infix: str) -> bool:
    match = RESNET_FAMILY.match(name.replace(infix, "", 1))
    return match is not None and name.startswith(f"{match.group(1)}{infix}")
