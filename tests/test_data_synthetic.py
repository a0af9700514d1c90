"""``data_pipeline: synthetic``: one random batch on the device, served as every batch of an epoch."""

from __future__ import annotations

import pytest
import torch
from accelerate.state import GradientState

from accel_recipes.data import DataError, SyntheticLoader


def test_every_batch_is_the_same_seeded_random_batch():
    loader = SyntheticLoader(8, 5, 32, 10, seed=3)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32) and labels.shape == (8,)
    assert int(labels.min()) >= 0 and int(labels.max()) < 10 and images.float().std() > 50  # noise over 0..255
    assert all(batch[0] is images and batch[1] is labels for batch in batches)  # no per-batch work at all
    again = SyntheticLoader(8, 5, 32, 10, seed=3)
    assert torch.equal(again.images, images) and torch.equal(again.labels, labels)  # every process the same
    assert not torch.equal(SyntheticLoader(8, 5, 32, 10, seed=4).images, images)


def test_epoch_end_reaches_accelerate_and_resume_skips_batches():
    loader = SyntheticLoader(4, 3, 16, 2)
    state = GradientState()
    ends = []
    for _ in loader:
        ends.append(state.end_of_dataloader)
    assert ends == [False, False, True]  # accumulate() syncs at the end of each epoch
    assert len(list(loader.skip_first_batches(2))) == 1 and len(list(loader)) == 3  # a view; the loader is unchanged


def test_bad_sizes_are_refused_with_the_values():
    with pytest.raises(DataError, match="got 0, 3, 32, 10"):
        SyntheticLoader(0, 3, 32, 10)
    with pytest.raises(DataError, match="got 8, -1, 32, 10"):
        SyntheticLoader(8, -1, 32, 10)
    assert list(SyntheticLoader(8, 0, 32, 10)) == []  # too few samples for a batch: the engine says so
