"""Per-sample transforms: PIL image in, uint8 CHW RGB tensor of the model's input size out.

No float conversion and no normalisation here: batches stay uint8 (4x less to pin and copy), and the training engine
normalises on the device as ``(x / 255 - mean) / std``. Randomness comes from torch's generator, which the
loader passes per sample, seeded from (seed, epoch, index), so augmentation is reproducible.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from accel_recipes.errors import DataError

from .augmentation import INTERPOLATIONS, Augmentation
from .policies import Policy

RESIZED_CROP_SCALE = (0.35, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


# full scale of the high-bit-depth modes PIL opens (16-bit PNG / TIFF: I;16*; 32-bit integer: I; float: F)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
FULL_SCALE_16 = 2**16 - 1
FULL_SCALE_32 = 2**31 - 1  # mode I is signed


def decode_image(encoded: dict) -> Image.Image:
    """A ``datasets`` Image cell (``{"bytes", "path"}``) as a fully loaded PIL image, or a DataError naming it.

    This is the one decoder of training (both data paths) and ``predict``. An image of more pixels than PIL's
    ``Image.MAX_IMAGE_PIXELS`` (89,478,485 by default, PIL's guard against decompression bombs) counts as
    undecodable: named in the error, or skipped and counted with ``--skip_corrupt_images true``."""
    source = encoded.get("path") or "in-memory image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused just below, not warned
            image = Image.open(io.BytesIO(encoded["bytes"])) if encoded.get("bytes") else Image.open(encoded["path"])
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            raise ValueError(
                f"{image.width} x {image.height} = {image.width * image.height:,} pixels, over PIL's limit of "
                f"{limit:,} (Image.MAX_IMAGE_PIXELS); resize it"
            )
        image.load()
    except Image.DecompressionBombError as error:  # PIL's own refusal, at twice the limit
        raise DataError(
            f"cannot decode image {source}: over PIL's limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
            f"(Image.MAX_IMAGE_PIXELS; {error}); resize it"
        ) from None
    except (OSError, ValueError, TypeError, SyntaxError) as error:
        raise DataError(f"cannot decode image {source}: {error}") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, RGBA, palette, CMYK... images as 8-bit RGB (alpha is dropped, not composited). 16-bit and 32-bit
    images are scaled to 8 bits by their mode's full scale (65535 for I;16, for I too when every value fits in
    16 bits as from a 16-bit PNG or TIFF, else 2**31 - 1 with negative values black; 1.0 for float images,
    clipped to [0, 1]), where PIL's own conversion would clip every value above 255."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _scale_to_8_bits(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _scale_to_8_bits(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255
    else:
        values = np.clip(array.astype(np.int64), 0, None)  # negative values of a signed 32-bit image are black
        wide = image.mode == "I" and values.size and values.max() > FULL_SCALE_16
        scaled = values * 255.0 / (FULL_SCALE_32 if wide else FULL_SCALE_16)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _flip(image: Image.Image, generator: torch.Generator | None) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if _coin(generator) else image


def _coin(generator: torch.Generator | None) -> bool:
    return torch.rand(1, generator=generator).item() < 0.5


def resized_crop_box(
    height: int, width: int, generator: torch.Generator | None, attempts: int = 10
) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params`` (top, left, height, width) with the same algorithm, drawn from ``generator``."""
    area = height * width
    log_ratio = torch.log(torch.tensor(RESIZED_CROP_RATIO))
    for _ in range(attempts):
        target_area = area * torch.empty(1).uniform_(*RESIZED_CROP_SCALE, generator=generator).item()
        aspect = torch.exp(
            torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=generator)
        ).item()
        crop_width = round((target_area * aspect) ** 0.5)
        crop_height = round((target_area / aspect) ** 0.5)
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = torch.randint(0, height - crop_height + 1, (1,), generator=generator).item()
            left = torch.randint(0, width - crop_width + 1, (1,), generator=generator).item()
            return top, left, crop_height, crop_width
    # fallback to a central crop, as torchvision does
    in_ratio = width / height
    if in_ratio < RESIZED_CROP_RATIO[0]:
        crop_width, crop_height = width, round(width / RESIZED_CROP_RATIO[0])
    elif in_ratio > RESIZED_CROP_RATIO[1]:
        crop_height, crop_width = height, round(height * RESIZED_CROP_RATIO[1])
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def _to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> uint8 tensor (3, size, size), RGB, as ``augment`` says for a training (``train``) or an
    evaluation image; a plain picklable object so loader workers can use it."""

    train: bool
    augment: Augmentation

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """``generator`` drives the random augmentation (torch's global one when None)."""
        image = to_rgb(image)
        crop = self.augment.augmentation
        if self.train and crop == "resized_crop":
            return self._policy(_flip(self._resized_crop(image, generator), generator), generator)
        image = self._resize(image)
        if self.train and crop == "crop_flip":
            array = np.ascontiguousarray(self._crop_flip(np.asarray(image), generator))
            return self._policy(array if self.augment.policy is None else Image.fromarray(array), generator)
        return self._policy(image, generator) if self.train else _to_tensor(image)

    @property
    def size(self) -> int:
        return self.augment.size(self.train)

    def _policy(self, image: Image.Image | np.ndarray, generator: torch.Generator | None) -> torch.Tensor:
        policy = self.augment.policy
        if policy is not None and isinstance(image, Image.Image):
            image = policy.apply(image, generator)
        return _to_tensor(image)

    def _resize(self, image: Image.Image) -> Image.Image:
        # Non-square images are stretched to a square; image-classification sets are (nearly) square.
        size = (self.size, self.size)
        return image if image.size == size else image.resize(size, INTERPOLATIONS[self.augment.interpolation])

    def _resized_crop(self, image: Image.Image, generator: torch.Generator | None) -> Image.Image:
        top, left, height, width = resized_crop_box(image.height, image.width, generator)
        box = (left, top, left + width, top + height)
        return image.resize((self.size, self.size), INTERPOLATIONS[self.augment.interpolation], box=box)

    def _crop_flip(self, array: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
        # Random crop of the reflect-padded image (the standard CIFAR augmentation), then a random horizontal flip.
        pad = self.augment.crop_padding
        if pad > 0:
            array = np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        top, left = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
        array = array[top : top + self.size, left : left + self.size]
        return array[:, ::-1] if _coin(generator) else array


def make_transform(
    train: bool,
    augmentation: str,
    input_size: int,
    native_size: int,
    crop_padding: int = 4,
    interpolation: str = "bilinear",
    policy: Policy | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """``ImageTransform(train, Augmentation(...))`` from the ``Augmentation``'s fields, for callers that have no
    resolved one (predict, tests). A picklable callable: PIL image -> uint8 tensor (3, input_size, input_size), RGB.

    - train + ``crop_flip``: resize to ``input_size`` when the image has another size, pad by ``crop_padding`` with
      reflection, crop ``input_size`` at a random offset, flip horizontally with probability 1/2.
    - train + ``resized_crop``: Inception-style random-resized crop (area 35-100% of the image, aspect 3/4-4/3)
      resized to ``input_size`` in one step, then the random flip. 35% rather than torchvision's 8% because
      small images (32 px) leave little to crop.
    - train + ``none``, and every eval transform: resize to ``input_size`` when the image has another size
      (a 32 px image goes straight to 224 px for a pretrained backbone); no crop, deterministic.
    - train + ``policy``: torchvision's TrivialAugmentWide / RandAugment after the above, seeded from ``generator``.
    ``native_size`` (the dataset's usual size) is kept for reference; resizing is decided per image, so
    datasets whose images vary in size still give equal-sized tensors.
    """
    augment = Augmentation(augmentation, input_size, native_size, crop_padding, interpolation, policy)
    return ImageTransform(train, augment)
