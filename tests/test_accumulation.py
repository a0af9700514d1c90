"""Gradient accumulation: k micro-batches make exactly the update of one batch k times larger, and a window
cut short at the end of an epoch is weighted by its own length (the paper's code divided it by k)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from accel_recipes.accumulation import TrainingPlan, accumulation_weight
from accel_recipes.config import make_args


def make_problem(num_micro_batches: int, batch_size: int = 4):
    torch.manual_seed(0)
    inputs = torch.randn(num_micro_batches * batch_size, 6)
    targets = torch.randint(0, 3, (num_micro_batches * batch_size,))
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))  # no batch norm
    return inputs, targets, model


def train_with_accumulation(model, inputs, targets, k, batch_size, epochs=2):
    args = make_args({"gradient_accumulation_steps": k, "per_device_train_batch_size": batch_size})
    accelerator = Accelerator(gradient_accumulation_steps=k, cpu=True)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan = TrainingPlan.build(args, len(loader), accelerator.num_processes)
    updates = 0
    for _ in range(epochs):
        for micro_index, (x, y) in enumerate(loader):
            with accelerator.accumulate(model):
                loss = F.cross_entropy(model(x), y)
                accelerator.backward(loss * accumulation_weight(plan, micro_index, k))
                optimizer.step()
                optimizer.zero_grad()
            updates += accelerator.sync_gradients
    return accelerator.unwrap_model(model), updates


def train_with_large_batches(model, inputs, targets, windows, batch_size, epochs=2):
    """The reference: one plain SGD step per window on all of the window's samples at once."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(epochs):
        start = 0
        for window in windows:
            stop = start + window * batch_size
            loss = F.cross_entropy(model(inputs[start:stop]), targets[start:stop])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            start = stop
    return model


@pytest.mark.parametrize(
    ("num_micro_batches", "k", "windows"),
    [
        (6, 2, [2, 2, 2]),  # full windows only
        (7, 3, [3, 3, 1]),  # a partial last window of one micro-batch
        (5, 4, [4, 1]),
        (3, 4, [3]),  # fewer micro-batches than k: one short window per epoch
    ],
)
def test_accumulated_update_equals_the_large_batch_update(num_micro_batches, k, windows):
    inputs, targets, model = make_problem(num_micro_batches)
    reference = train_with_large_batches(copy.deepcopy(model), inputs, targets, windows, batch_size=4)
    accumulated, updates = train_with_accumulation(copy.deepcopy(model), inputs, targets, k, batch_size=4)
    assert updates == 2 * len(windows)
    for ours, theirs in zip(accumulated.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_dividing_every_micro_batch_by_k_would_be_wrong_for_a_partial_window():
    """Guards the test above: the naive scaling gives a measurably different model."""
    inputs, targets, model = make_problem(7)
    reference = train_with_large_batches(copy.deepcopy(model), inputs, targets, [3, 3, 1], batch_size=4)
    naive = copy.deepcopy(model)
    accelerator = Accelerator(gradient_accumulation_steps=3, cpu=True)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=4)
    optimizer = torch.optim.SGD(naive.parameters(), lr=0.5)
    naive, optimizer, loader = accelerator.prepare(naive, optimizer, loader)
    for _ in range(2):
        for x, y in loader:
            with accelerator.accumulate(naive):
                accelerator.backward(F.cross_entropy(naive(x), y))
                optimizer.step()
                optimizer.zero_grad()
    difference = max(
        (a - b).abs().max().item() for a, b in zip(naive.parameters(), reference.parameters(), strict=True)
    )
    assert difference > 1e-3


def test_plan_counts_updates_and_windows():
    args = make_args({"gradient_accumulation_steps": 4, "num_train_epochs": 3, "per_device_train_batch_size": 8})
    plan = TrainingPlan.build(args, micro_batches_per_epoch=10, num_processes=2)
    assert plan.updates_per_epoch == 3
    assert plan.total_updates == 9
    assert plan.global_batch_size == 64
    assert [plan.window_length(i, 4) for i in range(10)] == [4, 4, 4, 4, 4, 4, 4, 4, 2, 2]
