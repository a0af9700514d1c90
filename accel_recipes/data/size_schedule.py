"""The resolution schedule (``train_img_sizes``, ``train_size_schedule``): which square size each optimizer update
trains at, and the resize of a whole batch to it on its device.

The size is a pure function of (seed, update): every micro-batch of an update, every process and a resumed run
get the same size, whatever the worker count. Both data paths make training batches at the model's input size
and the batch is resized on the device just before the step, as Composer's ``progressive_resizing`` does,
rather than in per-sample transforms: the loader workers run ahead of the step (prefetch) and would need to
know the update their batch lands in, and a device resize of a batch costs one ``interpolate`` call.

- ``progressive``: the run's updates split into as many equal phases as there are sizes, smallest first, so the
  run ends at the input size (FFCV's and fastai's step schedule; timm's ``progressive`` instead moves a random
  per-batch choice across the sizes by epoch, and keeps a tenth of random choices to the end);
- ``constant``: timm's meaning, each update's size drawn uniformly from the list, seeded by (seed, update).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from accel_recipes.errors import ConfigError

from .augmentation import Augmentation
from .batch_augment import resize

SCHEDULES = ("progressive", "constant")


@dataclass(frozen=True)
class SizeSchedule:
    """``sizes`` (ascending, the last the model's input size) over ``total_updates`` updates."""

    sizes: tuple[int, ...]
    schedule: str
    total_updates: int
    seed: int = 0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train_size_schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not self.sizes or self.total_updates < 1:
            raise ConfigError(f"a size schedule needs sizes and updates, got {self.sizes} over {self.total_updates}")
        if self.schedule == "progressive" and self.total_updates < len(self.sizes):
            raise ConfigError(
                f"a progressive schedule of {len(self.sizes)} sizes {list(self.sizes)} needs at least one update per "
                f"size, and the run has {self.total_updates}; train longer or give fewer train_img_sizes"
            )

    @classmethod
    def of(cls, augment: Augmentation | None, total_updates: int, seed: int) -> SizeSchedule | None:
        """The run's schedule, or None when it trains every update at the input size."""
        if augment is None or len(augment.train_img_sizes) < 2:
            return None
        return cls(augment.train_img_sizes, augment.train_size_schedule, total_updates, seed, augment.interpolation)

    def phase_at(self, update: int) -> int:
        """The index in ``sizes`` of update ``update`` (0-based: the update being accumulated)."""
        if self.schedule == "constant":
            # Python's hash of a tuple of ints is the same in every process and run (ints are not hash-randomised)
            return random.Random(hash((self.seed, update))).randrange(len(self.sizes))
        return min(update * len(self.sizes) // self.total_updates, len(self.sizes) - 1)

    def size_at(self, update: int) -> int:
        return self.sizes[self.phase_at(update)]

    def phase_updates(self, phase: int) -> range:
        """The updates of progressive phase ``phase``."""
        count, total = len(self.sizes), self.total_updates
        return range(-(-phase * total // count), -(-(phase + 1) * total // count))

    def resize(self, images: torch.Tensor, update: int) -> torch.Tensor:
        """``images`` (N, C, H, W) at update ``update``'s size: as they are when they have it, else float32 in
        0..255 resized with the run's interpolation (antialiased, PIL's kernels; ``batch_augment.resize``)."""
        size = self.size_at(update)
        if images.shape[-2:] == (size, size):
            return images
        return resize(images, size, self.interpolation)


def check_sizes(augment: Augmentation) -> None:
    """The schedule must end at the model's input size: the size the run ends at is the one it is evaluated,
    exported and compared at."""
    sizes = augment.train_img_sizes
    if sizes and sizes[-1] != augment.input_size:
        raise ConfigError(
            f"'train_img_sizes' {list(sizes)} must end at the model's input size {augment.input_size}; "
            f"append {augment.input_size}, or set image_size to {sizes[-1]}"
        )
