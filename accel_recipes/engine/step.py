"""One training step on Accelerate: the model, optimizer and schedule it prepares, and a micro-batch's forward,
backward and (at the end of its accumulation window) update.

The step is Accelerate's canonical one (``accelerator.accumulate`` + ``accelerator.backward``), with one
correction: Accelerate divides every micro-batch loss by ``gradient_accumulation_steps``, which mis-scales a
window cut short at the end of an epoch. Here each micro-batch loss is weighted by ``accumulation_weight``, so a
window of k equal micro-batches gives exactly the gradient of one batch k times larger, partial windows
included. Training batches are therefore all full (the loaders drop the last incomplete micro-batch of each
epoch, as timm's does), which keeps every micro-batch the same size on every process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator

from accel_recipes.config import TrainingArguments
from accel_recipes.engine.ema import ShardedModelEma, create_ema
from accel_recipes.engine.out_of_memory import OutOfMemoryAgreement
from accel_recipes.engine.regularize import BatchRegularizer
from accel_recipes.models import ModelSpec, logits_of
from accel_recipes.models.preprocess import Normalizer
from accel_recipes.optim import create_optimizer, create_scheduler
from accel_recipes.plan import TrainingPlan, accumulation_weight


class TrainingStep:
    """The prepared model, optimizer and schedule of a run with ``micro_batches_per_epoch`` training batches."""

    def __init__(
        self,
        training: TrainingArguments,
        spec: ModelSpec,
        accelerator: Accelerator,
        micro_batches_per_epoch: int,
        num_classes: int = 0,
    ) -> None:
        self.training, self.accelerator = training, accelerator
        model = spec.model
        if training.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.optimizer = accelerator.prepare(model, create_optimizer(training, model))
        # The compiled module only runs the forward pass; state dicts, checkpoints and the export go through
        # self.model, so no key ever carries torch.compile's `_orig_mod.` prefix.
        self.forward_module = torch.compile(self.model) if training.torch_compile else self.model
        self.plan = TrainingPlan.build(training, micro_batches_per_epoch, accelerator.num_processes)
        # Not prepared by Accelerate on purpose: its wrapper steps the schedule once per process per update.
        self.scheduler = create_scheduler(training, self.optimizer.optimizer, self.plan.total_updates)
        accelerator.register_for_checkpointing(self.scheduler)
        # with auto_find_batch_size on several processes, all of them stop together when one runs out of memory
        self.out_of_memory = OutOfMemoryAgreement(accelerator, training.auto_find_batch_size)
        self.normalizer = Normalizer(spec.mean, spec.std).to(accelerator.device)
        self.regularizer = BatchRegularizer(training, num_classes, accelerator.device)
        # The EMA of the unwrapped weights: DDP keeps them equal on every process, so every EMA copy is equal too;
        # FSDP2 shards them, and each process averages its shards.
        self.ema = create_ema(training, accelerator.unwrap_model(self.model))
        if self.ema is not None:
            accelerator.register_for_checkpointing(self.ema)
        self._ema_swapped_in = False

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Inside the block ``forward(images, ema=True)`` gives the EMA's logits: from timm's copy of the model, or,
        for a sharded model (which has no copy), from the model itself with the EMA's shards swapped in until the
        block ends. Collective."""
        if not isinstance(self.ema, ShardedModelEma):
            yield
            return
        with self.ema.swapped_into(self.accelerator.unwrap_model(self.model)):
            self._ema_swapped_in = True
            try:
                yield
            finally:
                self._ema_swapped_in = False

    def forward(self, images: torch.Tensor, ema: bool = False) -> torch.Tensor:
        """Logits of a uint8 (or 0..255 float) batch: normalised on the device, then the model (its EMA when
        ``ema``)."""
        return self._logits(self.normalizer(images), ema)

    def _logits(self, images: torch.Tensor, ema: bool = False) -> torch.Tensor:
        if self.training.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if not ema or self._ema_swapped_in:
            return logits_of(self.forward_module(images))
        with self.accelerator.autocast():  # as the prepared model's forward runs
            return logits_of(self.ema.module(images))

    def micro_batch(self, images: torch.Tensor, labels: torch.Tensor, micro_index: int, epoch: int = 0) -> torch.Tensor:
        """Forward and backward of micro-batch ``micro_index`` of epoch ``epoch``, its loss weighted for its
        accumulation window; at the window's end, clipping and the optimizer step (Accelerate skips them inside a
        window). Random erasing and mixup / cutmix (``BatchRegularizer``) act on the normalised micro-batch first.
        Returns the detached loss times its share of the window, summed into the window's mean loss."""
        training, accelerator, k = self.training, self.accelerator, self.training.gradient_accumulation_steps
        with accelerator.accumulate(self.model):
            with self.out_of_memory.gradients_held_back(self.model, accelerator.sync_gradients):
                with self.out_of_memory.section():
                    normalized, targets = self.regularizer(
                        self.normalizer(images), labels, epoch, micro_index, accelerator.process_index
                    )
                    loss = self.regularizer.loss(self._logits(normalized).float(), targets)
                weight = accumulation_weight(self.plan, micro_index, k)
                with self.out_of_memory.section():
                    accelerator.backward(loss * weight)
            if accelerator.sync_gradients and training.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), training.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach() * (weight / k)

    def after_update(self, update: int = 0) -> bool:
        """Advance the schedule and the EMA (``update`` counts updates, this one included) unless the loss scaler
        skipped this update; returns whether it was skipped."""
        skipped = self.optimizer.step_was_skipped
        if not skipped:
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.accelerator.unwrap_model(self.model), step=update)
        return skipped
