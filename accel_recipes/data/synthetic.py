"""``data_pipeline: synthetic``: the compute-only bound of a recipe, measured by the recipe itself.

One batch of the run's own training images, decoded once and held on the training device, is served as every
training batch: the model, the step, the precision, the accumulation and the schedule are the run's own, and the
input costs nothing. A real run's images/s over a synthetic run's is the share of the device's speed its data path
lets it keep. Real images rather than random noise: on a CPU a ResNet step on uniform noise measured about 2% slower
than on images, which would put the bound below the runs it bounds. The accuracy of a synthetic run means nothing
(it trains on one batch); evaluation still runs on the real validation and test splits.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np
import torch

from accel_recipes.errors import DataError

from .resident import DeviceLoader, decode_images
from .splits import labels_of


def first_batch(dataset: datasets.Dataset, batch_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch_size`` images of ``dataset`` as uint8 (batch_size, 3, size, size) and their labels; a
    split with fewer (decodable) images is repeated to fill the batch."""
    head = dataset.select(range(min(batch_size, len(dataset))))
    images, bad, first_error = decode_images(head, size)
    if len(images) == 0:
        raise DataError(
            f"data_pipeline synthetic: none of the first {len(head)} training images could be decoded "
            f"({first_error or 'the split is empty'}); check the training split"
        )
    labels = torch.from_numpy(np.delete(labels_of(head), bad))
    fill = torch.arange(batch_size) % len(images)
    return images[fill].contiguous(), labels[fill].long()


class SyntheticLoader(DeviceLoader):
    """``num_batches`` per epoch of the same (images, labels): one uint8 (B, 3, H, W) batch and its int64 labels,
    moved to ``device`` once. Every batch is the very same tensors: no per-batch work at all."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_batches: int,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        # num_batches may be 0 (a training set smaller than one batch): the engine reports that with the sizes.
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) < 1 or len(labels) != len(images):
            raise DataError(
                "a synthetic loader needs one non-empty uint8 (B, C, H, W) batch and B labels, got images of "
                f"{images.dtype} {tuple(images.shape)} and {len(labels)} labels"
            )
        if num_batches < 0:
            raise DataError(f"a synthetic loader needs num_batches >= 0, got {num_batches}")
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.num_batches = num_batches

    def __len__(self) -> int:
        return self.num_batches

    def _epoch(self, epoch: int) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        return lambda batch: (self.images, self.labels)
