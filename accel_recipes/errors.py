"""Every error a user can cause, and the exit code each entry point returns for it.

A ``UserError`` carries a message that names the value and says what to do; entry points print it on one line
(``error: ...``) and exit with ``exit_code`` instead of a traceback. Anything that is not a ``UserError`` is a
bug and keeps its traceback.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but some of its work failed (e.g. images predict could not read)
EXIT_USER_ERROR = 2  # bad input: nothing was done, or nothing was lost
EXIT_PUSH_FAILED = 3  # the run finished and every file is on disk; only the Hub push failed
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint was saved; resume to carry on


class UserError(Exception):
    """Bad input or a state the user can fix; the message says which value and what to do."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError, ValueError):
    """A recipe or command-line value that cannot be used."""


class ArmError(ConfigError):
    """An ablation arm that cannot be built; the message names it and lists the valid ones."""


class DataError(UserError, ValueError):
    """A dataset that cannot be loaded or used as asked."""


class ModelError(UserError, ValueError):
    """A model that cannot be built or loaded as asked."""


class ExportError(ModelError):
    """A model folder that cannot be written or read back."""


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on."""


class CheckpointError(TrainingError):
    """A checkpoint that is missing a file its save wrote, or holds one that cannot be read."""


class WriteError(TrainingError):
    """A result the run could not write (no space, a quota, a file-size limit, an I/O error); what it half wrote is
    removed and the last whole checkpoint is named."""


class PredictError(UserError, ValueError):
    """Inputs or a model that ``predict`` cannot use."""


class RunFolderError(UserError, ValueError):
    """An output_dir that is not a finished run (card rendering, push)."""


def retry_command(output_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """The push command that retries a failed push of ``output_dir``."""
    command = f"python recipes/push.py {shlex.quote(str(output_dir))} --hub_model_id {shlex.quote(repo_id)}"
    return command + (" --private" if private else "")


class HubError(UserError, RuntimeError):
    """A push that failed; the message says what failed and the exact command that retries it. Every file of the
    run is still on disk."""

    exit_code = EXIT_PUSH_FAILED

    def __init__(self, reason: str, output_dir: str | Path, repo_id: str, private: bool = False) -> None:
        self.reason = reason
        self.retry_command = retry_command(output_dir, repo_id, private)
        super().__init__(
            f"could not push '{output_dir}' to the Hub repository '{repo_id}': {reason}. Every file of the run is "
            f"still in '{output_dir}'; to push it later: {self.retry_command}"
        )


class Preempted(Exception):
    """Raised after a stop signal once a checkpoint is safely saved; the run resumes from it."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, signal_name: str, checkpoint: Path | None) -> None:
        super().__init__(f"received {signal_name}: saved {checkpoint}; resume with --resume_from_checkpoint latest")
        self.checkpoint = checkpoint


class OutOfMemoryOnAnotherProcess(RuntimeError):
    """Raised on the processes that had memory when another one ran out (``engine.out_of_memory``), so that
    ``auto_find_batch_size`` retries on all of them together; never reaches an entry point."""


def run_entry_point(main: Callable[[], int | None]) -> int:
    """Run a CLI body: a user error or a stop prints one line on stderr and returns its exit code."""
    try:
        return main() or EXIT_OK
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
