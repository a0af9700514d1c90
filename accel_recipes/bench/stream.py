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

from accel_recipes.bench.datapath_setup import train_loader, write_shards


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

    kept = datasets.config.HF_DATASETS_CACHE
    with tempfile.TemporaryDirectory() as cache:
        datasets.config.HF_DATASETS_CACHE = cache
        try:
            start = time.perf_counter()
            next(iter(train_loader(dataset, streaming, workers, batch_size, size)))
            return time.perf_counter() - start
        finally:
            datasets.config.HF_DATASETS_CACHE = kept


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
