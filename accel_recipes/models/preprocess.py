"""What a model expects of its input: the normalisation and the resize interpolation, shared by the builders
(which decide them), the model folder (which records them) and evaluation and ``predict`` (which apply them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from accel_recipes.errors import ModelError

# timm's and torchvision's ImageNet statistics: what pretrained checkpoints that record none were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# the spellings of "bicubic" in timm's pretrained_cfg ("bicubic"), PIL's enum as an int (3) and a transformers
# image processor's ``resample`` (PILImageResampling.BICUBIC); anything else resizes bilinearly
_BICUBIC_NAMES = {"bicubic", "3", "pilimageresampling.bicubic"}


class Normalizer(torch.nn.Module):
    """uint8 NCHW batches to normalised floats, on the device: ``(x / 255 - mean) / std``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)), persistent=False)
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift


def interpolation_name(value: Any) -> str:
    """'bicubic' or 'bilinear', the two resizes the data transforms know, from a library's own spelling."""
    return "bicubic" if str(value).lower() in _BICUBIC_NAMES else "bilinear"


def pil_resample(interpolation: str) -> int:
    """PIL's resampling filter for ``interpolation``, as a transformers image processor records it."""
    from PIL import Image

    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    return int(resample)


def three_channels(values: Sequence[float], what: str, name: str) -> tuple[float, float, float]:
    """``values`` (a mean or std) as one float per RGB channel; a single value applies to all three."""
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ModelError(f"{what} of '{name}' must have 3 channels, got {values}")
    return values  # type: ignore[return-value]
