"""Classification metrics from one confusion matrix: accuracy and macro-F1, right under several processes.

The engine gathers predictions, labels and per-sample losses of every batch from all processes with
``accelerator.gather_for_metrics`` (which drops the samples the distributed sampler duplicated to even out the
last batch), so every process adds the same samples, each once, into a ``num_classes x num_classes`` count
matrix, and every metric is read from it. Macro-F1 averages the per-class F1 with equal
weight, as scikit-learn's ``f1_score(average="macro")`` does; micro-F1 is not reported because for
single-label classification it always equals accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts with true classes on rows and predicted classes on columns (int64, on the inputs' device)."""
    labels = labels.reshape(-1).long()
    predictions = predictions.reshape(-1).long()
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy_from_confusion(matrix: torch.Tensor) -> float:
    total = matrix.sum().item()
    return matrix.diagonal().sum().item() / total if total else 0.0


def macro_f1_from_confusion(matrix: torch.Tensor) -> float:
    """Mean over classes of 2TP / (2TP + FP + FN); a class absent from both labels and predictions scores 0,
    as scikit-learn does with ``zero_division=0``."""
    matrix = matrix.double()
    true_positives = matrix.diagonal()
    denominators = matrix.sum(dim=0) + matrix.sum(dim=1)  # (TP + FP) + (TP + FN)
    per_class = torch.where(denominators > 0, 2 * true_positives / denominators.clamp(min=1), 0.0)
    return per_class.mean().item()


@dataclass
class MetricAccumulator:
    """Adds up loss and confusion counts over evaluation batches of one process."""

    num_classes: int
    device: torch.device | str = "cpu"
    matrix: torch.Tensor = field(init=False)
    loss_sum: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=self.device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, per_sample_loss: torch.Tensor) -> None:
        self.matrix += confusion_matrix(labels, predictions, self.num_classes)
        self.loss_sum += per_sample_loss.double().sum()

    def compute(self, prefix: str) -> dict[str, float]:
        """``{prefix}_loss``, ``_accuracy``, ``_f1`` (macro) and ``_samples`` of everything added so far."""
        count = self.matrix.sum().item()
        return {
            f"{prefix}_loss": self.loss_sum.item() / count if count else float("nan"),
            f"{prefix}_accuracy": accuracy_from_confusion(self.matrix),
            f"{prefix}_f1": macro_f1_from_confusion(self.matrix),
            f"{prefix}_samples": count,
        }
