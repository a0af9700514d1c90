"""A plain DataLoader over a ``datasets.Dataset``: (uint8 images N,3,H,W ; int64 labels N) batches.

Plain on purpose: ``accelerator.prepare`` re-wraps its sampler for several processes, so no custom batch sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import datasets
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from accel_recipes.errors import DataError

from ..config import TrainingArguments
from .transforms import decode_image


class EpochSampler(Sampler[int]):
    """Indices of one epoch, shuffled by a generator seeded with (seed, epoch), each tagged with its epoch as
    ``epoch * n + index``. The tag lets every sample draw its augmentation from a generator of its own seeded
    with (seed, epoch, index): augmentation then depends neither on worker count, nor on the order batches are
    loaded in, nor on where a resumed run starts. Accelerate calls ``set_epoch`` through its sampler wrappers."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = range(self.size)
        offset = self.epoch * self.size
        return iter([offset + index for index in order])


class TransformedDataset(Dataset):
    """Rows of an HF dataset with ``image`` and ``label``, as ``(transform(image), label)`` pairs.

    Images are decoded here rather than by ``datasets`` so an undecodable one is reported by its index (or
    skipped, with ``skip_corrupt=True``: the sample becomes None and ``collate_batch`` drops it).
    ``__getitems__`` reads a whole batch of rows in one Arrow call, which the DataLoader uses when present.
    Picklable, for worker processes.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: Callable[[Image.Image], torch.Tensor],
        seed: int = 0,
        skip_corrupt: bool = False,
    ):
        self.dataset = dataset.cast_column("image", datasets.Image(decode=False))
        self.transform = transform
        self.seed = seed
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged_index: int) -> tuple[torch.Tensor, int] | None:
        return self.__getitems__([tagged_index])[0]

    def __getitems__(self, tagged_indices: Sequence[int]) -> list[tuple[torch.Tensor, int] | None]:
        size = len(self.dataset)
        epochs_and_indices = [divmod(int(tagged), size) for tagged in tagged_indices]
        rows = self.dataset[[index for _, index in epochs_and_indices]]
        return [
            self._sample(image, int(label), epoch, index)
            for (epoch, index), image, label in zip(epochs_and_indices, rows["image"], rows["label"], strict=True)
        ]

    def _sample(self, encoded: dict, label: int, epoch: int, index: int) -> tuple[torch.Tensor, int] | None:
        try:
            image = decode_image(encoded)
        except DataError as error:
            if self.skip_corrupt:
                return None
            raise DataError(f"{error} (sample {index}); pass --skip_corrupt_images true to skip such images") from None
        generator = torch.Generator().manual_seed(hash((self.seed, epoch, index)) % 2**63)
        return self.transform(image, generator), label


def collate_batch(samples: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack into (uint8 N,3,H,W ; int64 N), leaving out skipped (undecodable) samples."""
    samples = [sample for sample in samples if sample is not None]
    if not samples:
        return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    images = torch.stack([image for image, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def make_dataloader(
    dataset: datasets.Dataset,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    shuffle: bool,
    training: TrainingArguments,
    skip_corrupt: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of (images, labels) batches built from ``training``'s dataloader_* settings; with
    ``skip_corrupt``, undecodable images are left out of their batch instead of failing it.

    The order comes from an ``EpochSampler`` seeded with ``training.seed`` and each sample's augmentation from its own
    (seed, epoch, index) generator, so data order and augmentation repeat run to run, whatever the worker count,
    and a resumed run sees exactly the batches the uninterrupted one would have. Memory is pinned only where
    there is an accelerator to copy to; persistent workers and the prefetch factor apply only with workers.
    """
    workers = training.dataloader_num_workers
    options: dict = {}
    if workers > 0:
        options["persistent_workers"] = training.dataloader_persistent_workers
        if training.dataloader_prefetch_factor is not None:
            options["prefetch_factor"] = training.dataloader_prefetch_factor
    return DataLoader(
        TransformedDataset(dataset, transform, seed=training.seed, skip_corrupt=skip_corrupt),
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), training.seed, shuffle),
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=collate_batch,
        pin_memory=training.dataloader_pin_memory and _accelerator_available(),
        **options,
    )
