"""Writes the system refuses (no space left, a quota, a file-size limit, an I/O error): recognised whichever
library wrote, agreed on by every process, and reported in one line naming what could not be written, the error
and the last whole checkpoint.

A checkpoint is written by every process (each its RNG states, a sharded model its shards), the best model and the
model folder by the main process alone, and the processes meet after each write. A process whose write failed
would otherwise raise alone and leave the others waiting at that meeting until the collective timeout; here the
meeting is an exchange of each process's outcome (``gather_object``), so they all stop together.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError

from accel_recipes.errors import TrainingError, WriteError

# torch.save writes through its own C++ zip writer, which drops the system's error number and reports a refused
# write as a RuntimeError in words that vary with where it failed ("[enforce fail at inline_container.cc:672] .
# unexpected pos 576 vs 534", "PytorchStreamWriter failed writing file data/0: file write failed",
# "basic_ios::clear: iostream error"): such an error is recognised by where it was raised
TORCH_WRITER = "torch/serialization.py"
RUST_IO_ERROR = re.compile(r'IoError\(Os \{ code: (?P<code>\d+), kind: \w+, message: "(?P<message>[^"]*)" \}\)')


def write_failure_reason(error: BaseException) -> str | None:
    """What the system said, when ``error`` is a write it refused; None for any other error."""
    text = str(error).strip()
    if isinstance(error, OSError):
        return text
    if isinstance(error, SafetensorError) and "I/O error" in text:
        return text.removeprefix("Error while serializing: ")
    # older safetensors (the floor, 0.4.3) words the same error in Rust's debug form, IoError(Os { code: 27,
    # kind: FileTooLarge, message: "File too large" }): said as newer releases say it
    if isinstance(error, SafetensorError) and (rust := RUST_IO_ERROR.search(text)):
        return f"I/O error: {rust['message']} (os error {rust['code']})"
    if isinstance(error, RuntimeError) and _raised_in(error, TORCH_WRITER):
        return f"torch's file writer failed ({text}), as it does when the disk is full, over a quota or failing"
    return None


def _raised_in(error: BaseException, source: str) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).as_posix().endswith(source)


def write_failure_message(what: str, reason: str, partial: Path | None, last_checkpoint: Path | None) -> str:
    removed = f" (its partial copy '{partial}' was removed)" if partial is not None else ""
    if last_checkpoint is not None:
        way_on = f"the last whole checkpoint is '{last_checkpoint}': make room, then carry on from it with"
    else:
        way_on = "no checkpoint was saved yet: make room, then start again with"
    return f"could not write {what}: {reason}{removed}; {way_on} --resume_from_checkpoint latest"


@contextlib.contextmanager
def written_together(
    accelerator: Accelerator, what: str, last_checkpoint: Path | None, partial: Path | None = None
) -> Iterator[None]:
    """Run the block (this process's part of writing ``what``), then meet the other processes. When any of them
    failed, the main process removes ``partial`` (the temporary folder the write was filling) and every process
    raises: a refused write is a ``WriteError`` naming ``what``, the error and ``last_checkpoint`` on every process;
    any other error is raised as it was on its process (a bug keeps its traceback), and the others raise a
    ``TrainingError`` naming it.
    Takes the place of a barrier after the writes. Collective: every process enters it."""
    outcome: tuple[str, str] | None = None
    bug: BaseException | None = None
    try:
        yield
    except Exception as error:
        reason = write_failure_reason(error)
        if reason is not None:
            outcome = ("refused", reason)
        else:
            outcome, bug = ("bug", f"{type(error).__name__}: {error}"), error
    outcomes = gather_object([outcome]) if accelerator.num_processes > 1 else [outcome]
    failed = [(rank, failure) for rank, failure in enumerate(outcomes) if failure is not None]
    if not failed:
        return
    if partial is not None and accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    refused = [failure for _, failure in failed if failure[0] == "refused"]
    if refused:
        raise WriteError(write_failure_message(what, refused[0][1], partial, last_checkpoint)) from None
    if bug is not None:
        raise bug
    rank, (_, summary) = failed[0]
    raise TrainingError(f"process {rank} failed while writing {what} ({summary}); its own output says more")
