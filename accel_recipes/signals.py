"""Stop requests: SIGTERM (preemption) and SIGUSR1 (SLURM's warning before a time limit) become a flag that the
training loop reads at its next update boundary, where it saves a checkpoint and exits cleanly."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import torch
from accelerate import Accelerator

STOP_POLL_UPDATES = 10  # several processes agree on a stop signal this often (one all-reduce each time)


class StopRequest:
    """Catches the stop signals while the ``with`` block runs; ``received`` names the first one caught."""

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

    def agreed(self, accelerator: Accelerator, update: int) -> bool:
        """Whether any process received a stop signal; every process must agree, since saving is collective.
        With several processes that takes an all-reduce (and a device sync), so it is asked every
        ``STOP_POLL_UPDATES`` updates, not on every one."""
        requested = self.received is not None
        if accelerator.num_processes > 1:
            if update % STOP_POLL_UPDATES:
                return False
            flag = torch.tensor(float(requested), device=accelerator.device)
            requested = accelerator.reduce(flag, "max").item() > 0
        return requested
