"""Augmentation policies (``augmentation: trivial_augment`` / ``rand_augment``): torchvision's
``TrivialAugmentWide`` and ``RandAugment``, after the crop and flip.

- Stream path (``Policy.apply``): torchvision's own transform on the PIL image, its draws seeded from the sample's
  generator (torchvision draws from torch's global generator, so it runs inside ``torch.random.fork_rng``).
- Resident path (``Policy.apply_batch``): the same ops, op choice and magnitude tables on whole (N, C, H, W) batches
  on the device, each image with its own op and magnitude. Written here because torchvision's tensor ops take one
  magnitude per call (one op for the whole batch) and no batch library draws per-sample ops of these two policies.
  On an accelerator every op is computed for the whole batch and each image keeps its own op's result
  (``torch.where``), so nothing waits on the device; on the CPU each op runs on the images that drew it. The op
  table and the magnitude bins are torchvision's (``_augmentation_space``); the geometry is torchvision's
  inverse-affine convention, with nearest sampling and a black fill (its defaults).
  One known difference from PIL: where a source point falls on or within rounding of a pixel border, PIL (which
  accumulates the coordinate along each row, in fixed point for nearest sampling) can pick the neighbouring pixel;
  the device path takes the exact coordinate's. It touches a few percent of pixels at large rotations, and whole
  rows for RandAugment magnitude 20, whose shear is exactly 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import RandAugment, TrivialAugmentWide
from torchvision.transforms.v2 import functional as TF

POLICIES = ("trivial_augment", "rand_augment")
NUM_BINS = 31  # torchvision's default magnitude bins for both policies
GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass(frozen=True)
class Policy:
    """``name`` is trivial_augment or rand_augment; ``magnitude`` (0..30) and ``num_ops`` are RandAugment's."""

    name: str
    magnitude: int = 9
    num_ops: int = 2

    def torchvision(self) -> TrivialAugmentWide | RandAugment:
        if self.name == "trivial_augment":
            return TrivialAugmentWide(num_magnitude_bins=NUM_BINS)
        return RandAugment(num_ops=self.num_ops, magnitude=self.magnitude, num_magnitude_bins=NUM_BINS)

    # ---- stream path: one PIL image ----------------------------------------------------------------------------
    def apply(self, image: Image.Image, generator: torch.Generator | None) -> Image.Image:
        """torchvision's policy on ``image``, its random draws seeded from ``generator``."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.torchvision()(image)

    # ---- resident path: a batch on its device ------------------------------------------------------------------
    def apply_batch(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image of (N, C, H, W) (uint8, or float in 0..255) through its own draw of the policy: float32
        0..255 out, on the same device, every draw from ``generator``."""
        count, _, height, width = images.shape
        device = images.device
        policy = self.torchvision()
        if self.name == "trivial_augment":
            space = policy._augmentation_space(NUM_BINS)
        else:
            space = policy._augmentation_space(NUM_BINS, (height, width))
        names = list(space)
        table = torch.stack(
            [values.float() if values.ndim else torch.zeros(NUM_BINS) for values, _ in space.values()]
        ).to(device)
        signed = torch.tensor([is_signed for _, is_signed in space.values()], device=device)
        images = images.float()
        for _ in range(1 if self.name == "trivial_augment" else self.num_ops):
            op = torch.randint(0, len(names), (count,), generator=generator, device=device)
            if self.name == "trivial_augment":
                level = torch.randint(0, NUM_BINS, (count,), generator=generator, device=device)
            else:
                level = torch.full((count,), self.magnitude, device=device)
            negate = signed[op] & (torch.randint(0, 2, (count,), generator=generator, device=device) == 1)
            magnitude = torch.where(negate, -table[op, level], table[op, level])
            images = _apply_ops(images, names, op, magnitude)
        return images


def _apply_ops(
    images: torch.Tensor, names: list[str], op: torch.Tensor, magnitude: torch.Tensor, by_subset: bool | None = None
) -> torch.Tensor:
    """Each image through op ``op[i]`` with ``magnitude[i]``. On an accelerator every op runs on the whole batch and
    each image keeps its own op's result (no host-device sync); on the CPU, where there is nothing to wait for,
    each op runs only on the images that drew it (13 times less work)."""
    if by_subset if by_subset is not None else images.device.type == "cpu":
        out = images.clone()
        for index, name in enumerate(names):
            chosen = (op == index).nonzero().flatten()
            if name != "Identity" and len(chosen):
                out[chosen] = OPS[name](images[chosen], magnitude[chosen])
        return out
    out = images
    for index, name in enumerate(names):
        if name == "Identity":
            continue
        result = OPS[name](images, magnitude)
        out = torch.where((op == index)[:, None, None, None], result, out)
    return out


# ---- the ops: (N, C, H, W) float 0..255 and a per-image magnitude, as torchvision's _apply_op uses them ----------


def _affine(
    images: torch.Tensor,
    angle: torch.Tensor,
    shear: tuple[torch.Tensor, torch.Tensor],
    translate: tuple[torch.Tensor, torch.Tensor],
    top_left_center: bool,
) -> torch.Tensor:
    """torchvision's ``affine`` per image (its inverse matrix of rotation ``angle``, shear and translation, in
    degrees and pixels, about the image centre or the top-left corner), black outside. Nearest sampling as PIL does
    it (the stream path): the pixel holding the source point, in float64 as PIL computes it, where grid_sample's
    nearest rounds half-way points to even and moves the many exact ties of shears like 0.2 by a pixel."""
    count, channels, height, width = images.shape
    device = images.device
    rot = torch.deg2rad(angle.double())
    shear_x, shear_y = torch.deg2rad(shear[0].double()), torch.deg2rad(shear[1].double())
    a = torch.cos(rot - shear_y) / torch.cos(shear_y)
    b = -torch.cos(rot - shear_y) * torch.tan(shear_x) / torch.cos(shear_y) - torch.sin(rot)
    c = torch.sin(rot - shear_y) / torch.cos(shear_y)
    d = -torch.sin(rot - shear_y) * torch.tan(shear_x) / torch.cos(shear_y) + torch.cos(rot)
    # pixel coordinates from the top-left corner; the transform's centre as torchvision places it for PIL images
    cx, cy = (0.0, 0.0) if top_left_center else (width * 0.5, height * 0.5)
    tx, ty = translate[0].double(), translate[1].double()
    m00, m01, m10, m11 = d, -b, -c, a  # the inverse of [[a, b], [c, d]] (its determinant is 1: no scaling)
    m02 = m00 * (-cx - tx) + m01 * (-cy - ty) + cx
    m12 = m10 * (-cx - tx) + m11 * (-cy - ty) + cy
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float64) + 0.5,
        torch.arange(width, device=device, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    view = (-1, 1, 1)
    source_x = (m00.view(view) * xs + m01.view(view) * ys + m02.view(view)).floor().long()  # (N, H, W)
    source_y = (m10.view(view) * xs + m11.view(view) * ys + m12.view(view)).floor().long()
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    index = (source_y.clamp(0, height - 1) * width + source_x.clamp(0, width - 1)).view(count, 1, height * width)
    flat = images.reshape(count, channels, height * width)
    out = flat.gather(2, index.expand(count, channels, height * width)).view(count, channels, height, width)
    return torch.where(inside[:, None], out, torch.zeros((), dtype=out.dtype, device=device))


def _zero(magnitude: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(magnitude, dtype=torch.float64)


def _shear_x(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    degrees = torch.rad2deg(torch.atan(magnitude.double()))
    zero = _zero(magnitude)
    return _affine(images, zero, (degrees, zero), (zero, zero), top_left_center=True)


def _shear_y(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    degrees = torch.rad2deg(torch.atan(magnitude.double()))
    zero = _zero(magnitude)
    return _affine(images, zero, (zero, degrees), (zero, zero), top_left_center=True)


def _translate_x(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    zero = _zero(magnitude)
    return _affine(images, zero, (zero, zero), (magnitude.trunc(), zero), top_left_center=False)


def _translate_y(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    zero = _zero(magnitude)
    return _affine(images, zero, (zero, zero), (zero, magnitude.trunc()), top_left_center=False)


def _rotate(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    zero = _zero(magnitude)
    return _affine(images, -magnitude, (zero, zero), (zero, zero), top_left_center=False)  # rotate inverts the angle


def _gray(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(GRAY, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp(0, 255).floor()


def _brightness(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    return _blend(images, torch.zeros_like(images), 1 + magnitude)


def _color(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images).expand_as(images), 1 + magnitude)


def _contrast(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean.expand_as(images), 1 + magnitude)


def _sharpness(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    # PIL's SMOOTH kernel; border pixels are kept, as PIL and torchvision do
    kernel = torch.ones(3, 3, device=images.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(images.shape[1], 1, 3, 3)
    smooth = F.conv2d(images, kernel, groups=images.shape[1]).round()
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(images, degenerate, 1 + magnitude)


def _posterize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    step = torch.pow(2.0, 8 - magnitude.trunc().clamp(0, 8)).view(-1, 1, 1, 1)  # bits kept, in 0..8
    return torch.floor(images / step) * step


def _solarize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    return torch.where(images >= magnitude.view(-1, 1, 1, 1), 255 - images, images)


def _autocontrast(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    # Not torchvision's tensor autocontrast: it truncates the channel's maximum to 254, where PIL (the stream
    # path) gives 255. Each channel stretched to 0..255; a flat channel is kept.
    low, high = images.amin(dim=(2, 3), keepdim=True), images.amax(dim=(2, 3), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, 1.0, 255 / (high - low).clamp(min=1))
    low = torch.where(flat, 0.0, low)
    return ((images - low) * scale + 1e-3).floor().clamp(0, 255)


def _equalize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    return TF.equalize(images.round().to(torch.uint8)).float()


OPS = {
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
    "Brightness": _brightness,
    "Color": _color,
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
}


def policy_of(name: str, magnitude: int = 9, num_ops: int = 2) -> Policy | None:
    """The policy ``augmentation`` names, or None for the plain augmentations."""
    return Policy(name, magnitude, num_ops) if name in POLICIES else None
