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
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils.memory import should_reduce_batch_size

from accel_recipes.errors import OutOfMemoryOnAnotherProcess


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (Accelerate's test), here or on another process."""
    return isinstance(error, OutOfMemoryOnAnotherProcess) or should_reduce_batch_size(error)


class OutOfMemoryAgreement:
    """``section()`` guards code that may run out of memory; on several processes with ``enabled`` (the runs that
    retry, ``auto_find_batch_size``), every process agrees at its end whether any of them ran out. The agreement is one
    small all-gather per section, so a section must hold no collective that a failing process could skip: a forward
    pass under DDP holds none, a backward pass does where it ends an accumulation window (DDP all-reduces the
    gradients inside it), which ``gradients_held_back`` moves after the agreement. A model sharded by FSDP or
    DeepSpeed gathers and scatters inside both passes, block by block: not covered."""

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

    @contextmanager
    def gradients_held_back(self, model: torch.nn.Module, sync_gradients: bool) -> Iterator[None]:
        """Around a micro-batch's forward and backward sections with the prepared ``model``. Where the micro-batch
        ends an accumulation window under DDP (``sync_gradients``), DDP's all-reduce inside the backward pass is held
        back (``no_sync``, which DDP decides at the forward pass) and the gradients are averaged at the end of the
        block, after the agreements, so a process that ran out of memory in its backward pass leaves no other
        waiting in that all-reduce."""
        held_back = self.active and sync_gradients and isinstance(model, torch.nn.parallel.DistributedDataParallel)
        if not held_back:
            yield
            return
        with model.no_sync():
            yield
        average_gradients(model)


def average_gradients(model: torch.nn.parallel.DistributedDataParallel) -> None:
    """Average the gradients over the processes, as DDP's all-reduce would have, one all-reduce per dtype."""
    # By hand: neither DDP nor Accelerate offers the all-reduce of a backward that ran under no_sync.
    gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
    world_size = dist.get_world_size(model.process_group)
    for dtype in dict.fromkeys(gradient.dtype for gradient in gradients):  # in the same order on every process
        group = [gradient for gradient in gradients if gradient.dtype == dtype]
        flat = torch.cat([gradient.reshape(-1) for gradient in group])
        dist.all_reduce(flat, group=model.process_group)
        flat.div_(world_size)
        for gradient, averaged in zip(group, flat.split([gradient.numel() for gradient in group]), strict=True):
            gradient.copy_(averaged.view(gradient.shape))
