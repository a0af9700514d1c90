"""Gradient accumulation through the engine's own step: k micro-batches through ``TrainingStep.micro_batch`` give
the weights of one k-times-larger batch, and a window cut short at the end of an epoch is weighted by its own
length (the paper's code divided it by k)."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

import accel_recipes.engine.step as step_module
from accel_recipes.config import make_args
from accel_recipes.engine import TrainingStep
from accel_recipes.models import ModelSpec

BATCH = 4
SIDE = 4


def make_problem(num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """uint8 images, labels, and a small classifier without batch norm (so batch size does not change the maths)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_samples, 3, SIDE, SIDE), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (num_samples,), generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * SIDE * SIDE, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    return images, labels, model


def spec_of(model: torch.nn.Module) -> ModelSpec:
    return ModelSpec(
        model=model,
        library="timm",
        name="tiny-mlp",
        architecture="tiny-mlp",
        input_size=SIDE,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        interpolation="bilinear",
        pretrained=False,
        small_image_stem=False,
        patch_size=None,
        num_parameters=sum(p.numel() for p in model.parameters()),
    )


def train_through_engine(model, batches: list[tuple[torch.Tensor, torch.Tensor]], k: int, epochs: int = 2):
    """Train with the engine's step: ``batches`` (micro-batches of an epoch) through an Accelerate-prepared loader,
    so the end of the epoch closes a partial window exactly as in training. Returns the weights and updates."""
    training = make_args(
        {
            "gradient_accumulation_steps": k,
            "per_device_train_batch_size": len(batches[0][0]),
            "num_train_epochs": epochs,
            "learning_rate": 0.5,
            "momentum": 0.9,
            "weight_decay": 1e-3,
            "lr_scheduler_type": "cosine",
            "mixed_precision": "no",
        }
    ).training
    accelerator = Accelerator(gradient_accumulation_steps=k, cpu=True, step_scheduler_with_optimizer=False)
    sizes = [len(images) for images, _ in batches]
    dataset = TensorDataset(torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches]))
    loader = accelerator.prepare(DataLoader(dataset, batch_sampler=_fixed_batches(sizes)))
    step = TrainingStep(training, spec_of(model), accelerator, micro_batches_per_epoch=len(batches))
    updates = 0
    for _ in range(epochs):
        for micro_index, (images, labels) in enumerate(loader):
            step.micro_batch(images, labels, micro_index)
            if accelerator.sync_gradients:
                step.after_update()
                updates += 1
    return accelerator.unwrap_model(step.model), updates


def _fixed_batches(sizes: list[int]) -> list[list[int]]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [list(range(start, start + size)) for start, size in zip(starts, sizes, strict=True)]


def micro_batches(images, labels, sizes):
    out, start = [], 0
    for size in sizes:
        out.append((images[start : start + size], labels[start : start + size]))
        start += size
    return out


def accumulated_and_reference(num_micro_batches: int, k: int, windows: list[int]):
    images, labels, model = make_problem(num_micro_batches * BATCH)
    accumulated, updates = train_through_engine(
        copy.deepcopy(model), micro_batches(images, labels, [BATCH] * num_micro_batches), k
    )
    # The reference: the same engine without accumulation, one batch per window holding all its samples.
    reference, reference_updates = train_through_engine(
        copy.deepcopy(model), micro_batches(images, labels, [window * BATCH for window in windows]), 1
    )
    assert updates == reference_updates == 2 * len(windows)
    return accumulated, reference


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
    accumulated, reference = accumulated_and_reference(num_micro_batches, k, windows)
    for ours, theirs in zip(accumulated.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_naive_one_over_k_weighting_in_the_engine_would_fail_the_equivalence(monkeypatch):
    """Guards the test above: with every micro-batch weighted 1/k (Accelerate's plain division, the paper's code)
    the engine's partial window gives a measurably different model."""
    monkeypatch.setattr(step_module, "accumulation_weight", lambda plan, micro_index, k: 1.0)
    accumulated, reference = accumulated_and_reference(7, 3, [3, 3, 1])
    difference = max(
        (a - b).abs().max().item() for a, b in zip(accumulated.parameters(), reference.parameters(), strict=True)
    )
    assert difference > 1e-3


def test_a_lost_or_doubled_weight_in_the_engine_would_fail_the_equivalence(monkeypatch):
    """Even with full windows only: a step that loses (x0.5) or doubles (x2) the weight of accumulated micro-batches
    is caught (the reference, trained without accumulation, keeps the true weight)."""
    original = step_module.accumulation_weight

    def scaled(factor: float):
        return lambda plan, i, k: (factor if k > 1 else 1.0) * original(plan, i, k)

    for factor in (0.5, 2.0):
        monkeypatch.setattr(step_module, "accumulation_weight", scaled(factor))
        accumulated, reference = accumulated_and_reference(6, 2, [2, 2, 2])
        difference = max(
            (a - b).abs().max().item() for a, b in zip(accumulated.parameters(), reference.parameters(), strict=True)
        )
        assert difference > 1e-3, factor
