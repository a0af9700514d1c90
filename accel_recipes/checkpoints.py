"""Checkpoints that a crash cannot corrupt: written to a temporary folder, then renamed into place.

A checkpoint is ``output_dir/checkpoints/checkpoint-<update>``, written by ``accelerator.save_state``. Rotation
keeps the newest ``save_total_limit`` checkpoints and never deletes the newest one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def replace_dir(temporary: Path, final: Path) -> None:
    """Move a finished folder into place; an older folder of the same name is removed only afterwards."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(temporary, final)
    shutil.rmtree(old, ignore_errors=True)


def temporary_dir_for(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders never match the pattern)."""
    if not directory.is_dir():
        return []
    found = [
        path
        for path in directory.iterdir()
        if CHECKPOINT_PATTERN.match(path.name) and (path / "training_state.json").is_file()
    ]
    return sorted(found, key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)))


def save_checkpoint(accelerator: Accelerator, directory: Path, update: int, state_json: str, limit: int | None) -> Path:
    """Save model, optimizer, scheduler, scaler and RNG states plus the run's counters (``training_state.json``) as
    checkpoint-<update>. The counters are written last, so a folder holding them is complete."""
    final = directory / f"checkpoint-{update}"
    temporary = temporary_dir_for(final)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()  # every process has written its part (its RNG states) before the rename
    if accelerator.is_main_process:
        (temporary / "training_state.json").write_text(state_json)
        replace_dir(temporary, final)
        rotate_checkpoints(directory, limit)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(directory: Path, limit: int | None) -> None:
    if limit is None:
        return
    checkpoints = list_checkpoints(directory)
    for stale in checkpoints[: max(0, len(checkpoints) - max(1, limit))]:
        shutil.rmtree(stale, ignore_errors=True)


def save_weights(accelerator: Accelerator, model, path: Path) -> None:
    """Model weights alone (safetensors), e.g. the best model so far; atomic like every checkpoint."""
    from safetensors.torch import save_file

    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        # clone: safetensors refuses tensors that share storage (tied weights)
        save_file({name: tensor.detach().cpu().clone().contiguous() for name, tensor in state_dict.items()}, temporary)
        os.replace(temporary, path)
    accelerator.wait_for_everyone()


def load_weights(accelerator: Accelerator, model, path: Path) -> None:
    from safetensors.torch import load_file

    accelerator.unwrap_model(model).load_state_dict(load_file(path, device="cpu"))
