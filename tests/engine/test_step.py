"""Gradient accumulation through the real training loop (``Trainer`` on a tiny MLP, ``loop_harness``): k micro-batches
give the weights of one k-times-larger batch, a window cut short at the end of an epoch is weighted by its own
length (the paper's code divided it by k), and each update closes exactly one window, whose mean loss it logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from loop_harness import (  # tests/engine is on the path (rootdir import mode)
    BATCH,
    TinyData,
    kind_of,
    make_data,
    make_trainer,
    metrics_of,
    tiny_run_environment,
    training_args,
    weights,
)
from torch.utils.data import DataLoader, TensorDataset

import accel_recipes.engine.step as step_module
from accel_recipes.engine import RunResult

CASES = [
    (6, 2, [2, 2, 2]),  # full windows only
    (7, 3, [3, 3, 1]),  # a partial last window of one micro-batch
    (5, 4, [4, 1]),
    (3, 4, [3]),  # fewer micro-batches than k: one short window per epoch
]


@pytest.fixture(scope="module", autouse=True)
def environment() -> Iterator[None]:
    with tiny_run_environment():
        yield


def train_on_batches(output_dir: Path, data: TinyData, sizes: list[int], k: int, epochs: int = 2) -> RunResult:
    """The Trainer on ``data``'s training samples cut, in order, into micro-batches of ``sizes`` every epoch (an
    Accelerate-prepared DataLoader, as on the stream pipeline, whose end closes a partial window as in training)."""
    training = training_args(
        output_dir,
        gradient_accumulation_steps=k,
        num_train_epochs=epochs,
        learning_rate=0.5,
        momentum=0.9,
        weight_decay=1e-3,
        lr_scheduler_type="cosine",
    )

    def loader(accelerator: Any) -> DataLoader:
        dataset = TensorDataset(data.train.images, data.train.labels)
        return accelerator.prepare(DataLoader(dataset, batch_sampler=_fixed_batches(sizes)))

    return make_trainer(training, data, make_train_loader=loader).fit()


def _fixed_batches(sizes: list[int]) -> list[list[int]]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [list(range(start, start + size)) for start, size in zip(starts, sizes, strict=True)]


def accumulated_and_reference(
    tmp_path: Path, num_micro_batches: int, k: int, windows: list[int]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    data = make_data(num_micro_batches)
    accumulated = train_on_batches(tmp_path / "accumulated", data, [BATCH] * num_micro_batches, k)
    # The reference: the same loop without accumulation, one batch per window holding all its samples. (Its batches
    # are larger than per_device_train_batch_size, which only the count of skipped images reads.)
    reference = train_on_batches(tmp_path / "reference", data, [window * BATCH for window in windows], 1)
    assert accumulated.metrics["train_updates"] == reference.metrics["train_updates"] == 2 * len(windows)
    return weights(accumulated.model), weights(reference.model)


def largest_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    return max((first[name] - second[name]).abs().max().item() for name in first)


@pytest.mark.parametrize(("num_micro_batches", "k", "windows"), CASES)
def test_accumulated_update_equals_the_large_batch_update(tmp_path, num_micro_batches, k, windows):
    accumulated, reference = accumulated_and_reference(tmp_path, num_micro_batches, k, windows)
    assert accumulated.keys() == reference.keys()
    for name in accumulated:
        torch.testing.assert_close(accumulated[name], reference[name], rtol=1e-5, atol=1e-6)


def test_naive_one_over_k_weighting_in_the_engine_would_fail_the_equivalence(tmp_path, monkeypatch):
    """Guards the test above: with every micro-batch weighted 1/k (Accelerate's plain division, the paper's code)
    the loop's partial window gives a measurably different model."""
    monkeypatch.setattr(step_module, "accumulation_weight", lambda plan, micro_index, k: 1.0)
    accumulated, reference = accumulated_and_reference(tmp_path, 7, 3, [3, 3, 1])
    assert largest_difference(accumulated, reference) > 1e-3


def test_a_lost_or_doubled_weight_in_the_engine_would_fail_the_equivalence(tmp_path, monkeypatch):
    """Even with full windows only: a step that loses (x0.5) or doubles (x2) the weight of accumulated micro-batches
    is caught (the reference, trained without accumulation, keeps the true weight)."""
    original = step_module.accumulation_weight

    def scaled(factor: float):
        return lambda plan, i, k: (factor if k > 1 else 1.0) * original(plan, i, k)

    for factor in (0.5, 2.0):
        monkeypatch.setattr(step_module, "accumulation_weight", scaled(factor))
        accumulated, reference = accumulated_and_reference(tmp_path / str(factor), 6, 2, [2, 2, 2])
        assert largest_difference(accumulated, reference) > 1e-3, factor


@pytest.mark.parametrize(("num_micro_batches", "k", "windows"), CASES)
def test_each_update_closes_one_window_and_logs_its_mean_loss(tmp_path, num_micro_batches, k, windows):
    """Over two shuffled epochs: update u is taken after the last micro-batch of the u-th window (a checkpoint of
    each update records how many micro-batches of its epoch were trained), and its log reports the mean loss of
    that window's micro-batches, each counted once, the short last window's too (the weights of
    ``accumulation_weight`` divided by k sum to one over any window)."""
    training = training_args(
        tmp_path, gradient_accumulation_steps=k, save_strategy="steps", save_steps=1, throughput_warmup_steps=100
    )
    losses: dict[tuple[int, int], float] = {}
    trained_in_epoch: list[int] = []

    def on_batch(epoch: int, index: int, batch: Any) -> None:
        images, labels = batch
        with torch.no_grad():  # the weights the loop is about to train this micro-batch on
            losses[epoch, index] = torch.nn.functional.cross_entropy(trainer.step.forward(images), labels).item()

    def on_checkpoint(checkpoint: Path) -> None:
        trained_in_epoch.append(json.loads((checkpoint / "training_state.json").read_text())["micro_in_epoch"])

    trainer = make_trainer(training, make_data(num_micro_batches), on_batch=on_batch, on_checkpoint=on_checkpoint)
    trainer.fit()

    ends = [sum(windows[: i + 1]) for i in range(len(windows))]  # micro-batches trained when each window closes
    assert trained_in_epoch == ends * 2
    assert trainer.plan.updates_per_epoch == len(windows)
    expected = [
        sum(losses[epoch, index] for index in range(end - size, end)) / size
        for epoch in range(2)
        for end, size in zip(ends, windows, strict=True)
    ]
    logs = [record for record in metrics_of(tmp_path) if kind_of(record) == "log"]
    assert [record["step"] for record in logs] == list(range(1, 2 * len(windows) + 1))
    assert [record["loss"] for record in logs] == pytest.approx(expected, rel=1e-6)
