"""``make gpu-check`` (``python recipes/gpu_check.py``): every check of ``plan`` run in turn through the ablation's
launcher, and one Markdown table ready for BENCHMARKS.md, headed by the command, date, device and software.

Built for a GPU lent for minutes: one command, no network, its own data, and a time budget (``--time_budget_s``,
default 7 minutes) after which the checks left are listed as not run instead of started, so it ends within 8
minutes. ``--smoke`` runs one check of each kind with tiny models, the same code, on a CPU in minutes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

import accel_recipes
from accel_recipes.bench.ablate.runner import (
    PlannedRun,
    cpu_threads,
    execute,
    launch_command,
    run_environment,
    stop_launches_on_sigterm,
)
from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.bench.common.environment import default_device, device_name, environment_facts, utc_now
from accel_recipes.bench.common.recipe import recipe_flags
from accel_recipes.bench.gpu_check import preflight
from accel_recipes.bench.gpu_check.data import copy_fashion_mnist, write_cifar, write_vit_config
from accel_recipes.bench.gpu_check.plan import ONE_PROCESS, Check, Data, plan_checks
from accel_recipes.bench.gpu_check.table import REPORT, STARTED, Table, row
from accel_recipes.errors import ConfigError, run_entry_point

ROOT = Path(__file__).resolve().parents[3]
TRAIN_SCRIPT = ROOT / "recipes" / "train.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train every shipped recipe for a fixed number of updates in fp32 (TF32 off), fp16 and bf16, "
        "compare the data paths, channels_last and torch.compile, run FSDP and DeepSpeed ZeRO-2 through a "
        "checkpoint, a resume and the export, train the Fashion-MNIST recipe to its accuracy, and write one "
        "Markdown table for BENCHMARKS.md. Offline: it writes its own data.",
        allow_abbrev=False,
    )
    parser.add_argument("--output_dir", default="runs/gpu-check", help="where runs and the table go (%(default)s)")
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few updates: the same code on a CPU")
    parser.add_argument("--updates", type=int, default=None, help="updates per run (default: 30, smoke 2)")
    parser.add_argument("--time_budget_s", type=float, default=420.0, help="start no check after this (%(default)s)")
    parser.add_argument("--preflight", action="store_true", help="only say, in seconds, which required packages "
                        "are missing or outside the tested range (exit 0 when none is)")  # fmt: skip
    return parser


def prepare_data(root: Path, smoke: bool) -> Data:
    train, test = (256, 64) if smoke else (10_000, 1_000)
    return Data(
        cifar10=write_cifar(root, "cifar10", train, test, seed=0),
        cifar100=write_cifar(root, "cifar100", train, test, seed=1),
        fashion_mnist=copy_fashion_mnist(root),
        vit=write_vit_config(root / "vit-b16-config", tiny=smoke),
    )


def run_check(check: Check, index: int, output_dir: Path, env: dict[str, str]) -> list[RunRecord]:
    folder = output_dir / "runs" / f"{index:02d}"
    records = []
    for fields in check.runs:
        planned = PlannedRun(check.setting, 1, folder, {**fields, "output_dir": str(folder)})
        if check.launch_args == ONE_PROCESS:  # one process needs no launcher: a few seconds less per run
            command = [sys.executable, str(TRAIN_SCRIPT), *recipe_flags(check.config, planned.overrides)]
        else:
            command = launch_command(TRAIN_SCRIPT, check.launch_args, check.config, planned.overrides)
        record = execute(planned, command, env, lambda text: None)
        records.append(record)
        if not record.ok:
            break
    return records


def run_environment_here(threads: int | None) -> dict[str, str]:
    """The runs' environment, with this process's accel_recipes first on their path: on a node where it is not
    pip-installed, the runs import the same checkout as this process."""
    env = run_environment(threads)
    package_root = str(Path(accel_recipes.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def run_gpu_check(options: argparse.Namespace, command: str) -> int:
    output_dir = Path(options.output_dir)
    if (output_dir / REPORT).exists():
        raise ConfigError(f"'{output_dir}' already holds a GPU check ({REPORT}); pass a new --output_dir")
    updates = options.updates or (2 if options.smoke else 30)
    started, clock = utc_now(), time.monotonic()
    device = default_device()
    checks = plan_checks(prepare_data(output_dir / "data", options.smoke), options.smoke, updates)
    threads = cpu_threads(1) if device.type == "cpu" else None
    env = run_environment_here(threads)

    def facts() -> dict[str, str]:
        found = environment_facts(command, device_name(device), 1, f"{threads} thread(s)", started)
        found["total wall time"] = f"{time.monotonic() - clock:.0f} s"
        if torch.cuda.is_available():
            found["CUDA"] = f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        return found

    table = Table(output_dir, checks)  # a check known to be skipped says why from the start
    table.write(facts())  # every check listed: cut off before the first, all read "not run yet"
    for index, check in enumerate(checks):
        if check.skip_reason is None and time.monotonic() - clock > options.time_budget_s:
            table.rows[index] = row(check, [], f"not run: past the {options.time_budget_s:.0f} s time budget")
            table.write(facts())
        elif check.skip_reason is None:
            table.rows[index] = row(check, [], STARTED)
            table.write(facts())
            table.rows[index] = row(check, run_check(check, index + 1, output_dir, env))
            table.write(facts())
        prefix = f"[{index + 1:>2}/{len(checks)}] {check.group}: {check.recipe}, {check.setting}:"
        print(f"{prefix} {table.rows[index]['outcome']} {table.rows[index]['images/s']}", flush=True)
    text = table.write(facts())  # the final wall time
    print(f"\n{text}\nreport: {output_dir / REPORT}", flush=True)
    failed = [entry for entry in table.rows if entry["outcome"].startswith("FAILED")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "recipes/gpu_check.py", *argv])
    stop_launches_on_sigterm()
    options = build_parser().parse_args(argv)
    if options.preflight:  # recipes/gpu_check.py answers --preflight before torch is imported; this is the same
        return preflight.main()
    return run_entry_point(lambda: run_gpu_check(options, command))
