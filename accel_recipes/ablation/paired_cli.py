"""``python recipes/bench_datapath.py``: the data paths side by side in one process (see ``paired``)."""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from accel_recipes.ablation.cli import cpu_name, software_versions, utc_now
from accel_recipes.ablation.paired import (
    Feed,
    Source,
    Window,
    check_settle_steps,
    markdown_table,
    measure,
    parse_sources,
    summarize,
)
from accel_recipes.ablation.report import write_text_atomic
from accel_recipes.config import ConfigError, RecipeArguments, coerce, parse_args
from accel_recipes.data import DataError, build_data
from accel_recipes.engine import Trainer, TrainingError, create_accelerator
from accel_recipes.models import ModelError, build_model
from accel_recipes.reporting import write_json_atomic

RESULTS = "paired.json"
WINDOWS = "windows.jsonl"
REPORT = "paired.md"


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
    return parser


def parse_options(argv: list[str] | None) -> tuple[argparse.Namespace, RecipeArguments, list[Source]]:
    options, recipe_argv = build_parser().parse_known_args(argv)
    for name in ("rounds", "window_steps"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.settle_steps < 0:
        raise ConfigError(f"--settle_steps must be 0 or more, got {options.settle_steps}")
    args = parse_args(recipe_argv)
    sources = parse_sources(options.sources, args.training.dataloader_num_workers)
    check_settle_steps(options.settle_steps, sources, args.training.dataloader_prefetch_factor)
    # The trainer's own loaders are never iterated (every source builds its own): lazy, worker-less stream ones.
    for name, value in (
        ("output_dir", options.output_dir),
        ("data_pipeline", "stream"),
        ("dataloader_num_workers", 0),
        ("push_to_hub", False),
        ("report_to", "none"),
    ):
        args.set(name, value)
    output_dir = Path(options.output_dir)
    overwrite = coerce("overwrite_output_dir", options.overwrite_output_dir)
    if (output_dir / RESULTS).exists() and not overwrite:
        raise ConfigError(
            f"output_dir '{output_dir}' already holds results ({RESULTS}); pass a new --output_dir or "
            "--overwrite_output_dir true"
        )
    return options, args, sources


def build_feeds(trainer: Trainer, sources: list[Source]) -> dict[str, Feed]:
    loaders = {
        "synthetic": lambda source: trainer.synthetic_loader(),
        "resident": lambda source: trainer.resident_loader(trainer.data.train, train=True),
        "stream": lambda source: trainer.stream_loader(
            trainer.data.train, train=True, args=replace(trainer.args.training, dataloader_num_workers=source.workers)
        ),
    }
    return {source.name: Feed(loaders[source.pipeline](source)) for source in sources}


def facts(
    options: argparse.Namespace, args: RecipeArguments, trainer: Trainer, command: str, started: str
) -> dict[str, Any]:
    device = trainer.accelerator.device
    if device.type == "cpu":
        shown = f"CPU: {cpu_name()}, {torch.get_num_threads()} thread(s)"
    else:
        shown = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "command": command,
        "date": f"{started} to {utc_now()}",
        "device": f"{shown}; {trainer.accelerator.num_processes} process(es)",
        "software": software_versions(),
        "model": trainer.spec.describe().splitlines()[0],
        "data": f"{args.data.dataset_name}: {len(trainer.data.train)} training images",
        "training": f"micro-batch {args.training.per_device_train_batch_size}, accumulation {args.training.gradient_accumulation_steps},"
        f" precision {args.training.mixed_precision}, channels_last {args.training.channels_last}, torch_compile {args.training.torch_compile},"
        f" optimizer {args.training.optim} ({args.training.optimizer_implementation})",
        "windows": f"{options.rounds} rounds (+1 warm-up) of {options.settle_steps} untimed + {options.window_steps} "
        "timed batches per source, each round's order rotated",
    }


def write_results(output_dir: Path, setup: dict[str, Any], summary: dict[str, Any], windows: list[Window]) -> Path:
    table = markdown_table(summary)
    lines = [f"- {key}: {value}" for key, value in setup.items()]
    text = "# Data paths side by side\n\n" + "\n".join(lines) + "\n\n" + table + "\n"
    text += (
        "\nMedians over rounds, interquartile range in brackets. `of the bound` and `resident / this` are medians "
        "of per-round ratios (two sources of one round ran seconds apart, under nearly the same load). "
        "`fetching data`: the share of a window spent getting batches (waiting for loader workers, or augmenting "
        "on the device).\n"
    )
    write_text_atomic(output_dir / REPORT, text)
    write_json_atomic(
        output_dir / RESULTS,
        {"setup": setup, "summary": summary, "windows": [window.to_json() for window in windows]},
    )
    return output_dir / REPORT


def run(options: argparse.Namespace, args: RecipeArguments, sources: list[Source], command: str) -> dict[str, Any]:
    accelerator = create_accelerator(args)
    output_dir = Path(options.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / WINDOWS).unlink(missing_ok=True)
    set_seed(args.training.seed)
    with accelerator.main_process_first():
        data = build_data(args)
    spec = build_model(args, data.label_names, data.mean, data.std, data.native_size)
    trainer = Trainer(args, spec, data, accelerator)
    feeds = build_feeds(trainer, sources)
    micro_batches = itertools.count()

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        images, labels = batch
        trainer.train_micro_batch(images, labels, next(micro_batches) % trainer.plan.micro_batches_per_epoch)
        return int(images.shape[0]) * accelerator.num_processes

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

    trainer.model.train()
    accelerator.print(f"{trainer.spec.describe()}\nsources: {', '.join(feeds)}; warm-up round first (not timed)")
    started = utc_now()
    windows = measure(
        feeds, step, trainer.clock, options.rounds, options.window_steps, options.settle_steps, on_window=record
    )
    summary = summarize(windows, sources)
    if accelerator.is_main_process:
        report = write_results(output_dir, facts(options, args, trainer, command, started), summary, windows)
        print(f"\n{markdown_table(summary)}\n\nwritten: {report}, {output_dir / RESULTS}")
    accelerator.wait_for_everyone()
    return summary


def main(argv: list[str] | None = None) -> int:
    command = "python recipes/bench_datapath.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        options, args, sources = parse_options(argv)
        run(options, args, sources, command)
    except (ConfigError, DataError, ModelError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
