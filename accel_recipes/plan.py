"""Gradient accumulation done right: the plan of updates and the weight of each micro-batch's loss.

Accelerate's ``accelerator.backward`` divides every micro-batch loss by ``gradient_accumulation_steps`` (k),
which mis-scales a window cut short at the end of an epoch (the flaw of the paper's code). Here each
micro-batch loss is first multiplied by ``k / window length``, so a window of equal micro-batches gives exactly
the gradient of one batch holding all of its samples, partial windows included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from accel_recipes.config import TrainingArguments
from accel_recipes.errors import TrainingError


def require_a_micro_batch(micro_batches: int, train_samples: int, batch_size: int, num_processes: int) -> None:
    """A training set too small for one micro-batch on every process is an error naming the field to lower."""
    if micro_batches == 0:
        raise TrainingError(
            f"the training set has {train_samples} samples, fewer than one micro-batch of "
            f"{batch_size} x {num_processes} process(es); lower per_device_train_batch_size"
        )


@dataclass
class TrainingPlan:
    micro_batches_per_epoch: int
    updates_per_epoch: int
    total_updates: int
    epochs: int
    global_batch_size: int

    @classmethod
    def build(cls, training: TrainingArguments, micro_batches_per_epoch: int, num_processes: int) -> TrainingPlan:
        k = training.gradient_accumulation_steps
        updates_per_epoch = math.ceil(micro_batches_per_epoch / k)
        if training.max_steps > 0:
            total = training.max_steps
        else:
            total = max(1, math.ceil(training.num_train_epochs * updates_per_epoch))
        return cls(
            micro_batches_per_epoch=micro_batches_per_epoch,
            updates_per_epoch=updates_per_epoch,
            total_updates=total,
            epochs=math.ceil(total / updates_per_epoch),
            global_batch_size=training.per_device_train_batch_size * k * num_processes,
        )

    def window_length(self, micro_index: int, k: int) -> int:
        """Micro-batches in the accumulation window holding micro-batch ``micro_index`` of an epoch."""
        start = (micro_index // k) * k
        return min(k, self.micro_batches_per_epoch - start)


def accumulation_weight(plan: TrainingPlan, micro_index: int, k: int) -> float:
    """Factor on a micro-batch's mean loss before ``accelerator.backward`` (which divides by k): k / window
    length, so the window's gradient is the mean over all its samples, also for a partial window."""
    return k / plan.window_length(micro_index, k)
