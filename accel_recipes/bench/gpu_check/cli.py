"""``make gpu-check`` (``python recipes/gpu_check.py``): every check of ``plan`` run in turn through the ablation's
launcher, and one Markdown table ready for BENCHMARKS.md, headed by the command, date, device and software.

Built for a GPU lent for minutes: one command, no network, its own data, and a time budget (``--time_budget_s``,
default 7 minutes) after which the checks left are listed as not run instead of started, so it ends within 8
minutes. ``--smoke`` runs one check of each kind with tiny models, the same code, on a CPU in minutes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

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
from accel_recipes.bench.common.writer import fact_lines, write_json, write_text
from accel_recipes.bench.gpu_check.data import copy_fashion_mnist, write_cifar, write_vit_config
from accel_recipes.bench.gpu_check.plan import ONE_PROCESS, Check, Data, plan_checks
from accel_recipes.checkpoints import list_checkpoints
from accel_recipes.errors import ConfigError, run_entry_point

ROOT = Path(__file__).resolve().parents[3]
TRAIN_SCRIPT = ROOT / "recipes" / "train.py"
REPORT = "gpu_check.md"
COLUMNS = ("check", "recipe", "setting", "images/s", "peak memory (MB)", "outcome", "wall (s)")


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
    return parser


def prepare_data(root: Path, smoke: bool) -> Data:
    train, test = (256, 64) if smoke else (10_000, 1_000)
    return Data(
        cifar10=write_cifar(root, "cifar10", train, test, seed=0),
        cifar100=write_cifar(root, "cifar100", train, test, seed=1),
        fashion_mnist=copy_fashion_mnist(root),
        vit=write_vit_config(root / "vit-b16-config", tiny=smoke),
    )


def outcome(check: Check, records: list[RunRecord]) -> str:
    """What the check showed beyond speed: accuracy, or that the sharded run resumed and exported."""
    last = records[-1]
    if not last.ok:
        return f"FAILED (exit {last.returncode}): {last.error}; see {last.output_dir / 'launch.log'}"
    results = last.results or {}
    if check.group == "accuracy":
        return f"test accuracy {results.get('test_accuracy', float('nan')):.4f}"
    if len(records) > 1:
        resumed = "resumed from" in (last.output_dir / "launch.log").read_text()
        exported = (last.output_dir / "model" / "config.json").is_file() and any(
            (last.output_dir / "model").glob("*.safetensors")
        )
        saved = len(list_checkpoints(last.output_dir / "checkpoints"))
        return (
            f"{results.get('train_updates')} updates, {saved} checkpoint(s), "
            f"resumed {'yes' if resumed else 'NO'}, exported {'yes' if exported else 'NO'}"
        )
    return "ok"


def row(check: Check, records: list[RunRecord], note: str | None = None) -> dict[str, Any]:
    base = {"check": check.group, "recipe": check.recipe, "setting": check.setting}
    if note is not None:
        return {**base, "images/s": "", "peak memory (MB)": "", "outcome": note, "wall (s)": ""}
    results = records[-1].results or {}
    speed = results.get("steady_samples_per_second")
    memory = results.get("peak_memory_mb")
    return {
        **base,
        "images/s": f"{speed:,.1f}" if speed else "",
        "peak memory (MB)": f"{memory:,.0f}" if memory else "",
        "outcome": outcome(check, records),
        "wall (s)": f"{sum(record.wall_seconds for record in records):.0f}",
    }


def markdown(facts: dict[str, str], rows: list[dict[str, Any]]) -> str:
    lines = ["## GPU check", "", *fact_lines(facts), ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(entry[column]) for column in COLUMNS) + " |" for entry in rows]
    notes = [
        "images/s: steady training throughput after the warm-up updates (`steady_samples_per_second`); peak "
        "memory: the device's peak allocated memory over the run. Pretrained recipes start from random weights "
        "(the Hub is not reached); ViT-B/16 is built from its transformers config.",
    ]
    return "\n".join([*lines, "", *notes, ""])


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


def run_gpu_check(options: argparse.Namespace, command: str) -> int:
    output_dir = Path(options.output_dir)
    if (output_dir / REPORT).exists():
        raise ConfigError(f"'{output_dir}' already holds a GPU check ({REPORT}); pass a new --output_dir")
    updates = options.updates or (2 if options.smoke else 30)
    started, clock = utc_now(), time.monotonic()
    device = default_device()
    checks = plan_checks(prepare_data(output_dir / "data", options.smoke), options.smoke, updates)
    threads = cpu_threads(1) if device.type == "cpu" else None
    env = run_environment(threads)
    rows = []
    for index, check in enumerate(checks, start=1):
        prefix = f"[{index:>2}/{len(checks)}] {check.group}: {check.recipe}, {check.setting}:"
        if check.skip_reason is not None:
            rows.append(row(check, [], f"not run: {check.skip_reason}"))
        elif time.monotonic() - clock > options.time_budget_s:
            rows.append(row(check, [], f"not run: past the {options.time_budget_s:.0f} s time budget"))
        else:
            rows.append(row(check, run_check(check, index, output_dir, env)))
        print(f"{prefix} {rows[-1]['outcome']} {rows[-1]['images/s']}", flush=True)
    facts = environment_facts(command, device_name(device), 1, f"{threads} thread(s)", started)
    facts["total wall time"] = f"{time.monotonic() - clock:.0f} s"
    if torch.cuda.is_available():
        facts["CUDA"] = f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    text = markdown(facts, rows)
    write_json(output_dir / "gpu_check.json", {"setup": facts, "rows": rows})
    write_text(output_dir / REPORT, text)
    print(f"\n{text}\nreport: {output_dir / REPORT}", flush=True)
    failed = [entry for entry in rows if entry["outcome"].startswith("FAILED")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "recipes/gpu_check.py", *argv])
    stop_launches_on_sigterm()
    return run_entry_point(lambda: run_gpu_check(build_parser().parse_args(argv), command))
