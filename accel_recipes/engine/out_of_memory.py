"""Out of memory on one of several processes: every process learns of it at the same point and stops together, so
``auto_find_batch_size`` retries on all of them at once and none waits in a collective another never reaches.

As Composer's automatic micro-batching does (``found_cuda_oom``, reduced with MAX over the processes), a process
that runs out of memory catches the error, and after each guarded section (a micro-batch's forward, its backward)
every process shares whether it did; if any did, each raises: its own error, or ``OutOfMemoryOnAnotherProcess``.
Accelerate's ``find_executable_batch_size`` retries on the process that failed only, which on several processes
leaves the others waiting in the next gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.utils.memory import should_reduce_batch_size


class OutOfMemoryOnAnotherProcess(RuntimeError):
    """Raised on the processes that had memory when another one ran out, so that all of them retry together."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (Accelerate's test), here or on another process."""
    return isinstance(error, OutOfMemoryOnAnotherProcess) or should_reduce_batch_size(error)


class OutOfMemoryAgreement:
    """``section()`` guards code that may run out of memory; on several processes with ``enabled`` (the runs that
    retry, ``auto_find_batch_size``), every process agrees at its end whether any of them ran out. The agreement is one
    small all-gather per section: a section must hold no collective of its own that a failing process could skip,
    which holds for a forward pass and for a backward pass inside an accumulation window (no gradient all-reduce
    there); the backward that ends a window all-reduces the gradients under DDP, so an out-of-memory error of one
    process in that backward is not covered."""

    def __init__(self, accelerator: Accelerator, enabled: bool) -> None:
        self.accelerator = accelerator
        self.active = enabled and accelerator.num_processes > 1

    @contextmanager
    def section(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        failure: BaseException | None = None
        try:
            yield
        except Exception as error:
            if not should_reduce_batch_size(error):
                raise
            failure = error
        self._agree(failure)

    def _agree(self, failure: BaseException | None) -> None:
        accelerator = self.accelerator
        flag = torch.tensor([failure is not None], dtype=torch.int32, device=accelerator.device)
        failed = [index for index, value in enumerate(accelerator.gather(flag).tolist()) if value]
        if not failed:
            return
        if failure is not None:
            raise failure
        processes = ", ".join(str(index) for index in failed)
        raise OutOfMemoryOnAnotherProcess(f"out of memory on process {processes}")
