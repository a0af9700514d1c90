"""Optimizer and learning-rate schedule factories; schedules count optimizer updates, not micro-batches."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from accel_recipes.config import TrainingArguments


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: biases and normalisation parameters (all 1-D tensors) get none."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# torch's optimizer kernels: foreach (one launch per parameter group), fused (one kernel; CUDA and recent CPUs),
# for_loop (one parameter at a time); auto lets torch pick.
IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "auto": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
    "for_loop": {"foreach": False},
}


def create_optimizer(training: TrainingArguments, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model, training.weight_decay)
    options = IMPLEMENTATIONS[training.optimizer_implementation]
    if training.optim == "sgd":
        return torch.optim.SGD(
            groups, lr=training.learning_rate, momentum=training.momentum, nesterov=training.momentum > 0, **options
        )
    return torch.optim.AdamW(
        groups,
        lr=training.learning_rate,
        betas=(training.adam_beta1, training.adam_beta2),
        eps=training.adam_epsilon,
        **options,
    )


ONE_CYCLE_MIN_UPDATES = 4  # OneCycleLR needs at least 2 updates in each of its two phases


def warmup_updates(training: TrainingArguments, total_updates: int) -> int:
    if training.warmup_steps > 0:
        return min(training.warmup_steps, total_updates)
    return math.ceil(training.warmup_ratio * total_updates)


def create_scheduler(
    training: TrainingArguments, optimizer: torch.optim.Optimizer, total_updates: int, position: int = 0
) -> LRScheduler:
    """Linear warmup, then cosine / linear decay to zero, or constant; ``one_cycle`` is torch's OneCycleLR
    (the paper's ResNet schedule) with the warmup as its rising phase (30% when no warmup is set); runs of fewer
    than 4 updates, too short for its two phases, get the cosine schedule instead. ``position`` > 0: the schedule
    as it stands after that many updates (torch's ``last_epoch``; the optimizer's groups must hold their
    ``initial_lr``, as a restored optimizer does), its values set in the optimizer."""
    warmup = warmup_updates(training, total_updates)
    last_epoch = position - 1
    if training.lr_scheduler_type == "one_cycle" and total_updates >= ONE_CYCLE_MIN_UPDATES:
        rising = min(max(warmup if warmup else round(0.3 * total_updates), 2), total_updates - 2)
        return OneCycleLR(
            optimizer,
            max_lr=training.learning_rate,
            total_steps=total_updates,
            pct_start=rising / total_updates,
            last_epoch=last_epoch,
        )

    def multiplier(update: int) -> float:
        if update < warmup:
            return (update + 1) / (warmup + 1)
        if training.lr_scheduler_type == "constant":
            return 1.0
        progress = (update - warmup) / max(1, total_updates - warmup)
        if training.lr_scheduler_type == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def rebuild_schedule(
    training: TrainingArguments, scheduler: LRScheduler, optimizer: torch.optim.Optimizer, total_updates: int
) -> None:
    """Turn ``scheduler``, just restored from a checkpoint of a run of another length, into the schedule of a run of
    ``total_updates`` at the same position, and set its learning rate (and one-cycle momentum) in ``optimizer``, as
    transformers' Trainer and timm's train.py continue a resumed run on a schedule built for the new length.

    In place, because Accelerate checkpoints the object registered with it; torch has no call that changes a
    schedule's length (OneCycleLR keeps ``total_steps`` and its phases in its state), so a schedule of the new
    length is built at the restored position and its state loaded into ``scheduler``."""
    rebuilt = create_scheduler(training, optimizer, total_updates, position=scheduler.last_epoch)
    scheduler.load_state_dict(rebuilt.state_dict())
