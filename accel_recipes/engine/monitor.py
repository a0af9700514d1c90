"""What happens after each optimizer update, in one place: the timing segments (training time leaves out
evaluation and checkpoints), the wait for data, the streak of non-finite losses, stop polling, and whether this
update logs, evaluates, saves, stops or ends the run."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.distributed.tensor import DTensor

from accel_recipes.checkpoints import RunState, newest_checkpoint
from accel_recipes.config import TrainingArguments
from accel_recipes.errors import TrainingError
from accel_recipes.plan import TrainingPlan
from accel_recipes.signals import StopRequest

ADVICE = "Try --mixed_precision bf16 (fp16 overflows more easily), a lower --learning_rate, or --max_grad_norm 1.0"


def peak_memory_mb(device: torch.device) -> float:
    """GPU allocator peak on CUDA; the process's peak resident set size elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


class DeviceClock:
    """Wall time read after the device has finished its queued work, so GPU time lands in the right segment."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


@dataclass
class UpdateEvents:
    """What the update just finished calls for. ``paused``: the timing segment was closed (the trainer may now
    evaluate or save off the clock) and must be restarted with ``UpdateMonitor.start_timing``."""

    log: bool = False
    evaluate: bool = False
    save: bool = False
    stop: bool = False
    end: bool = False
    paused: bool = False


class UpdateMonitor:
    """Reads the device only at a timing boundary or when the non-finite streak could first reach
    ``max_nonfinite_steps``, so the step runs without a host-device sync in between and the run stops at exactly
    the configured streak."""

    def __init__(
        self,
        training: TrainingArguments,
        plan: TrainingPlan,
        accelerator: Accelerator,
        state: RunState,
        checkpoint_dir: Path,
    ) -> None:
        self.training, self.plan, self.accelerator, self.state = training, plan, accelerator, state
        self.checkpoint_dir = checkpoint_dir
        self.clock = DeviceClock(accelerator.device)
        self.stop = StopRequest()
        self.nonfinite_streak = torch.zeros((), dtype=torch.long, device=accelerator.device)
        self._next_streak_check = 0  # the first update at which the streak could reach max_nonfinite_steps
        self._segment_started = 0.0

    def start_timing(self) -> None:
        self._segment_started = self.clock()

    def stop_timing(self) -> None:
        self.state.train_seconds += self.clock() - self._segment_started

    def next_batch(self, batches: Iterator[Any]) -> Any | None:
        """The loader's next batch (None at the end), its wait counted as data wait."""
        waited = time.perf_counter()
        batch = next(batches, None)
        self.state.data_wait_seconds += time.perf_counter() - waited
        return batch

    def after_update(self, window_loss: torch.Tensor) -> UpdateEvents:
        """Call once ``state.update`` counts the update whose mean loss is ``window_loss`` (a device scalar)."""
        training, state = self.training, self.state
        self.nonfinite_streak = torch.where(torch.isfinite(window_loss), 0, self.nonfinite_streak + 1)
        end = state.update >= self.plan.total_updates
        events = UpdateEvents(
            log=state.update % training.logging_steps == 0,
            # and the last update, as transformers' Trainer does: the end of training is evaluated (for the best
            # model and the target) also when eval_steps does not divide the run's length
            evaluate=training.eval_strategy == "steps" and (state.update % training.eval_steps == 0 or end),
            save=training.save_strategy == "steps" and state.update % training.save_steps == 0,
            end=end,
        )
        at_warmup_end = state.update == training.throughput_warmup_steps
        if state.update >= self._next_streak_check:
            self.check_finite()
        events.stop = self.stop.agreed(self.accelerator, state.update)
        if events.log or events.evaluate or events.save or events.end or events.stop or at_warmup_end:
            self.stop_timing()
            events.paused = True
            if at_warmup_end:
                state.steady_seconds_offset, state.steady_samples_offset = state.train_seconds, state.train_samples
            self.check_finite()
        return events

    def loss_is_finite(self) -> bool:
        return int(self.nonfinite_streak.item()) == 0

    def check_finite(self) -> None:
        """Stop the run once the loss has not been finite for ``max_nonfinite_steps`` consecutive updates."""
        streak = int(self.nonfinite_streak.item())
        limit = self.training.max_nonfinite_steps
        # a streak of s now reaches the limit no sooner than limit - s updates later: the next read is then
        self._next_streak_check = self.state.update + max(1, limit - streak)
        if streak >= limit:
            raise TrainingError(
                f"the training loss was not finite for {streak} consecutive updates (from update "
                f"{self.state.update - streak + 1} to {self.state.update}); {self._last_good()}. {ADVICE}"
            )

    def weights_are_finite(self, model: torch.nn.Module) -> bool:
        """Whether every floating-point parameter and buffer is finite on every process (collective; one sync)."""
        # a sharded model's parameters are DTensors: each process checks its own shards, and the sum below adds them
        local = [t.to_local() if isinstance(t, DTensor) else t for t in [*model.parameters(), *model.buffers()]]
        tensors = [t for t in local if t.is_floating_point() and t.numel()]
        bad = torch.stack([~torch.isfinite(t).all() for t in tensors]).sum() if tensors else torch.zeros(())
        return int(self.accelerator.reduce(bad.to(self.accelerator.device), "sum").item()) == 0

    def check_weights_finite(self, model: torch.nn.Module) -> None:
        """Refuse to let non-finite weights leave the run (the model folder), naming the last good checkpoint."""
        if not self.weights_are_finite(model):
            raise TrainingError(
                f"the model's weights are not finite after update {self.state.update}, so no model folder was "
                f"written; {self._last_good()}. {ADVICE}"
            )

    def _last_good(self) -> str:
        latest = newest_checkpoint(self.checkpoint_dir)  # whole: the one `latest` resumes
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved yet"
