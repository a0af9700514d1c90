"""``python recipes/ablate.py``: run the arms, measure their bounds, write the report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.arms import AMP_DTYPES, BUILTIN_ARMS
from accel_recipes.bench.ablate.bound import summarize_bounds
from accel_recipes.bench.ablate.plan import Ablation, AblationOptions, arm_notes, held_fixed, plan_ablation
from accel_recipes.bench.ablate.report import Report, markdown_table, write_report
from accel_recipes.bench.ablate.runner import cpu_threads, run_all, stop_launches_on_sigterm
from accel_recipes.bench.ablate.summary import RunRecord, budget_summaries, summarize_all
from accel_recipes.bench.common.environment import default_device, environment_facts
from accel_recipes.bench.common.recipe import add_recipe_fields, reject_unknown, split_fields
from accel_recipes.bench.common.target import budget_line
from accel_recipes.errors import ConfigError, run_entry_point

TRAIN_SCRIPT = Path(__file__).resolve().parents[3] / "recipes" / "train.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure what gradient accumulation, mixed precision and pinned memory buy, alone and combined: "
        "one clean `accelerate launch` per arm and repeat, then ablation.md/.csv/.json and two figures.",
        allow_abbrev=False,
        epilog="Any field of recipes/train.py (see its --help) applies to every arm: --max_steps 200 "
        "--max_train_samples 5000. The arms then set precision, TF32, micro-batch, accumulation, pinned memory "
        "and the data path.",
    )
    parser.add_argument("--config", help="YAML recipe every arm starts from")
    parser.add_argument(
        "--arms",
        default="baseline,ga,amp,pin,all",
        help=f"comma-separated: {', '.join(BUILTIN_ARMS)}, '+'-combinations (ga+amp), field:value settings "
        "(channels_last:true) and NAME=SPEC definitions (resident=data_pipeline:resident); default: %(default)s",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm (default: %(default)s)")
    parser.add_argument("--output_dir", help="where the runs and the report go (default: runs/ablate-<recipe>)")
    parser.add_argument("--overwrite_output_dir", default="false", help="run again into a non-empty output_dir")
    parser.add_argument(
        "--target_accuracy",
        type=float,
        help="report the training time to this validation accuracy (runs train their whole budget); the recipe "
        "field --target_metric_value instead stops every run there and reports the same",
    )
    parser.add_argument(
        "--launch_args",
        default="",
        help="arguments of `accelerate launch` for every run, quoted: --launch_args='--multi_gpu --num_processes 2' "
        "(default: one process)",
    )
    parser.add_argument(
        "--amp_dtype", choices=AMP_DTYPES, help="precision of `amp` (default: fp16 on GPU, bf16 on CPU)"
    )
    parser.add_argument("--ga_steps", type=int, help="micro-batches of `ga` (default: the recipe's, or 2)")
    parser.add_argument(
        "--bound",
        default="true",
        help="measure each arm's compute-only bound: the same recipe on synthetic data held on the device, one "
        "bound arm per distinct compute, run in the same interleaved repeats (default: %(default)s)",
    )
    parser.add_argument(
        "--keep_weights", default="false", help="keep each run's checkpoints and model weights (default: deleted)"
    )
    add_recipe_fields(parser.add_argument_group("recipe fields", "any field of recipes/train.py, for every arm"))
    return parser


def _flag(name: str, value: str) -> bool:
    if value.lower() in {"true", "yes", "1", "on"}:
        return True
    if value.lower() in {"false", "no", "0", "off"}:
        return False
    raise ConfigError(f"--{name} must be true or false, got {value!r}")


def parse_options(argv: list[str]) -> AblationOptions:
    parsed, unknown = build_parser().parse_known_args(argv)
    reject_unknown(unknown, ["arms", "repeats", "launch_args", "target_accuracy"])
    own, fields = split_fields(parsed)
    return AblationOptions(
        config=own["config"],
        arms=own["arms"],
        repeats=own["repeats"],
        output_dir=own["output_dir"],
        overwrite_output_dir=_flag("overwrite_output_dir", own["overwrite_output_dir"]),
        target_accuracy=own["target_accuracy"],
        launch_args=own["launch_args"],
        amp_dtype=own["amp_dtype"],
        ga_steps=own["ga_steps"],
        bound=_flag("bound", own["bound"]),
        keep_weights=_flag("keep_weights", own["keep_weights"]),
        recipe_overrides=fields,
    )


def _loader_workers(ablation: Ablation) -> str:
    """The streaming loader's worker count: one number when every arm keeps it, else each arm's own (arms whose
    data is held on the device have no loader workers and are left out)."""
    resolved = {arm.name: ablation.resolved(arm) for arm in ablation.arms}
    counts = {
        name: args.training.dataloader_num_workers
        for name, args in resolved.items()
        if args.data.data_pipeline not in ("resident", "synthetic")
    }
    if not counts:
        return "no loader workers (data held on the device)"
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} loader worker(s)"
    return "loader workers " + ", ".join(f"{name} {count}" for name, count in counts.items())


def setup_facts(ablation: Ablation, records: list[RunRecord], command: str, threads: int | None) -> dict[str, Any]:
    done = next((record.results for record in records if record.ok), {})
    device = done.get("device", default_device().type)
    processes = done.get("num_processes", ablation.processes)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP's default)")
    cpu = f"{threads} thread(s) per process, OMP_WAIT_POLICY={policy}"
    model, data, training = ablation.base.model, ablation.base.data, ablation.base.training
    length = f"max_steps {training.max_steps}" if training.max_steps > 0 else f"{training.num_train_epochs:g} epochs"
    samples = f", max_train_samples {data.max_train_samples}" if data.max_train_samples else ""
    return {
        **environment_facts(command, device, processes, cpu),
        "model": f"{model.model_name_or_path} ({'pretrained' if model.pretrained else 'from scratch'})",
        "data": data.dataset_name + samples,
        "training": f"{length}, effective batch {ablation.context.effective_batch} per process, "
        f"{_loader_workers(ablation)}, seed {training.seed}",
        "repeats": f"{ablation.options.repeats} per arm, interleaved, each repeat's order rotated",
    }


def run_notes(records: list[RunRecord]) -> list[str]:
    notes = []
    loads = [record.load_average for record in records if record.load_average is not None]
    if loads:
        notes.append(
            f"The machine's 1-minute load average while the runs ran was {min(loads):.1f} to {max(loads):.1f} on "
            f"{os.cpu_count()} logical CPU(s) (each run's own processes included; per run in ablation.json). Where it "
            "exceeds the CPU count, other work competed for the cores and the throughputs are noisy."
        )
    if not any(record.ok for record in records if record.arm == "baseline"):
        notes.append("every baseline run failed (see Failed runs): there is no speed-up to report")
    return notes


def run_ablation(options: AblationOptions, command: str) -> int:
    device_type = default_device().type
    ablation = plan_ablation(options, device_type)
    threads = cpu_threads(ablation.processes) if device_type == "cpu" else None
    ablation.output_dir.mkdir(parents=True, exist_ok=True)
    runs = ablation.planned_runs()
    print(f"{len(ablation.arms)} arm(s) x {options.repeats} repeat(s) into {ablation.output_dir}", flush=True)
    records = run_all(runs, TRAIN_SCRIPT, options.launch_args, options.config, threads, None, options.keep_weights)
    done = [record.results for record in records if record.ok]
    ablation.processes = int(done[0].get("num_processes", ablation.processes)) if done else ablation.processes
    bounds = summarize_bounds(ablation.bounds, records, ablation.resolved)
    by_arm = {name: entry["images_per_second"] for entry in bounds for name in entry["arms"]}
    target = ablation.target
    rows = summarize_all(ablation.arms, records, by_arm, target)
    budget = [budget_line(budget_summaries(records, target), target)] if target is not None else []
    config_name = f"{Path(options.config).parent.name}/{Path(options.config).stem}" if options.config else "recipe"
    report = Report(
        title=f"Ablation: {config_name} ({ablation.base.model.model_name_or_path})",
        setup=setup_facts(ablation, records, command, threads),
        rows=rows,
        held_fixed=held_fixed(ablation, device_type),
        notes=budget + arm_notes(ablation) + run_notes(records),
        arms=[{"name": arm.name, "switches": arm.parts, "overrides": arm.overrides} for arm in ablation.arms],
        bounds=bounds,
        records=records,
    )
    out = ablation.output_dir
    write_report(report, out)
    print(f"\n{markdown_table(rows)}\n\nreport: {out / 'ablation.md'}", flush=True)
    return 0 if all(record.ok for record in records) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "recipes/ablate.py", *argv])
    stop_launches_on_sigterm()
    return run_entry_point(lambda: run_ablation(parse_options(argv), command))
