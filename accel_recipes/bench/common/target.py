"""Time to a target, the headline of fast-training benchmarks (airbench, FFCV, Composer): for each run the
training seconds to the first validation that reaches the target, and which training budget is the smallest whose
final validation reaches it.

A run is judged on the weights it exports: its EMA's metric when ``all_results.json`` says the EMA weights were
exported (``metric_for_best_model: ema_*``), else the live weights'. The time is the run's own
``time_to_target_seconds`` when it trained with this very target (``target_metric_value``), else read from
``metrics.jsonl``: the ``train_runtime`` of the first evaluation during training that reaches it (the same
number: the run records it from that evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accel_recipes.bench.common.stats import median_of
from accel_recipes.results import evaluation_key, key

METRICS = ("accuracy", "f1", "loss")


@dataclass(frozen=True)
class Target:
    """``value`` of validation ``metric`` (accuracy, f1 or loss: at or below it for loss, else at or above)."""

    value: float
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"target metric must be one of {list(METRICS)}, got {self.metric!r}")

    def describe(self) -> str:
        return f"validation {self.metric} {'<=' if self.metric == 'loss' else '>='} {self.value:g}"

    def reached_by(self, value: Any) -> bool:
        if not isinstance(value, (int, float)):
            return False
        return value <= self.value if self.metric == "loss" else value >= self.value

    def key_during_training(self, results: dict[str, Any]) -> str:
        """The key, in ``metrics.jsonl``'s evaluations during training, of the weights a run exports:
        ``eval_ema_accuracy`` when it exports its EMA, else ``eval_accuracy``."""
        return evaluation_key("eval", self.metric, ema=results.get(key("exported_weights")) == "ema")

    @property
    def final_key(self) -> str:
        """The key, in ``all_results.json``, of the exported weights' final validation: ``eval_accuracy`` whichever
        weights were exported (the best model, or the EMA copied into the model, is what the final evaluation
        scores; ``eval_ema_*`` there is the EMA as training left it)."""
        return evaluation_key("eval", self.metric)


def time_to_target(results: dict[str, Any], metrics: Sequence[dict[str, Any]], target: Target) -> float | None:
    """Training seconds (evaluation excluded) to the first validation reaching ``target``; None when never."""
    own_metric = results.get(key("metric_for_best_model"))
    if results.get(key("target_metric_value")) == target.value and own_metric in (
        target.metric,
        f"ema_{target.metric}",
    ):
        return results.get(key("time_to_target_seconds"))
    name = target.key_during_training(results)
    for record in metrics:
        if name in record and not record.get("final") and target.reached_by(record[name]):
            return float(record[key("train_runtime")])
    return None


def censored_median(times: Sequence[float | None]) -> float | None:
    """The median time over all runs, a run that never reached the target counting as slower than any that did
    (survival analysis' right-censoring): None when the median run did not reach it. Dropping those runs instead
    would let an arm that reached the target in 1 of 3 seeds report that one seed's time."""
    if not times:
        return None
    ordered = sorted(math.inf if time is None else float(time) for time in times)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return None if math.isinf(median) else median


def final_reaches(results: dict[str, Any], target: Target) -> bool:
    """Whether the run's final validation (of the weights it exported) reaches ``target``."""
    return target.reached_by(results.get(target.final_key))


@dataclass(frozen=True)
class TargetSummary:
    """One arm over its runs: the median run's time to the target (None when the median run never reached it),
    how many runs did, how many finished at or past it, and the median training budget (train_runtime)."""

    time_to_target_s: float | None
    reached: int
    final_reached: int
    runs: int
    train_runtime_s: float | None

    @property
    def final_median_reaches(self) -> bool:
        """A majority of the runs end at or past the target (the median run does)."""
        return self.runs > 0 and 2 * self.final_reached > self.runs


def summarize_target(runs: Sequence[tuple[dict[str, Any], Sequence[dict[str, Any]]]], target: Target) -> TargetSummary:
    """``runs``: each finished run's (all_results.json, metrics.jsonl records)."""
    times = [time_to_target(results, metrics, target) for results, metrics in runs]
    return TargetSummary(
        time_to_target_s=censored_median(times),
        reached=sum(time is not None for time in times),
        final_reached=sum(final_reaches(results, target) for results, _ in runs),
        runs=len(runs),
        train_runtime_s=median_of([results.get(key("train_runtime")) for results, _ in runs]),
    )


def smallest_budget(summaries: dict[str, TargetSummary]) -> tuple[str, float] | None:
    """The arm with the smallest median training time whose median run ends at or past the target."""
    reaching = [
        (summary.train_runtime_s, name)
        for name, summary in summaries.items()
        if summary.final_median_reaches and summary.train_runtime_s is not None
    ]
    if not reaching:
        return None
    seconds, name = min(reaching)
    return name, seconds


def budget_line(summaries: dict[str, TargetSummary], target: Target) -> str:
    """The sentence under a table: which arm is the smallest budget to reach the target."""
    found = smallest_budget(summaries)
    if found is None:
        return f"No arm's median run ends at {target.describe()}."
    name, seconds = found
    return (
        f"Smallest training budget whose median run ends at {target.describe()}: `{name}`, {seconds:.1f} s of training."
    )
