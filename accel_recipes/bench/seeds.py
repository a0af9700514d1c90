"""Finished runs compared arm by arm over seeds: ``python -m accel_recipes.bench.seeds RUNS [--baseline plain]``.

RUNS holds one folder per seed (or repeat), each holding one output_dir per arm, as a loop of ``recipes/train.py
--seed S --output_dir RUNS/seed-S/ARM`` leaves them. For each arm it prints the median and the min-max of each
metric over the seeds, the median steady throughput and its ratio to the baseline arm's: a Markdown table. With
``--target_metric_value`` also each arm's median training time to that validation target (a seed that never reached
it counts as slower than any that did), that time against the baseline's (against the baseline's median training
time when its median run did not reach the target, as at a target set to its own median accuracy), the median
training time, the final validation value of the weights each run exported, how many seeds ended at or past it, and
the arm with the smallest training budget whose median run ends there (``bench.common.target``).

The ablation runner (``recipes/ablate.py``) measures against the paper's baseline (the streaming loader,
pageable memory) and repeats one seed; this compares whatever runs a user made, at the recipe's own settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from accel_recipes.bench.common.stats import median_of, spread
from accel_recipes.bench.common.target import METRICS, Target, TargetSummary, budget_line, summarize_target
from accel_recipes.errors import ConfigError, run_entry_point
from accel_recipes.reporting import read_metrics
from accel_recipes.results import RESULT_KEYS, RESULTS_FILE, key

THROUGHPUT = key("steady_samples_per_second")


@dataclass
class ArmRuns:
    name: str
    results: list[dict] = field(default_factory=list)  # one all_results.json per finished seed
    metrics: list[list[dict]] = field(default_factory=list)  # its metrics.jsonl records, in the same order
    unfinished: list[str] = field(default_factory=list)  # seed folders where the arm has no results yet

    def values(self, metric: str) -> list[float | None]:
        return [record.get(key(metric)) for record in self.results]


def collect(runs: Path) -> dict[str, ArmRuns]:
    """Every arm's results over the seed folders under ``runs``, arms in name order."""
    if not runs.is_dir():
        raise ConfigError(f"runs folder {str(runs)!r} does not exist; pass the folder holding one folder per seed")
    arms: dict[str, ArmRuns] = {}
    for seed_folder in sorted(path for path in runs.iterdir() if path.is_dir()):
        for arm_folder in sorted(path for path in seed_folder.iterdir() if path.is_dir()):
            arm = arms.setdefault(arm_folder.name, ArmRuns(arm_folder.name))
            results_file = arm_folder / RESULTS_FILE
            if results_file.is_file():
                arm.results.append(json.loads(results_file.read_text()))
                arm.metrics.append(read_metrics(arm_folder / "metrics.jsonl"))
            else:
                arm.unfinished.append(seed_folder.name)
    if not any(arm.results for arm in arms.values()):
        raise ConfigError(
            f"no finished run under {str(runs)!r}: expected {runs}/SEED/ARM/{RESULTS_FILE}, as "
            "`recipes/train.py --seed SEED --output_dir RUNS/SEED/ARM` writes"
        )
    return dict(sorted(arms.items()))


def _spread_text(values: list[float | None]) -> str:
    found = spread(values)
    if found is None:
        return "-"
    return f"{found.median:.4f} ({found.min:.4f}-{found.max:.4f})"


def _target_cells(arm: ArmRuns, target: Target, baseline_seconds: float | None) -> tuple[list[str], TargetSummary]:
    summary = summarize_target(list(zip(arm.results, arm.metrics, strict=True)), target)
    runs = summary.runs
    seconds = summary.time_to_target_s
    time = f"{seconds:.1f}" if seconds is not None else "not reached"
    ratio = f"{seconds / baseline_seconds:.2f}x" if seconds is not None and baseline_seconds else "-"
    exported = _spread_text([results.get(target.final_key) for results in arm.results])
    budget = f"{summary.train_runtime_s:.1f}" if summary.train_runtime_s is not None else "-"
    return [f"{time} ({summary.reached}/{runs})", ratio, budget, exported, f"{summary.final_reached}/{runs}"], summary


def table(arms: dict[str, ArmRuns], baseline: str, metrics: list[str], target: Target | None = None) -> str:
    """The Markdown table: the baseline's row first, then the other arms in name order; with a ``target`` its
    columns and, under the table, the smallest budget that reaches it."""
    if baseline not in arms:
        raise ConfigError(f"baseline arm {baseline!r} has no runs; the arms found are {list(arms)}")
    base_throughput = median_of(arms[baseline].values(THROUGHPUT))
    header = ["arm", "seeds", *(f"{metric}, median (min-max)" for metric in metrics), "steady images/s, median"]
    header.append(f"against `{baseline}`")
    if target is not None:
        header += [
            f"s to {target.describe()}, median (seeds reached)",
            f"time against `{baseline}`",
            "training s, median",
            f"final validation {target.metric} of the exported weights, median (min-max)",
            "final validation reached",
        ]
    summaries: dict[str, TargetSummary] = {}
    baseline_seconds, against = None, ""
    if target is not None:
        baseline_runs = arms[baseline]
        reference = summarize_target(list(zip(baseline_runs.results, baseline_runs.metrics, strict=True)), target)
        baseline_seconds = reference.time_to_target_s
        if baseline_seconds is None and reference.train_runtime_s:
            # a target at the baseline's own median accuracy is, by its definition, reached by about half its runs
            # at the end of their budget: "the baseline's time" is then its whole training time
            baseline_seconds = reference.train_runtime_s
            against = (
                f"`{baseline}`'s median run did not reach {target.describe()}: the times are against its median "
                f"training time, {baseline_seconds:.1f} s. "
            )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in sorted(arms.values(), key=lambda arm: arm.name != baseline):
        throughput = median_of(arm.values(THROUGHPUT))
        ratio = f"{throughput / base_throughput:.2f}" if throughput and base_throughput else "-"
        seeds = str(len(arm.results)) + (f" ({len(arm.unfinished)} unfinished)" if arm.unfinished else "")
        cells = [f"`{arm.name}`", seeds, *(_spread_text(arm.values(metric)) for metric in metrics)]
        cells += [f"{throughput:.1f}" if throughput else "-", ratio]
        if target is not None:
            target_cells, summaries[arm.name] = _target_cells(arm, target, baseline_seconds)
            cells += target_cells
        lines.append("| " + " | ".join(cells) + " |")
    if target is not None:
        lines += ["", against + budget_line(summaries, target)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="the folder holding one folder per seed, each one per arm")
    parser.add_argument("--baseline", default="plain", help="the arm the throughput is compared to")
    parser.add_argument(
        "--metrics",
        default="test_accuracy",
        help="comma-separated all_results.json keys to summarise (default: test_accuracy)",
    )
    parser.add_argument(
        "--target_metric_value",
        type=float,
        help="also report the median training time to this validation value, and the smallest budget reaching it",
    )
    parser.add_argument(
        "--target_metric",
        default="accuracy",
        choices=METRICS,
        help="the validation metric of the target, of the weights each run exported (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    def run() -> None:
        metrics = [name.strip() for name in args.metrics.split(",") if name.strip()]
        if not metrics:
            raise ConfigError(f"--metrics {args.metrics!r} names no metric; e.g. test_accuracy,test_f1")
        unknown = [name for name in metrics if name not in RESULT_KEYS]
        if unknown:
            raise ConfigError(
                f"--metrics names {unknown}, not keys of {RESULTS_FILE}; e.g. test_accuracy, eval_ema_accuracy, "
                "time_to_target_seconds (all of them: accel_recipes/results.py)"
            )
        target = None if args.target_metric_value is None else Target(args.target_metric_value, args.target_metric)
        print(table(collect(args.runs), args.baseline, metrics, target))

    return run_entry_point(run)


if __name__ == "__main__":
    sys.exit(main())
