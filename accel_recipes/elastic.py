"""Restarts by torchrun's elastic agent (``accelerate launch --max_restarts N``): when a worker dies, the agent stops
the others and starts the whole group again with the same command line; the restarted group carries on from the
newest whole checkpoint by itself.

The agent tells its workers how often it restarted them (``TORCHELASTIC_RESTART_COUNT``) and whether they share its
own rendezvous store (``TORCHELASTIC_USE_AGENT_STORE``). A store shared across restarts still holds the dead
group's addresses, which the new group's process group reads and fails to connect to (gloo: ``connectFullMesh
failed ... Connection refused``): torch 2.14's static rendezvous keeps one store for the whole run, and its c10d
rendezvous shares one unless ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, which has the group's first process open a
new store for each rendezvous round.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from accel_recipes.checkpoints import STATE_FILE, RunState, checkpoint_damage, list_checkpoints, update_of
from accel_recipes.config import TrainingArguments
from accel_recipes.errors import ConfigError

RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
MAX_RESTARTS = "TORCHELASTIC_MAX_RESTARTS"
SHARED_STORE = "TORCHELASTIC_USE_AGENT_STORE"
RESTARTABLE_LAUNCH = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 accelerate launch --rdzv_backend c10d --max_restarts N"


def restart_count() -> int:
    """How often the elastic agent has restarted this worker's group (0 on the first start or without an agent)."""
    return int(os.environ.get(RESTART_COUNT) or 0)


def check_restartable() -> None:
    """Before the process group is created: refuse ``--max_restarts`` under a launcher whose restarted group could
    not connect (the agent shares its rendezvous store with the workers), naming the launch that can."""
    if int(os.environ.get(MAX_RESTARTS) or 0) == 0 or os.environ.get(SHARED_STORE) != "True":
        return
    raise ConfigError(
        f"--max_restarts {os.environ[MAX_RESTARTS]}, but the launcher shares its rendezvous store with the trainers "
        "(the default --rdzv_backend static, or c10d without TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), so a restarted "
        "group would read the dead group's addresses and fail to connect; launch with "
        f"'{RESTARTABLE_LAUNCH} ...', or leave --max_restarts out"
    )


def resume_after_restart(training: TrainingArguments, report: Callable[[str], None]) -> None:
    """In a group the agent restarted: carry on from the newest whole checkpoint in output_dir
    (``resume_from_checkpoint latest``) rather than from what the command line says, which the first start
    already did. A checkpoint-N named on the command line stays the start until output_dir holds a whole checkpoint
    numbered above N: only this run saves those (before its first save the run moved aside any an earlier run left
    there, ``run.clear_others_checkpoints``)."""
    count = restart_count()
    if count == 0:
        return
    given = training.resume_from_checkpoint
    directory = Path(training.output_dir) / "checkpoints"
    if given not in (None, "latest"):
        # a named folder that is no whole checkpoint is left to resolve_checkpoint's error
        start = RunState.from_file(Path(given) / STATE_FILE).update if checkpoint_damage(Path(given)) is None else None
        own = [path for path in list_checkpoints(directory) if start is not None and update_of(path) > start]
        if not any(checkpoint_damage(path) is None for path in own):
            report(f"restarted by the elastic agent ({RESTART_COUNT}={count}): no checkpoint of this run in "
                   f"output_dir yet, resuming from {given} again")  # fmt: skip
            return
    training.resume_from_checkpoint = "latest"
    report(f"restarted by the elastic agent ({RESTART_COUNT}={count}): resuming from the newest whole checkpoint "
           f"in {directory} (resume_from_checkpoint latest)")  # fmt: skip
