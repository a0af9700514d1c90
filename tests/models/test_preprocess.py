"""preprocess: the Normalizer of evaluation and predict, and the library spellings of the interpolation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from accel_recipes.models import ModelError
from accel_recipes.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalizer,
    interpolation_name,
    pil_resample,
    three_channels,
)


def test_normalizer_maps_uint8_batches_to_normalised_floats():
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    normalised = Normalizer(mean, std)(images)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert normalised.dtype == torch.float32 and normalised.shape == images.shape
    assert torch.allclose(normalised, expected, atol=1e-6)


def test_normalizer_extremes_and_state():
    normalizer = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
    black, white = torch.zeros(1, 3, 1, 1, dtype=torch.uint8), torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    assert torch.allclose(normalizer(black).flatten(), -mean / std, atol=1e-6)
    assert torch.allclose(normalizer(white).flatten(), (1 - mean) / std, atol=1e-6)
    assert normalizer.state_dict() == {}  # buffers that follow .to(device) but never land in a checkpoint
    assert {name for name, _ in normalizer.named_buffers()} == {"scale", "shift"}


@pytest.mark.parametrize(
    ("value", "name"),
    [("bicubic", "bicubic"), ("BICUBIC", "bicubic"), (3, "bicubic"), ("bilinear", "bilinear"), (2, "bilinear")],
)
def test_interpolation_name(value, name):
    assert interpolation_name(value) == name


def test_interpolation_name_reads_a_transformers_resample():
    from transformers.image_utils import PILImageResampling

    assert interpolation_name(PILImageResampling.BICUBIC) == "bicubic"
    assert interpolation_name(PILImageResampling.BILINEAR) == "bilinear"


def test_pil_resample_round_trips_through_interpolation_name():
    assert pil_resample("bicubic") == int(Image.Resampling.BICUBIC)
    assert pil_resample("bilinear") == int(Image.Resampling.BILINEAR)
    assert interpolation_name(pil_resample("bicubic")) == "bicubic"


def test_three_channels():
    assert three_channels([0.5], "mean", "m") == (0.5, 0.5, 0.5)
    assert three_channels((0.1, 0.2, 0.3), "mean", "m") == (0.1, 0.2, 0.3)
    with pytest.raises(ModelError, match="std of 'm' must have 3 channels"):
        three_channels((0.1, 0.2), "std", "m")
