"""What streaming costs: ``python recipes/bench_stream.py``.

On the same local parquet shards, the training loader's images/s of the map-style stream path
(``datasets.Dataset`` + DataLoader workers) and of the streamed path (``streaming: true``), in interleaved rounds;
then the time from the start of data loading to the first training batch for a dataset and one ten times its size,
both ways. Loaders only (no model): the data path's own ceiling. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


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


def images_per_second(loader, batches: int, warmup: int = 3) -> float:
    """Images/s over ``batches`` batches after ``warmup`` (worker start-up left out)."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def seconds_to_first_batch(dataset: Path, streaming: bool, workers: int, batch_size: int, size: int) -> float:
    """From ``build_data`` to the first training batch, datasets' cache emptied first (a first run)."""
    import datasets

    with tempfile.TemporaryDirectory() as cache:
        datasets.config.HF_DATASETS_CACHE = cache
        start = time.perf_counter()
        next(iter(train_loader(dataset, streaming, workers, batch_size, size)))
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/bench-stream", help="where the generated shards are kept")
    parser.add_argument("--images", type=int, default=4000, help="training images of the throughput dataset")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scale", type=int, default=10, help="the larger first-batch dataset is this many times larger"
    )
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    small = write_shards(root, args.images, args.shards, args.image_size)
    large = write_shards(root, args.images * args.scale, args.shards * args.scale, args.image_size)
    options = (args.workers, args.batch_size, args.image_size)
    speeds: dict[str, list[float]] = {"map-style": [], "streamed": []}
    for _ in range(args.rounds):
        for name, streaming in (("map-style", False), ("streamed", True)):
            speeds[name].append(images_per_second(train_loader(small, streaming, *options), args.batches))
    first = {
        (name, folder): seconds_to_first_batch(folder, streaming, *options)
        for folder in (small, large)
        for name, streaming in (("map-style", False), ("streamed", True))
    }
    print(f"| path | images/s ({args.workers} workers, median of {args.rounds}) | first batch, {args.images} images | "
          f"first batch, {args.images * args.scale} images |")  # fmt: skip
    print("|---|---|---|---|")
    for name in speeds:
        speed = statistics.median(speeds[name])
        print(f"| {name} | {speed:,.0f} | {first[name, small]:.1f} s | {first[name, large]:.1f} s |")
    ratio = statistics.median(speeds["streamed"]) / statistics.median(speeds["map-style"])
    print(f"\nstreamed / map-style images/s: {ratio:.2f}")
    return 0
