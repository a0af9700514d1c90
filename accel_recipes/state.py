"""The counters of a run: what a checkpoint stores beside Accelerate's state, and what the results report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class RunState:
    """Where training is and what it has measured; JSON in every checkpoint (``training_state.json``)."""

    update: int = 0
    epoch: int = 0  # completed epochs; the next micro-batch belongs to epoch index ``epoch``
    micro_in_epoch: int = 0  # micro-batches of that epoch already trained
    skipped_updates: int = 0  # fp16 steps the loss scaler skipped (inf/NaN gradients)
    train_seconds: float = 0.0  # training steps only: evaluation and checkpointing are excluded
    train_samples: int = 0  # over all processes
    data_wait_seconds: float = 0.0  # main process, time blocked waiting for the next batch
    steady_seconds_offset: float | None = None  # train_seconds when the warm-up updates were done
    steady_samples_offset: int | None = None
    skipped_images: int = 0  # undecodable images left out (skip_corrupt_images)
    best_metric: float | None = None
    best_update: int | None = None
    num_classes: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def steady_samples_per_second(self) -> float:
        """Throughput after the warm-up updates (compilation, allocator and cache warm-up left out)."""
        if self.steady_seconds_offset is None or self.train_seconds <= self.steady_seconds_offset:
            return self.train_samples / self.train_seconds if self.train_seconds else 0.0
        return (self.train_samples - self.steady_samples_offset) / (self.train_seconds - self.steady_seconds_offset)


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


class StopRequest:
    """Turns SIGTERM (preemption) and SIGUSR1 (SLURM's warning before a time limit) into a flag the training
    loop reads at its next update boundary, where it saves a checkpoint and exits cleanly."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for number in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught there
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        self.received = signal.Signals(number).name
