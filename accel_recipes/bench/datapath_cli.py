"""``python recipes/bench_datapath.py``: the data paths side by side in one process (see ``datapath``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from accel_recipes.bench.common.environment import device_name, environment_facts, utc_now
from accel_recipes.bench.common.recipe import add_recipe_fields, reject_unknown, resolve_recipe, split_fields
from accel_recipes.bench.common.writer import fact_lines, write_json, write_text
from accel_recipes.bench.datapath import (
    Source,
    Window,
    check_settle_steps,
    markdown_table,
    measure,
    parse_sources,
    summarize,
)
from accel_recipes.bench.datapath_setup import Datapath, build_datapath
from accel_recipes.config import RecipeArguments, coerce
from accel_recipes.errors import ConfigError, run_entry_point

RESULTS = "paired.json"
WINDOWS = "windows.jsonl"
REPORT = "paired.md"
NOT_A_RUN = {"push_to_hub": False, "report_to": "none"}  # a measurement: nothing is pushed or tracked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train one model fed in turn by each data source (the compute-only bound, the resident path, "
        "the stream path at several worker counts), in short timed windows, and report each as images/s and as "
        "a fraction of the bound: medians of per-round ratios, which a shared machine's load mostly cancels out of.",
        allow_abbrev=False,
        epilog="Any field of recipes/train.py (see its --help) sets up the model and data: --config "
        "recipes/cifar10/resnet50.yaml --model_name_or_path resnet18 --mixed_precision bf16.",
    )
    parser.add_argument(
        "--sources",
        default="synthetic,resident,stream:1,stream:2",
        help="comma-separated: synthetic (the compute-only bound), resident, stream (the recipe's "
        "dataloader_num_workers) or stream:N (N loader workers); default: %(default)s",
    )
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds, after one warm-up (default: %(default)s)")
    parser.add_argument("--window_steps", type=int, default=16, help="timed batches per window (default: %(default)s)")
    parser.add_argument(
        "--settle_steps",
        type=int,
        default=8,
        help="untimed batches before each window; at least workers x prefetch factor (default: %(default)s)",
    )
    parser.add_argument("--output_dir", default="runs/bench-datapath", help="where results go (default: %(default)s)")
    parser.add_argument("--overwrite_output_dir", default="false", help="measure again into a folder holding results")
    parser.add_argument("--config", help=argparse.SUPPRESS)  # the recipe YAML, as in recipes/train.py (epilog)
    add_recipe_fields(parser)
    return parser


def parse_options(argv: list[str] | None) -> tuple[argparse.Namespace, RecipeArguments, list[Source]]:
    parsed, unknown = build_parser().parse_known_args(argv)
    reject_unknown(unknown, ["sources", "rounds", "window_steps", "settle_steps"])
    own, fields = split_fields(parsed)
    options = argparse.Namespace(**own)
    for name in ("rounds", "window_steps"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.settle_steps < 0:
        raise ConfigError(f"--settle_steps must be 0 or more, got {options.settle_steps}")
    args = resolve_recipe(options.config, {**fields, **NOT_A_RUN, "output_dir": options.output_dir})
    sources = parse_sources(options.sources, args.training.dataloader_num_workers)
    check_settle_steps(options.settle_steps, sources, args.training.dataloader_prefetch_factor)
    output_dir = Path(options.output_dir)
    overwrite = coerce("overwrite_output_dir", options.overwrite_output_dir)
    if (output_dir / RESULTS).exists() and not overwrite:
        raise ConfigError(
            f"output_dir '{output_dir}' already holds results ({RESULTS}); pass a new --output_dir or "
            "--overwrite_output_dir true"
        )
    return options, args, sources


def facts(options: argparse.Namespace, datapath: Datapath, command: str, started: str) -> dict[str, Any]:
    accelerator, args, training = datapath.accelerator, datapath.args, datapath.args.training
    device = device_name(accelerator.device)
    threads = f"{torch.get_num_threads()} thread(s)"
    return {
        **environment_facts(command, device, accelerator.num_processes, threads, started),
        "model": datapath.model.splitlines()[0],
        "data": f"{args.data.dataset_name}: {datapath.train_images} training images",
        "training": f"micro-batch {training.per_device_train_batch_size}, accumulation "
        f"{training.gradient_accumulation_steps}, precision {training.mixed_precision}, channels_last "
        f"{training.channels_last}, torch_compile {training.torch_compile}, optimizer {training.optim} "
        f"({training.optimizer_implementation})",
        "windows": f"{options.rounds} rounds (+1 warm-up) of {options.settle_steps} untimed + {options.window_steps} "
        "timed batches per source, each round's order rotated",
    }


def write_results(output_dir: Path, setup: dict[str, Any], summary: dict[str, Any], windows: list[Window]) -> Path:
    text = "# Data paths side by side\n\n" + "\n".join(fact_lines(setup)) + "\n\n" + markdown_table(summary) + "\n"
    text += (
        "\nMedians over rounds, interquartile range in brackets. `of the bound` and `resident / this` are medians "
        "of per-round ratios (two sources of one round ran seconds apart, under nearly the same load). "
        "`fetching data`: the share of a window spent getting batches (waiting for loader workers, or augmenting "
        "on the device).\n"
    )
    write_text(output_dir / REPORT, text)
    data = {"setup": setup, "summary": summary, "windows": [window.to_json() for window in windows]}
    write_json(output_dir / RESULTS, data, sort_keys=True)
    return output_dir / REPORT


def run(options: argparse.Namespace, args: RecipeArguments, sources: list[Source], command: str) -> dict[str, Any]:
    datapath = build_datapath(args, sources)
    accelerator = datapath.accelerator
    output_dir = Path(options.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / WINDOWS).unlink(missing_ok=True)

    def record(window: Window) -> None:
        if not accelerator.is_main_process:
            return
        with open(output_dir / WINDOWS, "a") as log:
            log.write(json.dumps(window.to_json()) + "\n")
        share = window.data_seconds / window.seconds if window.seconds else 0.0
        print(
            f"round {window.round:>3} {window.source:<10} {window.images_per_second:>10,.1f} images/s "
            f"({share:.1%} fetching data)",
            flush=True,
        )

    accelerator.print(f"{datapath.model}\nsources: {', '.join(datapath.feeds)}; warm-up round first (not timed)")
    started = utc_now()
    windows = measure(
        datapath.feeds,
        datapath.step,
        datapath.clock,
        options.rounds,
        options.window_steps,
        options.settle_steps,
        on_window=record,
    )
    summary = summarize(windows, sources)
    if accelerator.is_main_process:
        report = write_results(output_dir, facts(options, datapath, command, started), summary, windows)
        print(f"\n{markdown_table(summary)}\n\nwritten: {report}, {output_dir / RESULTS}")
    accelerator.wait_for_everyone()
    return summary


def main(argv: list[str] | None = None) -> int:
    command = "python recipes/bench_datapath.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    def body() -> None:
        run(*parse_options(argv), command)

    return run_entry_point(body)
