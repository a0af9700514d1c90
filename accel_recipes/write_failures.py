"""Writes the system refuses (no space left, a quota, a file-size limit, no permission, an I/O error): recognised
whichever library wrote, agreed on by every process, and reported in one line naming what could not be written, the
error, what to do about it (by the error number) and the last whole checkpoint.

A checkpoint is written by every process (each its RNG states, a sharded model its shards), the best model and the
model folder by the main process alone, and the processes meet after each write. A process whose write failed
would otherwise raise alone and leave the others waiting at that meeting until the collective timeout; here the
meeting is an exchange of each process's outcome (``gather_object``), so they all stop together.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError

from accel_recipes.errors import TrainingError, WriteError
from accel_recipes.nodes import writes_checkpoints

# torch.save writes through its own C++ zip writer, which drops the system's error number and reports a refused
# write as a RuntimeError in words that vary with where it failed ("[enforce fail at inline_container.cc:672] .
# unexpected pos 576 vs 534", "PytorchStreamWriter failed writing file data/0: file write failed",
# "basic_ios::clear: iostream error"): such an error is recognised by where it was raised
TORCH_WRITER = "torch/serialization.py"
OS_ERROR_NUMBER = re.compile(r"\(os error (?P<code>\d+)\)$")
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


def write_failure_remedy(error: BaseException) -> str:
    """What to do about a refused write, by the system's error number: room for a full disk, a quota or a file-size
    limit (and for torch's writer, which drops the number), permissions for a refused access, else the error."""
    code = error.errno if isinstance(error, OSError) else None
    if isinstance(error, SafetensorError) and (number := OS_ERROR_NUMBER.search(write_failure_reason(error) or "")):
        code = int(number["code"])
    if code in (errno.EACCES, errno.EPERM):
        return "let this user write there"
    if code is None or code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "make room"
    return "fix what the error says"


def write_failure_message(
    what: str, reason: str, partial: Path | None, last_checkpoint: Path | None, remedy: str = "make room"
) -> str:
    removed = f" (its partial copy '{partial}' was removed)" if partial is not None else ""
    if last_checkpoint is not None:
        way_on = f"the last whole checkpoint is '{last_checkpoint}': {remedy}, then carry on from it with"
    else:
        way_on = f"no checkpoint was saved yet: {remedy}, then start again with"
    return f"could not write {what}: {reason}{removed}; {way_on} --resume_from_checkpoint latest"


@contextlib.contextmanager
def written_together(
    accelerator: Accelerator, what: str, last_checkpoint: Path | None, partial: Path | None = None
) -> Iterator[None]:
    """Run the block (this process's part of writing ``what``), then meet the other processes. When any of them
    failed, the process that writes checkpoints on each node (``nodes.writes_checkpoints``) removes its ``partial``
    (the temporary folder the write was filling, which it created) and every process
    raises: a refused write is a ``WriteError`` naming ``what``, the error and ``last_checkpoint`` on every process;
    any other error is raised as it was on its process (a bug keeps its traceback), and the others raise a
    ``TrainingError`` naming it.
    Takes the place of a barrier after the writes. Collective: every process enters it."""
    outcome: tuple[str, ...] | None = None
    bug: BaseException | None = None
    try:
        yield
    except Exception as error:
        reason = write_failure_reason(error)
        if reason is not None:
            outcome = ("refused", reason, write_failure_remedy(error))
        else:
            outcome, bug = ("bug", f"{type(error).__name__}: {error}"), error
    outcomes = gather_object([outcome]) if accelerator.num_processes > 1 else [outcome]
    failed = [(rank, failure) for rank, failure in enumerate(outcomes) if failure is not None]
    if not failed:
        return
    if partial is not None and writes_checkpoints(accelerator):  # the process that created it, on each node
        shutil.rmtree(partial, ignore_errors=True)
    refused = [failure for _, failure in failed if failure[0] == "refused"]
    if refused:
        _, reason, remedy = refused[0]
        raise WriteError(write_failure_message(what, reason, partial, last_checkpoint, remedy)) from None
    if bug is not None:
        raise bug
    rank, (_, summary) = failed[0]
    raise TrainingError(f"process {rank} failed while writing {what} ({summary}); its own output says more")
