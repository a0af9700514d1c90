"""Accuracy and macro-F1 from one confusion matrix, checked against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from accel_recipes.metrics import MetricAccumulator, confusion_matrix, macro_f1_from_confusion


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_macro_f1_match_scikit_learn(seed):
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 7, size=500)
    predictions = np.where(generator.random(500) < 0.6, labels, generator.integers(0, 7, size=500))
    accumulator = MetricAccumulator(num_classes=7)
    for start in range(0, 500, 64):  # in batches, as evaluation adds them
        chunk = slice(start, start + 64)
        accumulator.update(
            torch.tensor(predictions[chunk]), torch.tensor(labels[chunk]), torch.ones(len(labels[chunk]))
        )
    metrics = accumulator.compute("eval")
    assert metrics["eval_accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert metrics["eval_f1"] == pytest.approx(f1_score(labels, predictions, average="macro", labels=range(7)))
    assert metrics["eval_samples"] == 500
    assert metrics["eval_loss"] == pytest.approx(1.0)


def test_macro_f1_differs_from_accuracy_on_imbalanced_predictions():
    labels = torch.tensor([0] * 90 + [1] * 10)
    predictions = torch.zeros(100, dtype=torch.long)  # always the majority class
    matrix = confusion_matrix(labels, predictions, 2)
    assert matrix.diagonal().sum().item() / 100 == 0.9
    assert macro_f1_from_confusion(matrix) == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert macro_f1_from_confusion(matrix) < 0.5


def test_absent_class_scores_zero_like_scikit_learn():
    labels, predictions = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])
    expected = f1_score(labels, predictions, average="macro", labels=[0, 1, 2], zero_division=0)
    assert macro_f1_from_confusion(confusion_matrix(labels, predictions, 3)) == pytest.approx(expected)
