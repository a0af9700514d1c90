"""Stop requests: SIGTERM (preemption) and SIGUSR1 (SLURM's warning before a time limit) become a flag that the
training loop reads at its next update boundary, where it saves a checkpoint and exits cleanly.

A signal sent to the launcher reaches the trainers too. ``torchrun`` (``accelerate launch --multi_gpu``) forwards
SIGTERM, SIGINT, SIGHUP and SIGQUIT to its workers itself; Accelerate's one-process launcher forwards nothing and
dies at once, and any launcher dies at once on a signal it does not handle (SIGUSR1). ``stop_with_launcher`` makes
the death of the launcher, whatever the cause, a SIGTERM to each trainer, so a trainer is never left running alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from typing import Any

import torch
from accelerate import Accelerator

STOP_POLL_UPDATES = 10  # several processes agree on a stop signal this often (one all-reduce each time)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU")  # set by torchrun / Accelerate's launchers

logger = logging.getLogger(__name__)


def launched_by_a_launcher() -> bool:
    """Whether this process was started by ``accelerate launch`` or ``torchrun`` (not by a shell or ``nohup``)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def stop_with_launcher() -> bool:
    """Have Linux send this process SIGTERM when its parent (the launcher) dies, so the run checkpoints and stops
    instead of training on as an orphan. Only under a launcher: a run started from a shell must survive the
    shell's exit (``nohup``). Returns whether it was set up (False off Linux, where there is no such call)."""
    # Neither Accelerate nor torch asks the kernel for this (torch's elastic agent only signals the workers it
    # outlives), and Python has no wrapper for prctl, so it is called through ctypes. A launcher that dies before
    # this call (while the trainer imports) is not noticed: its pid is unknown here, and a parent of pid 1 is no
    # sign of it, since a launcher can itself be a container's first process.
    if not sys.platform.startswith("linux") or not launched_by_a_launcher():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("could not ask to be stopped with the launcher (errno %d)", ctypes.get_errno())
        return False
    return True


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
