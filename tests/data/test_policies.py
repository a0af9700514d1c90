"""The resident path's per-image policy ops (``data.policies``) against torchvision's own ops on PIL images (the
stream path), one image at a time: the same pixels, within one level of uint8 rounding for the colour ops; for the
geometric ones (nearest sampling, black fill) all but the few points PIL's fixed-point arithmetic rounds the other
way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as torchvision_autoaugment

from accel_recipes.data import policies
from accel_recipes.data.policies import OPS, Policy

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
CASES = [
    ("ShearX", [0.3, -0.99, 0.15]),
    ("ShearY", [0.09, -0.5]),
    ("TranslateX", [5.7, -12.2, 32.0]),
    ("TranslateY", [3.0, -7.0]),
    ("Rotate", [30.0, -135.0]),
    ("Brightness", [0.5, -0.9]),
    ("Color", [0.5, -0.7]),
    ("Contrast", [0.6, -0.6]),
    ("Sharpness", [0.9, -0.9]),
    ("Posterize", [2.0, 5.0, 8.0]),
    ("Solarize", [100.0, 0.0, 255.0]),
    ("AutoContrast", [0.0]),
    ("Equalize", [0.0]),
]


@pytest.mark.parametrize(("name", "magnitudes"), CASES, ids=[name for name, _ in CASES])
def test_each_batched_op_gives_torchvisions_pixels_image_by_image(name, magnitudes):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (len(magnitudes), 3, 28, 32), dtype=torch.uint8, generator=generator)
    images[0, :, :4] = 250  # some bright and flat areas, so autocontrast and equalize have work
    magnitudes = torch.tensor(magnitudes)  # float32, as torchvision's magnitude bins hold them
    out = OPS[name](images.float(), magnitudes)
    for index, magnitude in enumerate(magnitudes.tolist()):
        pil = Image.fromarray(images[index].permute(1, 2, 0).numpy())
        result = torchvision_autoaugment._apply_op(pil, name, magnitude, InterpolationMode.NEAREST, None)
        expected = torch.from_numpy(np.asarray(result).copy()).permute(2, 0, 1).float()
        if name in GEOMETRIC:  # PIL's fixed-point affine lands some points on the neighbouring pixel
            assert (out[index] != expected).any(dim=0).float().mean() < 0.05, (name, magnitude)
        else:
            assert (out[index] - expected).abs().max() <= 1, (name, magnitude)


def test_every_image_of_a_batch_draws_its_own_op():
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = Policy("trivial_augment").apply_batch(images, torch.Generator().manual_seed(2))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    changed = (out != images.float()).flatten(1).any(dim=1)
    assert 0.5 < changed.float().mean() < 1  # identity (1 op in 14) and no-op draws leave some images alone
    again = Policy("trivial_augment").apply_batch(images, torch.Generator().manual_seed(2))
    assert torch.equal(out, again)


def test_the_accelerators_whole_batch_ops_give_the_cpus_per_subset_result():
    images = torch.randint(0, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(3)).float()
    names = ["Identity", *OPS]
    op = torch.arange(64) % len(names)
    magnitude = torch.linspace(-0.5, 0.9, 64).where(op < 10, torch.linspace(2, 200, 64).round())
    subset = policies._apply_ops(images, names, op, magnitude, by_subset=True)
    whole = policies._apply_ops(images, names, op, magnitude, by_subset=False)
    assert torch.equal(subset, whole)
