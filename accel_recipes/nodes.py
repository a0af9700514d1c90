"""Several machines: which process writes what, and whether output_dir is one folder that every node sees.

Results (``metrics.jsonl``, ``all_results.json``, ``config.yaml``, the model folder and its card, pushes) are
written once, by the main process of the whole run. Checkpoints go either into one output_dir that every node
mounts (written by the main process), or, with ``save_on_each_node``, into each node's own output_dir, written by
that node's local main process (Accelerate's ``ProjectConfiguration(save_on_each_node=True)``); either way every
process writes its own RNG state beside them, so each node finds all it needs to resume.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from accel_recipes.config import TrainingArguments
from accel_recipes.errors import ConfigError


def writes_checkpoints(accelerator: Accelerator) -> bool:
    """Whether this process writes the checkpoint files of its node's output_dir: the run's main process, or with
    ``save_on_each_node`` the main process of each node."""
    if accelerator.project_configuration.save_on_each_node:
        return accelerator.is_local_main_process
    return accelerator.is_main_process


def check_output_dir_layout(accelerator: Accelerator, training: TrainingArguments) -> None:
    """Refuse, before any work, an output_dir that does not match ``save_on_each_node``: a folder some node cannot
    see without it (that node would find no checkpoint to resume from, and no best model), or a folder several
    nodes share with it (they would all write the same files). Collective; nothing to check on one machine.

    Each node's local main process writes a marker under a fresh name and every process looks for each of them by
    name: a name never looked up before is not in any client's cache, so a network file system answers from the
    server."""
    if accelerator.num_processes == 1:
        return
    roles = gather_object([(accelerator.process_index, accelerator.is_local_main_process)])
    local_mains = [index for index, is_local_main in roles if is_local_main]
    if len(local_mains) == 1:
        return
    output_dir = Path(training.output_dir)
    token = broadcast_object_list([secrets.token_hex(8) if accelerator.is_main_process else None])[0]

    def marker(process_index: int) -> Path:
        return output_dir / f".node-check-{token}-{process_index}"

    if accelerator.is_local_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        marker(accelerator.process_index).touch()
    accelerator.wait_for_everyone()
    seen_by = gather_object([[index for index in local_mains if marker(index).is_file()]])
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process:
        marker(accelerator.process_index).unlink(missing_ok=True)
    nodes = len(local_mains)
    if not training.save_on_each_node:
        blind = [rank for rank, seen in enumerate(seen_by) if 0 not in seen]
        if blind:
            raise ConfigError(
                f"output_dir '{output_dir}' is not one folder shared by the {nodes} nodes: process(es) "
                f"{', '.join(map(str, blind))} do not see what the main process writes there; pass "
                "--save_on_each_node true when each node writes to a disk of its own, or an output_dir that every "
                "node mounts"
            )
    else:
        shared = [rank for rank, seen in enumerate(seen_by) if len(seen) > 1]
        if shared:
            raise ConfigError(
                f"save_on_each_node is true but output_dir '{output_dir}' is shared by several of the {nodes} "
                f"nodes (process {shared[0]} sees the files of {len(seen_by[shared[0]])}), which would all write "
                "the same checkpoint files; leave save_on_each_node false for a shared folder"
            )
