"""How training data reaches the device: the stream, resident or synthetic pipeline, and the train, validation and
test loaders it gives.

- stream: per-sample transforms through a DataLoader, prepared by Accelerate (sharding, device placement,
  pinned memory and non-blocking copies);
- resident: each split decoded once (cached on disk), held on the device and augmented there in whole batches;
- synthetic: the first batch of the training images served as every batch (the compute-only bound), with the
  evaluation splits resident.

Training and the benchmarks build their loaders here, through the same functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import datasets
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..config import DataArguments, TrainingArguments
from .augmentation import Augmentation, resolve
from .bundle import DataBundle
from .loaders import make_dataloader
from .policies import Policy
from .resident import ResidentLoader, choose_pipeline, decode_split
from .size_schedule import check_sizes
from .stream_loader import is_stream
from .synthetic import SyntheticLoader, first_batch
from .transforms import ImageTransform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInput:
    """What the loaders need to know of the model: its input size, the resize interpolation, and whether it is
    pretrained (which picks the default augmentation)."""

    size: int
    interpolation: str
    pretrained: bool


@dataclass
class Loaders:
    """The three loaders of a run and how they were built."""

    train: Any
    validation: Any
    test: Any | None
    pipeline: str  # stream, resident or synthetic (auto made concrete)
    augmentation: str  # crop_flip, resized_crop or none (auto made concrete)
    policy: Policy | None = None  # trivial_augment / rand_augment after the crop, on the training loader
    augment: Augmentation | None = None  # everything the loaders were built with


class LoaderFactory:
    """Builds loaders of one dataset for one model on one Accelerator; ``build()`` gives the run's three."""

    def __init__(
        self,
        data: DataBundle,
        data_args: DataArguments,
        training: TrainingArguments,
        model_input: ModelInput,
        accelerator: Accelerator,
        cache_dir: str | None = None,
    ) -> None:
        self.data, self.data_args, self.training = data, data_args, training
        self.model_input, self.accelerator, self.cache_dir = model_input, accelerator, cache_dir
        self.augment = resolve(
            data_args, model_input.size, model_input.interpolation, model_input.pretrained, data.native_size
        )
        check_sizes(self.augment)

    def build(self) -> Loaders:
        data = self.data
        if is_stream(data.train):  # streaming: true; data_pipeline auto never tries to cache a stream
            from .streaming import stream_loader

            test = stream_loader(self, data.test, train=False) if data.test is not None else None
            train, validation = stream_loader(self, data.train, train=True), stream_loader(self, data.validation, False)
            augment = self.augment
            return Loaders(train, validation, test, "stream", augment.augmentation, augment.policy, augment)
        pipeline = choose_pipeline(self.data_args, data.train, data.native_size)
        if pipeline == "stream":
            train = self.stream(data.train, train=True)
            validation = self.stream(data.validation, train=False)
            test = self.stream(data.test, train=False) if data.test is not None else None
        else:
            train = self.synthetic() if pipeline == "synthetic" else self.resident(data.train, train=True)
            validation = self.resident(data.validation, train=False)
            test = self.resident(data.test, train=False) if data.test is not None else None
        augment = self.augment
        return Loaders(train, validation, test, pipeline, augment.augmentation, augment.policy, augment)

    def _batch_size(self, train: bool) -> int:
        return self.training.per_device_train_batch_size if train else self.training.per_device_eval_batch_size

    def stream(self, split: datasets.Dataset, train: bool, num_workers: int | None = None) -> DataLoader:
        """``split`` through a DataLoader of per-sample transforms (augmented and shuffled when ``train``), prepared
        by Accelerate; ``num_workers`` overrides ``dataloader_num_workers`` (the benchmarks compare counts)."""
        training = self.training
        if num_workers is not None:
            training = replace(training, dataloader_num_workers=num_workers)
        loader = make_dataloader(
            split,
            ImageTransform(train, self.augment),
            self._batch_size(train),
            shuffle=train,
            training=training,
            skip_corrupt=self.data_args.skip_corrupt_images,
            drop_last=train,
        )
        return self.accelerator.prepare(loader)

    def resident(self, split: datasets.Dataset, train: bool) -> ResidentLoader:
        """``split`` decoded once (one process per machine decodes and writes the cache), held on the device and
        cut into batches there, augmented and reshuffled each epoch when ``train``."""
        accelerator = self.accelerator
        with accelerator.local_main_process_first():
            images, labels = decode_split(
                split, self.data.native_size, self.cache_dir, self.data_args.skip_corrupt_images
            )
        return ResidentLoader(
            images,
            labels,
            self._batch_size(train),
            train=train,
            drop_last=train,
            device=accelerator.device,
            seed=self.training.seed,
            augment=self.augment,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
        )

    def synthetic(self) -> SyntheticLoader:
        """As many batches per epoch as the resident path's, all the same batch of the run's own training images
        (the first ones, at the model's input size): the compute-only bound."""
        accelerator, batch_size = self.accelerator, self.training.per_device_train_batch_size
        batches = len(self.data.train) // (batch_size * accelerator.num_processes)
        accelerator.print(
            "data_pipeline synthetic: every training batch is the same batch of training images (a throughput "
            "measurement; the accuracy means nothing)"
        )
        images, labels = first_batch(self.data.train, batch_size, self.model_input.size)
        return SyntheticLoader(images, labels, batches, device=accelerator.device)


def build_loaders(
    data: DataBundle,
    data_args: DataArguments,
    training: TrainingArguments,
    model_input: ModelInput,
    accelerator: Accelerator,
    cache_dir: str | None = None,
) -> Loaders:
    """The run's train, validation and test loaders through the pipeline ``data_args.data_pipeline`` chooses."""
    return LoaderFactory(data, data_args, training, model_input, accelerator, cache_dir).build()
