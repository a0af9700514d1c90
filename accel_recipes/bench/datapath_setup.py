"""The datapath benchmark's one contact with the engine, the data loaders and the models: ``build_datapath``.

It builds what a training run builds, through the same public functions (``create_accelerator``, ``build_data``,
``build_model``, the data pipelines' ``LoaderFactory`` and the engine's ``TrainingStep``), but no run loop: one
loader per source and the micro-batch step. The rest of the benchmark sees only the ``Datapath`` it returns.
The streaming benchmark (``bench/stream.py``) builds its training loaders here too (``train_loader``).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from accel_recipes.bench.datapath import Feed, Source
from accel_recipes.config import RecipeArguments
from accel_recipes.errors import ConfigError
from accel_recipes.plan import require_a_micro_batch


@dataclass
class Datapath:
    """One endless feed per source, ``step(batch)`` (trains one batch, returns the images it held over all
    processes), the device ``clock``, and what the report says: the arguments the model trains with (resolved by
    the Accelerator: the precision that runs), the model and the data."""

    args: RecipeArguments
    accelerator: Accelerator
    feeds: dict[str, Feed]
    step: Callable[[Any], int]
    clock: Callable[[], float]
    model: str  # the model's description, first line a summary
    train_images: int


def build_datapath(args: RecipeArguments, sources: list[Source]) -> Datapath:
    """The model of ``args`` ready to train, on the Accelerator of ``args.training``, and a feed per source."""
    # Imported here: the benchmark's options and its tests do not load the engine and the models.
    from accel_recipes.data import LoaderFactory, ModelInput, build_data
    from accel_recipes.engine import TrainingStep, create_accelerator
    from accel_recipes.engine.monitor import DeviceClock
    from accel_recipes.models import build_model

    training = args.training
    if args.data.streaming:
        raise ConfigError(
            "bench_datapath compares the map-style data paths; with streaming true measure the stream with "
            "recipes/bench_stream.py, or pass --streaming false"
        )
    accelerator = create_accelerator(training)
    set_seed(training.seed)
    with accelerator.main_process_first():
        data = build_data(args.data, training.seed, args.model.cache_dir)
    spec = build_model(args.model, data.label_names, data.mean, data.std, data.native_size)
    model_input = ModelInput(spec.input_size, spec.interpolation, spec.pretrained)
    factory = LoaderFactory(data, args.data, training, model_input, accelerator, args.model.cache_dir)
    batches = len(data.train) // (training.per_device_train_batch_size * accelerator.num_processes)
    require_a_micro_batch(batches, len(data.train), training.per_device_train_batch_size, accelerator.num_processes)
    step = TrainingStep(
        training, spec, accelerator, batches, data.num_classes
    )  # a schedule as long as a run's with these batches
    loaders = {
        "synthetic": lambda source: factory.synthetic(),
        "resident": lambda source: factory.resident(data.train, train=True),
        "stream": lambda source: factory.stream(data.train, train=True, num_workers=source.workers),
    }
    feeds = {source.name: Feed(loaders[source.pipeline](source)) for source in sources}
    micro_batches = itertools.count()

    def train_batch(batch: tuple[Any, Any]) -> int:
        images, labels = batch
        step.micro_batch(images, labels, next(micro_batches) % batches)
        return int(images.shape[0]) * accelerator.num_processes

    step.model.train()
    clock = DeviceClock(accelerator.device)
    return Datapath(args, accelerator, feeds, train_batch, clock, spec.describe(), len(data.train))


# ---- streamed against map-style loading (bench/stream.py) ----


def write_shards(root: Path, images: int, shards: int, size: int, seed: int = 0) -> Path:
    """``images`` random ``size`` px PNGs with 10 labels in ``shards`` Hub-style parquet shards (``data/train-*``)
    plus a validation shard; kept when already there."""
    from accel_recipes.data.sources import arrays_to_dataset

    folder = root / f"parquet-{images}x{size}px-{shards}shards"
    if (folder / "done").is_file():
        return folder
    rng = np.random.default_rng(seed)
    names = [str(i) for i in range(10)]
    per_shard = -(-images // shards)
    parts = [("train", i, min(per_shard, images - i * per_shard)) for i in range(shards)] + [("validation", 0, 200)]
    for split, index, count in parts:
        pixels = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        dataset = arrays_to_dataset(pixels, rng.integers(0, 10, count), names)
        total = shards if split == "train" else 1
        target = folder / "data" / f"{split}-{index:05d}-of-{total:05d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(target))
    (folder / "done").write_text("")
    return folder


def _factory(dataset: Path, streaming: bool, workers: int, batch_size: int, size: int):
    from accelerate import Accelerator

    from accel_recipes.config import DataArguments, TrainingArguments
    from accel_recipes.data import LoaderFactory, ModelInput, build_data

    data_args = DataArguments(dataset_name=str(dataset), streaming=streaming)
    training = TrainingArguments(per_device_train_batch_size=batch_size, dataloader_num_workers=workers)
    data = build_data(data_args, training.seed)
    accelerator = Accelerator(cpu=True)
    return LoaderFactory(data, data_args, training, ModelInput(size, "bilinear", False), accelerator), data


def train_loader(dataset: Path, streaming: bool, workers: int, batch_size: int, size: int):
    from accel_recipes.data.streaming import stream_loader

    factory, data = _factory(dataset, streaming, workers, batch_size, size)
    if streaming:
        return stream_loader(factory, data.train, train=True)
    return factory.stream(data.train, train=True)


# ---- the per-image policies' cost on the device (bench/policy_cost.py) ----


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def milliseconds_per_batch(work: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        work()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_policy_cost(
    device: torch.device, batch_size: int, image_size: int, repeats: int
) -> list[tuple[str, float]]:
    """(label, ms per batch) for crop + flip alone and with each policy, on ``device`` (``bench/policy_cost.py``)."""
    from accel_recipes.data.batch_augment import crop_flip, draw_crop_flip
    from accel_recipes.data.policies import Policy

    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=device)

    def base() -> torch.Tensor:
        top, left, flip = draw_crop_flip(batch_size, 4, generator)
        return crop_flip(images, top, left, flip, 4)

    rows = [("crop_flip", milliseconds_per_batch(base, device, repeats))]
    for policy in (Policy("trivial_augment"), Policy("rand_augment", magnitude=9, num_ops=2)):
        label = f"crop_flip + {policy.name}" + (" (m9, 2 ops)" if policy.name == "rand_augment" else "")
        rows.append((label, milliseconds_per_batch(lambda p=policy: p.apply_batch(base(), generator), device, repeats)))
    return rows
