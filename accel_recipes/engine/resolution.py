"""The resolution schedule in the loop: each training micro-batch resized to its update's size
(``data.size_schedule``), the size and throughput of each progressive phase in the log and ``metrics.jsonl``, and
the check, before training, that the model takes every size the run will feed it.

With ``torch_compile`` the recompiles are accepted (no ``mark_dynamic``): the compiled forward meets a new input
shape at a phase's start, torch recompiles, and its automatic dynamic shapes let later sizes reuse the dynamic graph
where its guards allow (README.md, "Resolution schedule and evaluation size", has the measured count); the phases'
throughputs include the compilation.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from accel_recipes.checkpoints import RunState
from accel_recipes.data import Augmentation
from accel_recipes.data.size_schedule import SizeSchedule
from accel_recipes.engine.monitor import UpdateMonitor
from accel_recipes.errors import ConfigError
from accel_recipes.reporting import MetricsLog


def check_model_sizes(model: torch.nn.Module, augment: Augmentation, name: str) -> None:
    """A ConfigError, before anything is trained, when ``model`` cannot take a size of the schedule or the
    evaluation size (a ViT whose position embeddings are fixed to its input size): one image per size through the
    model in eval mode, without gradients and without touching the random generators."""
    sizes = sorted({*augment.train_img_sizes, augment.eval_input_size} - {augment.input_size})
    if not sizes:
        return
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for size in sizes:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                try:
                    model(torch.zeros(1, 3, size, size, device=device))
                except Exception as error:  # whatever the library raises for a size it cannot take
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    raise ConfigError(
                        f"{name} cannot take {size} px inputs ({reason}); a model whose position embeddings are "
                        f"fixed, as a ViT's, takes only its input size ({augment.input_size} px here) unless timm "
                        "builds it with dynamic_img_size; set train_img_sizes and eval_image_size to sizes it "
                        "takes, or leave them unset"
                    ) from None
    finally:
        model.train(was_training)


class ResolutionPhases:
    """Resizes each training micro-batch to its update's size; for a progressive schedule, reports each phase
    (its size, updates, samples and training seconds, evaluation excluded) when it ends."""

    def __init__(
        self, schedule: SizeSchedule, monitor: UpdateMonitor, metrics_log: MetricsLog, accelerator: Accelerator
    ) -> None:
        self.schedule, self.monitor, self.metrics_log, self.accelerator = schedule, monitor, metrics_log, accelerator
        self.phase: int | None = None
        self._started = (0, 0, 0.0)  # update, samples, seconds at the phase's start (or at resume)

    def __call__(self, images: torch.Tensor, state: RunState) -> torch.Tensor:
        """``images`` at the size of the update being accumulated (``state.update`` counts those done)."""
        phase = self.schedule.phase_at(state.update)
        if self.schedule.schedule == "progressive" and phase != self.phase:
            self.monitor.stop_timing()  # the phase's seconds end here; the clock goes on for the next one
            self.report(state)
            self.phase = phase
            self._started = (state.update, state.train_samples, state.train_seconds)
            self.monitor.start_timing()
        return self.schedule.resize(images, state.update)

    def report(self, state: RunState) -> None:
        """Log and record the phase that has run up to now (nothing before the first)."""
        if self.phase is None:
            return
        update, samples, seconds = self._started
        elapsed = state.train_seconds - seconds
        record = {
            "step": state.update,
            "train_image_size": self.schedule.sizes[self.phase],
            "phase_first_step": update + 1,
            "phase_updates": state.update - update,
            "phase_samples": state.train_samples - samples,
            "phase_runtime": elapsed,
            "phase_samples_per_second": (state.train_samples - samples) / elapsed if elapsed else 0.0,
        }
        self.metrics_log.write(record)
        self.accelerator.print(
            f"resolution phase {self.phase + 1}/{len(self.schedule.sizes)}: {record['train_image_size']} px, "
            f"updates {record['phase_first_step']}-{state.update}, {record['phase_samples_per_second']:,.1f} "
            "images/s"
        )
