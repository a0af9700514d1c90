"""A plain DataLoader over a ``datasets.Dataset``: (uint8 images N,3,H,W ; int64 labels N) batches.

Plain on purpose: ``accelerator.prepare`` re-wraps its sampler for several processes, so no custom batch sampler.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import datasets
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class TransformedDataset(Dataset):
    """Rows of an HF dataset with ``image`` and ``label``, as ``(transform(image), label)`` pairs.

    ``__getitems__`` reads a whole batch of rows in one Arrow call, which the DataLoader uses when present;
    it is several times faster than one ``dataset[i]`` per sample. Picklable, for worker processes.
    """

    def __init__(self, dataset: datasets.Dataset, transform: Callable[[Image.Image], torch.Tensor]):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.dataset[int(index)]
        return self.transform(row["image"]), int(row["label"])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        rows = self.dataset[[int(index) for index in indices]]
        return [(self.transform(image), int(label)) for image, label in zip(rows["image"], rows["label"], strict=True)]


def collate_batch(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack into (uint8 N,3,H,W ; int64 N)."""
    images = torch.stack([image for image, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's generators from the per-worker torch seed (base seed + worker id), which the
    DataLoader draws from its seeded generator; torch's own generator is already seeded by then."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def make_dataloader(
    dataset: datasets.Dataset,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    shuffle: bool,
    args,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of (images, labels) batches built from ``args``' dataloader_* settings.

    The order is drawn from a ``torch.Generator`` seeded with ``args.seed``, and each worker seeds Python, NumPy and
    torch from it, so data order and augmentation repeat run to run (with 0 workers, augmentation draws from
    torch's global generator, which the engine seeds). Memory is pinned only where there is an accelerator to
    copy to; persistent workers and the prefetch factor apply only with workers.
    """
    generator = torch.Generator()
    generator.manual_seed(args.seed)
    workers = args.dataloader_num_workers
    options: dict = {}
    if workers > 0:
        options["persistent_workers"] = args.dataloader_persistent_workers
        if args.dataloader_prefetch_factor is not None:
            options["prefetch_factor"] = args.dataloader_prefetch_factor
    return DataLoader(
        TransformedDataset(dataset, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=collate_batch,
        pin_memory=args.dataloader_pin_memory and _accelerator_available(),
        worker_init_fn=seed_worker,
        generator=generator,
        **options,
    )
