"""What a run leaves behind for people: ``metrics.jsonl``, ``all_results.json`` and ``learning_curves.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from accel_recipes.io import atomic_file, write_text_atomic


class MetricsLog:
    """Appends one JSON line per training log or evaluation; only the main process writes."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, after_step: int, evaluated_again: bool = False) -> None:
    """Drop the records a resumed run will write again (those after the checkpoint it resumes from, and with
    ``evaluated_again`` the evaluation at ``after_step`` itself: an epoch-end evaluation written after a checkpoint
    saved at the epoch's last update is written again when the run resumes from that checkpoint)."""

    def rewritten(record: dict[str, Any]) -> bool:
        step = record.get("step", 0)
        evaluation = any(key.startswith("eval_") for key in record)
        return step > after_step or bool(record.get("final")) or (evaluated_again and step == after_step and evaluation)

    kept = [record for record in read_metrics(path) if not rewritten(record)]
    write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))


def _epoch_means(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Average a per-log training value over each epoch (epochs counted from 1)."""
    sums: dict[int, list[float]] = {}
    for record in records:
        if key in record and "epoch" in record:
            sums.setdefault(math.ceil(record["epoch"] - 1e-9) or 1, []).append(record[key])
    epochs = sorted(sums)
    return [float(epoch) for epoch in epochs], [sum(sums[e]) / len(sums[e]) for e in epochs]


def plot_learning_curves(metrics_path: Path, output_path: Path) -> Path | None:
    """Training and validation loss and validation accuracy against epochs, as the paper's figures show them."""
    records = read_metrics(metrics_path)
    evals = [record for record in records if "eval_loss" in record and not record.get("final")]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_epochs, train_loss = _epoch_means(records, "loss")
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(train_epochs, train_loss, marker="o", label="train loss (epoch mean)")
    if evals:
        loss_axes.plot(
            [r["epoch"] for r in evals], [r["eval_loss"] for r in evals], marker="s", label="validation loss"
        )
        accuracy_axes.plot(
            [r["epoch"] for r in evals], [100 * r["eval_accuracy"] for r in evals], marker="s", label="accuracy"
        )
        accuracy_axes.plot(
            [r["epoch"] for r in evals], [100 * r["eval_f1"] for r in evals], marker="^", label="macro-F1"
        )
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    accuracy_axes.set(xlabel="epoch", ylabel="%", title="Validation accuracy and macro-F1")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    with atomic_file(output_path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")  # the temporary name does not end in .png
    plt.close(figure)
    return output_path
