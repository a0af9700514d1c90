"""The one augmentation value of a run: every setting that decides how a training or evaluation image is made,
resolved once and handed whole to both data paths (``transforms.ImageTransform`` for the stream path,
``resident.ResidentLoader`` for the resident one), as timm's ``resolve_data_config`` -> ``create_transform(**cfg)``.

A new switch is one field here, one line in ``resolve`` and its use in the two paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from accel_recipes.errors import DataError

from ..config import DataArguments
from .policies import POLICIES, Policy, policy_of

AUGMENTATIONS = ("crop_flip", "resized_crop", "none")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Augmentation:
    """How images become batches.

    - ``augmentation``: the training crop (crop_flip, resized_crop or none), ``auto`` already made concrete;
    - ``input_size``: the model's training input (the last size of a resolution schedule);
    - ``native_size``: the dataset's usual size (for reference; resizing is decided per image);
    - ``crop_padding``: crop_flip's reflect padding; ``interpolation``: every resize's kernel;
    - ``policy``: trivial_augment / rand_augment after the crop, on training images only;
    - ``eval_size``: the size validation, test and the exported folder use (None: ``input_size``);
    - ``train_img_sizes`` / ``train_size_schedule``: the resolution schedule (``size_schedule.SizeSchedule``);
      empty: every update at ``input_size``.
    """

    augmentation: str
    input_size: int
    native_size: int | None = None
    crop_padding: int = 4
    interpolation: str = "bilinear"
    policy: Policy | None = None
    eval_size: int | None = None
    train_img_sizes: tuple[int, ...] = ()
    train_size_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise DataError(f"augmentation must be one of {list(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.input_size < 1:
            raise DataError(f"input size must be a positive number of pixels, got {self.input_size}")
        if self.crop_padding < 0:
            raise DataError(f"crop_padding must be 0 or more, got {self.crop_padding}")
        if self.eval_size is not None and self.eval_size < 1:
            raise DataError(f"eval_image_size must be a positive number of pixels, got {self.eval_size}")

    @property
    def eval_input_size(self) -> int:
        """The size of every evaluation image (validation, test, predict, the exported folder)."""
        return self.eval_size or self.input_size

    def size(self, train: bool) -> int:
        """The size a loader's per-image transform makes: ``input_size`` for training (a schedule resizes whole
        batches after that), ``eval_input_size`` for evaluation."""
        return self.input_size if train else self.eval_input_size


def resolve_augmentation(data: DataArguments, pretrained: bool, input_size: int, native_size: int) -> str:
    """``data.augmentation``'s crop, with ``auto`` made concrete: crop_flip when training from scratch at the images'
    native size (the CIFAR recipe), else resized_crop (pretrained backbones, or images resized to the input). A
    policy (trivial_augment, rand_augment) comes after auto's crop (``Policy``)."""
    choice = data.augmentation
    if choice == "auto" or choice in POLICIES:
        return "crop_flip" if input_size == native_size and not pretrained else "resized_crop"
    if choice not in AUGMENTATIONS:
        raise DataError(f"augmentation must be one of {['auto', *AUGMENTATIONS, *POLICIES]}, got {choice!r}")
    return choice


def resolve(
    data: DataArguments, input_size: int, interpolation: str, pretrained: bool, native_size: int
) -> Augmentation:
    """The run's ``Augmentation`` from its data arguments and the model's input (size, interpolation, pretrained)."""
    return Augmentation(
        augmentation=resolve_augmentation(data, pretrained, input_size, native_size),
        input_size=input_size,
        native_size=native_size,
        crop_padding=data.crop_padding,
        interpolation=interpolation,
        policy=policy_of(data.augmentation, data.rand_augment_magnitude, data.rand_augment_num_ops),
        eval_size=data.eval_image_size,
        train_img_sizes=tuple(data.train_img_sizes or ()),
        train_size_schedule=data.train_size_schedule,
    )
