"""What the resident path's per-image augmentation policies cost per batch on the device, against crop + flip alone:
``python -m accel_recipes.bench.policy_cost [--device cuda] [--batch_size 128] [--image_size 32]``. Prints a table
of milliseconds per batch (median of the repeats), the device synchronised around each one."""

from __future__ import annotations

import argparse
import sys

import torch

from accel_recipes.bench.datapath_setup import measure_policy_cost
from accel_recipes.errors import ConfigError, run_entry_point


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
        for label, milliseconds in measure_policy_cost(device, args.batch_size, args.image_size, args.repeats):
            print(f"| {label} | {milliseconds:.2f} |")

    return run_entry_point(run)


if __name__ == "__main__":
    sys.exit(main())
