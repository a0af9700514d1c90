"""What the resident path's per-image augmentation policies cost per batch on the device, against crop + flip alone:
``python -m accel_recipes.bench.policy_cost [--device cuda] [--batch_size 128] [--image_size 32]``. Prints a table
of milliseconds per batch (median of the repeats), the device synchronised around each one."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from accel_recipes.data.batch_augment import crop_flip, draw_crop_flip
from accel_recipes.data.policies import Policy
from accel_recipes.errors import ConfigError, run_entry_point


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


def measure(device: torch.device, batch_size: int, image_size: int, repeats: int) -> list[tuple[str, float]]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    def run() -> None:
        if args.batch_size < 1 or args.image_size < 9 or args.repeats < 1:
            raise ConfigError(
                f"need batch_size >= 1, image_size >= 9 and repeats >= 1, got {args.batch_size}, "
                f"{args.image_size}, {args.repeats}"
            )
        device = torch.device(args.device)
        print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), "
              f"batch {args.batch_size} x 3 x {args.image_size} x {args.image_size} uint8")  # fmt: skip
        print("| augmentation | ms per batch |\n|---|---|")
        for label, milliseconds in measure(device, args.batch_size, args.image_size, args.repeats):
            print(f"| {label} | {milliseconds:.2f} |")

    return run_entry_point(run)


if __name__ == "__main__":
    sys.exit(main())
