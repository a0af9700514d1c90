"""From the runs of each arm to one row of the table: medians, min-max spreads, speed-up, share of the bound
(the statistics are ``bench.common.stats``'s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.arms import Arm, effective_batch
from accel_recipes.bench.common.stats import median_of, spread
from accel_recipes.bench.common.target import Target, TargetSummary, summarize_target
from accel_recipes.results import key

# The table's columns, in order; ablation.csv has exactly these, ablation.md a readable form of each.
COLUMNS = (
    "arm",
    "switches",
    "micro_batch",
    "gradient_accumulation_steps",
    "processes",
    "effective_batch",
    "mixed_precision",
    "pin_memory",
    "runs_ok",
    "eval_accuracy",
    "eval_f1",
    "test_accuracy",
    "test_f1",
    "train_runtime_s",
    "seconds_per_epoch",
    "images_per_second_min",
    "images_per_second_median",
    "images_per_second_max",
    "speedup",
    "speedup_min",
    "speedup_max",
    "bound_images_per_second",
    "fraction_of_bound",
    "peak_memory_mb",
    "skipped_updates",
    "data_wait_fraction",
    "time_to_target_s",
    "target_reached",
    "final_reached_target",
)


@dataclass
class RunRecord:
    """One arm, one repeat: a finished (or failed) ``accelerate launch`` and what it wrote."""

    arm: str
    repeat: int
    output_dir: Path
    returncode: int
    wall_seconds: float
    results: dict[str, Any] | None = None  # all_results.json
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    error: str | None = None
    load_average: float | None = None  # mean 1-minute load of the machine while the run ran (other users included)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.results is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "repeat": self.repeat,
            "output_dir": str(self.output_dir),
            "returncode": self.returncode,
            "wall_seconds": self.wall_seconds,
            "load_average": self.load_average,
            "error": self.error,
            "results": self.results,
        }


def _result(records: list[RunRecord], key: str) -> list[float | None]:
    return [record.results.get(key) for record in records if record.ok]


def summarize(
    arm: Arm,
    records: list[RunRecord],
    bound: float | None,
    baseline_throughput: float | None,
    target: Target | None,
) -> dict[str, Any]:
    """One row of the table (keys: ``COLUMNS``); numbers are medians over the arm's successful repeats."""
    done = [record for record in records if record.ok]
    first = done[0].results if done else {}
    throughput = spread(_result(done, key("steady_samples_per_second")))
    processes = int(first.get(key("num_processes"), 1) or 1)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        arm=arm.name,
        switches="+".join(arm.parts) or "-",
        micro_batch=first.get(key("per_device_train_batch_size"), arm.overrides["per_device_train_batch_size"]),
        gradient_accumulation_steps=first.get(
            "gradient_accumulation_steps", arm.overrides["gradient_accumulation_steps"]
        ),
        processes=processes,
        effective_batch=first.get(key("global_batch_size"), effective_batch(arm.overrides) * processes),
        mixed_precision=first.get(key("mixed_precision"), arm.overrides.get("mixed_precision")),
        pin_memory=bool(arm.overrides.get("dataloader_pin_memory")),
        runs_ok=f"{len(done)}/{len(records)}",
        eval_accuracy=median_of(_result(done, key("eval_accuracy"))),
        eval_f1=median_of(_result(done, "eval_f1")),
        test_accuracy=median_of(_result(done, key("test_accuracy"))),
        test_f1=median_of(_result(done, "test_f1")),
        train_runtime_s=median_of(_result(done, key("train_runtime"))),
        seconds_per_epoch=median_of(
            [r.results[key("train_runtime")] / r.results[key("epoch")] for r in done if r.results.get(key("epoch"))]
        ),
        peak_memory_mb=median_of(_result(done, key("peak_memory_mb"))),
        skipped_updates=median_of(_result(done, key("skipped_updates"))),
        data_wait_fraction=median_of(_result(done, key("data_wait_fraction"))),
        bound_images_per_second=bound,
    )
    if throughput:
        row.update(
            images_per_second_min=throughput.min,
            images_per_second_median=throughput.median,
            images_per_second_max=throughput.max,
        )
        if baseline_throughput:
            row.update(
                speedup=throughput.median / baseline_throughput,
                speedup_min=throughput.min / baseline_throughput,
                speedup_max=throughput.max / baseline_throughput,
            )
        if bound:
            row["fraction_of_bound"] = throughput.median / bound
    if target is not None and done:
        summary = target_summary(done, target)
        row["time_to_target_s"] = summary.time_to_target_s
        row["target_reached"] = f"{summary.reached}/{summary.runs}"
        row["final_reached_target"] = f"{summary.final_reached}/{summary.runs}"
    return row


def target_summary(done: list[RunRecord], target: Target) -> TargetSummary:
    return summarize_target([(record.results, record.metrics) for record in done], target)


def budget_summaries(records: list[RunRecord], target: Target) -> dict[str, TargetSummary]:
    """Each arm's time-to-target summary over its finished repeats, for the smallest-budget line."""
    arms: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.ok:
            arms.setdefault(record.arm, []).append(record)
    return {arm: target_summary(done, target) for arm, done in arms.items()}


def summarize_all(
    arms: list[Arm],
    records: list[RunRecord],
    bounds: dict[str, float | None],
    target: Target | None,
) -> list[dict[str, Any]]:
    """Rows for every arm; speed-ups are over the baseline's median throughput (so the baseline's is 1 exactly)."""
    by_arm = {arm.name: [record for record in records if record.arm == arm.name] for arm in arms}
    baseline = spread(_result(by_arm.get("baseline", []), "steady_samples_per_second"))
    reference = baseline.median if baseline else None
    rows = [summarize(arm, by_arm[arm.name], bounds.get(arm.name), reference, target) for arm in arms]
    for row in rows:
        if row["arm"] == "baseline" and row["speedup"] is not None:
            row["speedup"] = 1.0  # x / x, without a rounding doubt
    return rows
