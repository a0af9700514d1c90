"""``data_pipeline: synthetic``: one batch of training images on the device, served as every batch of an epoch."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import GradientState

from accel_recipes.data import DataError, SyntheticLoader, first_batch


def split_of(count: int, size: int = 16, corrupt: tuple[int, ...] = ()) -> datasets.Dataset:
    """``count`` images whose every pixel is 10 * index (so a batch says which rows it holds), labels index % 3;
    rows in ``corrupt`` hold bytes that are not an image."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    images = [
        {"bytes": b"not an image", "path": None}
        if index in corrupt
        else np.full((size, size, 3), 10 * index, dtype=np.uint8)
        for index in range(count)
    ]
    return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(count)]}, features=features)


def test_first_batch_is_the_splits_first_images_at_the_input_size():
    images, labels = first_batch(split_of(10), batch_size=4, size=24)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 24, 24)  # resized to the model's input
    assert [int(image[0, 0, 0]) for image in images] == [0, 10, 20, 30] and labels.tolist() == [0, 1, 2, 0]
    assert labels.dtype == torch.int64


def test_first_batch_fills_from_a_short_split_and_skips_undecodable_images():
    images, labels = first_batch(split_of(3, corrupt=(1,)), batch_size=5, size=16)
    assert [int(image[0, 0, 0]) for image in images] == [0, 20, 0, 20, 0] and labels.tolist() == [0, 2, 0, 2, 0]
    with pytest.raises(DataError, match="none of the first 2 training images could be decoded"):
        first_batch(split_of(2, corrupt=(0, 1)), batch_size=4, size=16)


def test_every_batch_is_the_very_same_batch_on_the_device():
    images, labels = first_batch(split_of(8), batch_size=8, size=16)
    loader = SyntheticLoader(images, labels, 5)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    assert torch.equal(batches[0][0], images) and torch.equal(batches[0][1], labels)
    assert all(batch[0] is batches[0][0] and batch[1] is batches[0][1] for batch in batches)  # no per-batch work


def test_epoch_end_reaches_accelerate_and_resume_skips_batches():
    loader = SyntheticLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 3)
    state = GradientState()
    ends = []
    for _ in loader:
        ends.append(state.end_of_dataloader)
    assert ends == [False, False, True]  # accumulate() syncs at the end of each epoch
    assert len(list(loader.skip_first_batches(2))) == 1 and len(list(loader)) == 3  # a view; the loader is unchanged


def test_bad_batches_are_refused_with_the_values():
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(DataError, match=r"got images of torch.float32 \(4, 3, 8, 8\) and 4 labels"):
        SyntheticLoader(torch.zeros(4, 3, 8, 8), labels, 3)
    with pytest.raises(DataError, match=r"got images of torch.uint8 \(4, 3, 8, 8\) and 2 labels"):
        SyntheticLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels[:2], 3)
    with pytest.raises(DataError, match="num_batches >= 0, got -1"):
        SyntheticLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels, -1)
    empty = SyntheticLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels, 0)
    assert list(empty) == []  # too few samples for a batch: the engine says so
