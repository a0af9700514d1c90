"""Choose the train, validation and test splits, hold validation out of train when there is none, truncate.

The test split is only found and returned here: nothing in this package looks at it to choose anything.
Every operation keeps its index mapping in memory, so nothing is written next to a user's ``save_to_disk`` folder.
"""

from __future__ import annotations

import logging
import math

import datasets
import numpy as np

from accel_recipes.errors import DataError

logger = logging.getLogger(__name__)

VALIDATION_SPLITS = ("validation", "valid", "val")
TEST_SPLITS = ("test",)


def pick_splits(
    available: list[str],
    dataset: str,
    train: str = "train",
    validation: str | None = None,
    test: str | None = None,
) -> dict[str, str]:
    """Map each role (``train``, and ``validation``/``test`` when found) to a split name of the source.

    A name given by the user must exist; otherwise validation is the first of validation/valid/val and test is
    ``test``. A role without a split is left out (validation is then held out of train by ``hold_out``).
    """
    flags = {"train": train, "validation": validation, "test": test}
    for role, name in flags.items():
        if name is not None and name not in available:
            raise DataError(
                f"dataset '{dataset}' has no split '{name}'; its splits are {available}; "
                f"pass --{role}_split_name with one of them"
            )
    named = {role: name for role, name in flags.items() if name is not None}
    if len(set(named.values())) != len(named):
        raise DataError(
            f"dataset '{dataset}': the same split is given for two roles {named}; "
            "pass different --train_split_name, --validation_split_name and --test_split_name"
        )
    roles = dict(named)
    taken = set(named.values())  # e.g. --validation_split_name test: "test" is then not also detected as test
    for role, candidates in (("validation", VALIDATION_SPLITS), ("test", TEST_SPLITS)):
        if role not in roles:
            found = next((name for name in candidates if name in available and name not in taken), None)
            if found is not None:
                roles[role] = found
                taken.add(found)
    return roles


def stratified_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` seeded random positions of ``labels`` whose class mix matches the whole (largest remainder)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * count / len(labels)
    take = np.floor(share).astype(np.int64)
    remainder = share - take + rng.random(len(classes)) * 1e-9  # tiny jitter: ties go to seeded random classes
    take[np.argsort(-remainder)[: count - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def hold_out(
    train: datasets.Dataset, percentage: float, seed: int, dataset: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hold ``percentage`` % of ``train`` out as validation: seeded, stratified by label, disjoint.

    Done with explicit indices rather than ``Dataset.train_test_split``, which (datasets 5.x) cannot keep its
    index mapping in memory for a dataset loaded from disk and would write cache files into the user's folder.
    """
    if percentage <= 0:
        raise DataError(
            f"dataset '{dataset}' has no validation split and validation_split_percentage is {percentage}; "
            "set --validation_split_percentage above 0 or pass --validation_split_name"
        )
    if len(train) < 2:
        raise DataError(
            f"dataset '{dataset}' has {len(train)} training example(s), too few to hold out a validation set"
        )
    count = min(max(1, math.ceil(len(train) * percentage / 100)), len(train) - 1)
    held = stratified_indices(labels_of(train), count, seed)
    kept = np.setdiff1d(np.arange(len(train)), held, assume_unique=True)
    logger.info("held out %d of %d training examples of '%s' as validation (seed %d)", count, len(train), dataset, seed)
    return train.select(kept, keep_in_memory=True), train.select(held, keep_in_memory=True)


def truncate(split: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """At most ``max_samples`` rows: a seeded random subset kept in the source's order (so a truncated set still
    has every class, even when the source is sorted by class as image folders are)."""
    if max_samples is None or max_samples >= len(split):
        return split
    if max_samples < 1:
        raise DataError(f"max samples must be at least 1, got {max_samples}; unset it to use the whole split")
    chosen = np.sort(np.random.default_rng(seed).permutation(len(split))[:max_samples])
    return split.select(chosen, keep_in_memory=True)


def labels_of(split: datasets.Dataset) -> np.ndarray:
    """The label column as an int64 array, read through Arrow in one call (datasets 5.x's ``split["label"]`` is a
    lazy column that formats row by row: seconds for 60,000 rows)."""
    if len(split) == 0:
        return np.zeros(0, dtype=np.int64)
    column = split.select_columns(["label"]).with_format("arrow")[:]["label"]
    return np.asarray(column.to_numpy(), dtype=np.int64)


def is_unlabeled(split: datasets.Dataset) -> bool:
    """True for a split whose labels are all -1, as Hub datasets mark hidden test labels."""
    labels = labels_of(split)
    return len(labels) > 0 and bool((labels == -1).all())


def check_split(split: datasets.Dataset, role: str, num_classes: int, dataset: str) -> None:
    """The split has rows, and every label is a class index in [0, num_classes)."""
    if len(split) == 0:
        raise DataError(
            f"the {role} split of dataset '{dataset}' is empty; pass --{role}_split_name with a split that has data"
        )
    labels = labels_of(split)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        index = int(bad[0])
        raise DataError(
            f"the {role} split of dataset '{dataset}' has label {int(labels[index])} at index {index} "
            f"({len(bad)} such rows), outside [0, {num_classes}); fix the labels or pass --label_column_name"
        )
