"""The ablation's figures: learning curves with and without the switches, and the speed-up of each arm."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.bench.common.writer import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(records: list[RunRecord], arms: list[str], path: Path) -> Path:
    """Training loss (every log) and validation loss (every evaluation) against epochs, one line per arm, from each
    arm's first finished repeat: the paper's with / without figures, for every arm at once."""
    plt = _pyplot()
    figure, (train_axes, validation_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in arms:
        run = next((record for record in records if record.arm == arm and record.ok), None)
        if run is None:
            continue
        style = {"color": "black", "linestyle": "--", "zorder": 5} if arm == "baseline" else {}
        logs = [r for r in run.metrics if "loss" in r and "epoch" in r and math.isfinite(r["loss"])]
        evals = [r for r in run.metrics if "eval_loss" in r and not r.get("final")]
        train_axes.plot([r["epoch"] for r in logs], [r["loss"] for r in logs], marker=".", label=arm, **style)
        validation_axes.plot(
            [r["epoch"] for r in evals], [r["eval_loss"] for r in evals], marker="s", label=arm, **style
        )
    train_axes.set(xlabel="epoch", ylabel="cross-entropy", title="Training loss")
    validation_axes.set(xlabel="epoch", ylabel="cross-entropy", title="Validation loss")
    for axes in (train_axes, validation_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    return save_figure(figure, path)


def plot_speedup(rows: list[dict[str, Any]], path: Path) -> Path:
    """A bar per arm: median speed-up over the baseline, whiskers from its slowest to its fastest repeat."""
    plt = _pyplot()
    shown = [row for row in rows if row["speedup"] is not None]
    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 * len(shown) + 2), 4))
    positions = list(range(len(shown)))
    medians = [row["speedup"] for row in shown]
    below = [row["speedup"] - row["speedup_min"] for row in shown]
    above = [row["speedup_max"] - row["speedup"] for row in shown]
    colours = ["grey" if row["arm"] == "baseline" else "tab:blue" for row in shown]
    axes.bar(positions, medians, yerr=[below, above], capsize=6, color=colours)
    for x, value in zip(positions, medians, strict=True):
        axes.annotate(f"{value:.2f}x", (x, value), textcoords="offset points", xytext=(8, 4), fontsize=9)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(positions, [row["arm"] for row in shown], rotation=20, ha="right")
    axes.set(ylabel="speed-up over baseline (images/s)")
    axes.set_title("Steady-state training throughput\n(bar: median; whiskers: slowest to fastest repeat)", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)
