"""``data_pipeline: synthetic``: the compute-only bound of a recipe, measured by the recipe itself.

One random uint8 batch, made once on the training device, is served as every training batch: the model, the
step, the precision, the accumulation and the schedule are the run's own, and the input costs nothing. A real run's
images/s over a synthetic run's is the share of the device's speed its data path lets it keep. The accuracy of a
synthetic run means nothing (it trains on noise); evaluation still runs on the real validation and test splits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import DataError
from .resident import DeviceLoader


class SyntheticLoader(DeviceLoader):
    """``num_batches`` per epoch of the same (images, labels): uint8 (batch_size, 3, size, size) and int64 labels
    in [0, num_classes), drawn once from ``seed`` on ``device`` (the same on every process)."""

    def __init__(
        self,
        batch_size: int,
        num_batches: int,
        input_size: int,
        num_classes: int,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        # num_batches may be 0 (a training set smaller than one batch): the engine reports that with the sizes.
        if min(batch_size, input_size, num_classes) < 1 or num_batches < 0:
            raise DataError(
                "a synthetic loader needs batch_size, input_size and num_classes >= 1 and num_batches >= 0, got "
                f"{batch_size}, {num_batches}, {input_size}, {num_classes}"
            )
        generator = torch.Generator().manual_seed(seed)
        shape = (batch_size, 3, input_size, input_size)
        self.images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8).to(device)
        self.labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
        self.num_batches = num_batches

    def __len__(self) -> int:
        return self.num_batches

    def _epoch(self, epoch: int) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        return lambda batch: (self.images, self.labels)
