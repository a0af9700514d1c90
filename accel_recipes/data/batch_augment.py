"""The stream path's augmentations (``transforms.py``) done on whole NCHW batches on their device.

A few tensor ops per batch instead of PIL calls per image: random crop of the reflect-padded image plus flip as one
gather, Inception-style random-resized crop plus flip as one ``grid_sample`` with a per-sample affine box, resizing
with ``F.interpolate``. Random draws come from a ``torch.Generator`` on the batch's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .transforms import RESIZED_CROP_RATIO, RESIZED_CROP_SCALE

# torch has no Lanczos; bicubic is the closest kernel it has.
MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "lanczos": "bicubic"}


def resize(images: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) to float32 (N, C, size, size) in 0..255, with PIL's kernels: torch's antialiased modes are
    PIL's filters (antialiased when shrinking, and bicubic with a = -0.5 where plain bicubic has -0.75)."""
    mode = MODES[interpolation]
    smooth = mode != "nearest"
    out = F.interpolate(
        images.float(), size=(size, size), mode=mode, align_corners=False if smooth else None, antialias=smooth
    )
    return out.clamp_(0, 255) if mode == "bicubic" else out  # bicubic overshoots at edges


def _reflect(index: torch.Tensor, length: int) -> torch.Tensor:
    """Indices of a reflect-padded axis (numpy's ``mode="reflect"``: the edge is not repeated) in the unpadded one;
    valid for overhangs shorter than ``length``."""
    index = index.abs()
    return torch.where(index >= length, 2 * (length - 1) - index, index)


def draw_crop_flip(
    count: int, padding: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample crop offsets (top, left) in [0, 2 * padding] and flip flags (probability 1/2)."""
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    flip = torch.rand(count, generator=generator, device=device) < 0.5
    return top, left, flip


def crop_flip(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int
) -> torch.Tensor:
    """Each image of (N, C, H, W) padded by ``padding`` with reflection, cropped back to H x W at its (top, left),
    and mirrored where ``flip``: one gather with reflected indices, no padded copy. Same dtype out."""
    count, channels, height, width = images.shape
    rows = _reflect(top[:, None] + torch.arange(height, device=images.device) - padding, height)
    columns = left[:, None] + torch.arange(width, device=images.device) - padding
    columns = _reflect(torch.where(flip[:, None], columns.flip(1), columns), width)
    index = (rows[:, :, None] * width + columns[:, None, :]).view(count, 1, height * width)
    flat = images.reshape(count, channels, height * width)
    return flat.gather(2, index.expand(count, channels, height * width)).view(count, channels, height, width)


def draw_resized_crop_boxes(
    count: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = RESIZED_CROP_SCALE,
    ratio: tuple[float, float] = RESIZED_CROP_RATIO,
    attempts: int = 10,
) -> torch.Tensor:
    """(count, 4) int64 boxes (top, left, box_height, box_width), drawn as torchvision's
    ``RandomResizedCrop.get_params`` draws one: up to ``attempts`` (area, log-ratio) tries, the first that fits
    wins, else the whole image cut to the nearest allowed ratio, centred; then a uniform position."""
    device = generator.device
    shape = (count, attempts)
    area = height * width * torch.empty(shape, device=device).uniform_(*scale, generator=generator)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.empty(shape, device=device).uniform_(*log_ratio, generator=generator).exp()
    box_width, box_height = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (box_width > 0) & (box_width <= width) & (box_height > 0) & (box_height <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 when none does)
    box_width, box_height = box_width.gather(1, first)[:, 0], box_height.gather(1, first)[:, 0]
    position = torch.rand((count, 2), device=device, generator=generator)
    top = torch.floor(position[:, 0] * (height - box_height + 1)).clamp_(max=height - box_height)
    left = torch.floor(position[:, 1] * (width - box_width + 1)).clamp_(max=width - box_width)
    # torchvision's fallback when no attempt fits (rare): the whole image cut to the nearest allowed ratio, centred.
    # Applied with torch.where rather than an `if`, so drawing never waits on the device.
    if width / height < ratio[0]:
        fallback_height, fallback_width = round(width / ratio[0]), width
    elif width / height > ratio[1]:
        fallback_height, fallback_width = height, round(height * ratio[1])
    else:
        fallback_height, fallback_width = height, width
    found = fits.any(dim=1)
    box_height = torch.where(found, box_height, float(fallback_height))
    box_width = torch.where(found, box_width, float(fallback_width))
    top = torch.where(found, top, float((height - fallback_height) // 2))
    left = torch.where(found, left, float((width - fallback_width) // 2))
    return torch.stack([top, left, box_height, box_width], dim=1).long()


def resized_crop(
    images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Each image's box (top, left, height, width), resized to size x size and mirrored where ``flip``, as float32
    in 0..255. Samples at the output pixels' centres as PIL's ``resize(box=...)`` does (no antialiasing when a box
    is shrunk, unlike PIL; with crops of small images it is an enlargement)."""
    count, channels, height, width = images.shape
    top, left, box_height, box_width = boxes.to(torch.float32).unbind(dim=1)
    theta = torch.zeros(count, 2, 3, device=images.device)
    # Output x in [-1, 1] maps to the box's [left, left + width] in grid_sample's normalised coordinates.
    theta[:, 0, 0] = torch.where(flip, -box_width / width, box_width / width)
    theta[:, 0, 2] = (2 * left + box_width) / width - 1
    theta[:, 1, 1] = box_height / height
    theta[:, 1, 2] = (2 * top + box_height) / height - 1
    grid = F.affine_grid(theta, [count, channels, size, size], align_corners=False)
    mode = MODES[interpolation]
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 255) if mode == "bicubic" else out
