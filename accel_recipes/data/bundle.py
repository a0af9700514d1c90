"""``build_data``: from ``RecipeArguments`` to standard train/validation/test datasets and their statistics."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import datasets
import numpy as np

from accel_recipes.errors import DataError

from ..config import DataArguments
from .columns import standardize_columns
from .sources import load_source
from .splits import check_split, hold_out, is_unlabeled, pick_splits, truncate
from .transforms import decode_image, to_rgb

logger = logging.getLogger(__name__)

STATISTICS_SAMPLES = 5000
STATISTICS_MAX_SIDE = 128  # larger images are measured on a thumbnail: the mean barely moves, decoding is 10x faster


@dataclass
class DataBundle:
    """Everything the engine needs from the data: three splits with columns ``image`` and ``label``, and facts."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None
    label_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    source: str  # how it was read, for the log
    name: str = ""  # the dataset_name it was loaded from
    held_out: str = ""  # how validation was held out of a stream's train split (said in the log and the card)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def image_statistics(
    train: datasets.Dataset, seed: int, max_samples: int = STATISTICS_SAMPLES
) -> tuple[tuple[float, float, float], tuple[float, float, float], int]:
    """Per-channel RGB mean and std in [0, 1] over the pixels of up to ``max_samples`` seeded training images, and
    their most common height."""
    count = min(len(train), max_samples)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    total, total_sq, pixels = np.zeros(3), np.zeros(3), 0
    heights: Counter[int] = Counter()
    images = train.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    for start in range(0, count, 256):
        for encoded in images[chosen[start : start + 256]]["image"]:
            try:
                image = decode_image(encoded)
            except DataError:
                continue  # reported (or skipped) with its sample index when the loader meets it
            heights[image.height] += 1
            image = to_rgb(image)  # before the thumbnail: 16-bit images scaled, as training decodes them
            if max(image.size) > STATISTICS_MAX_SIDE:
                image.thumbnail((STATISTICS_MAX_SIDE, STATISTICS_MAX_SIDE))
            array = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
            total += array.sum(0)
            total_sq += (array**2).sum(0)
            pixels += len(array)
    if not pixels:
        raise DataError("none of the sampled training images could be decoded; check the dataset's image column")
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant channel must not become a division by zero downstream
    return tuple(mean.tolist()), tuple(std.tolist()), heights.most_common(1)[0][0]


def build_data(data: DataArguments, seed: int, cache_dir: str | None = None) -> DataBundle:
    """Load ``data.dataset_name`` (Hub downloads cached in ``cache_dir``), standardise its columns, choose the
    splits, truncate, measure.

    Validation comes from the named or detected split, else it is held out of train (seeded, stratified) before
    ``max_train_samples`` truncates, so the validation set does not depend on the truncation. ``max_eval_samples``
    truncates validation and test. The test split is returned untouched otherwise. ``seed`` fixes the held-out
    split, the truncation and the sample the image statistics are measured on.
    """
    if data.streaming:
        from .streaming import build_stream_data  # the stream's own module: nothing of it is read whole

        return build_stream_data(data, seed, cache_dir)
    name = data.dataset_name
    source_splits, source = load_source(name, data.dataset_config_name, cache_dir)
    roles = pick_splits(
        list(source_splits), name, data.train_split_name, data.validation_split_name, data.test_split_name
    )
    splits, label_names = standardize_columns(
        {role: source_splits[split] for role, split in roles.items()},
        name,
        data.image_column_name,
        data.label_column_name,
    )
    if "test" in splits and data.test_split_name is None and is_unlabeled(splits["test"]):
        logger.warning("test split '%s' of '%s' has no labels (all -1); it is not used", roles["test"], name)
        del splits["test"]
    for role, split in splits.items():
        check_split(split, role, len(label_names), name)
    if "validation" not in splits:
        splits["train"], splits["validation"] = hold_out(splits["train"], data.validation_split_percentage, seed, name)
    train = truncate(splits["train"], data.max_train_samples, seed)
    validation = truncate(splits["validation"], data.max_eval_samples, seed)
    test = truncate(splits["test"], data.max_eval_samples, seed) if "test" in splits else None
    mean, std, native_size = image_statistics(train, seed)
    logger.info(
        "data %s: %d train, %d validation, %s test images, %d classes, %d px",
        source,
        len(train),
        len(validation),
        len(test) if test is not None else "no",
        len(label_names),
        native_size,
    )
    return DataBundle(train, validation, test, label_names, mean, std, native_size, source, name)
