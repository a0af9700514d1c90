"""Checkpoints that a crash cannot corrupt, the run's counters they carry, and resuming from them.

A checkpoint is ``output_dir/checkpoints/checkpoint-<update>``, written by ``accelerator.save_state`` into a
temporary folder and renamed into place, with the run's counters (``training_state.json``) written last, so a
folder holding them is complete. ``training_state.json`` also lists every file the save wrote and its size, so a
checkpoint damaged later (a truncated copy, a full disk on a synced file system) is recognised before it is used:
``resume_from_checkpoint latest`` skips it for the next whole one. Rotation keeps the newest ``save_total_limit``
checkpoints and never deletes the one just saved.

Before its first save a run leaves in ``checkpoints/`` only what it may build on: a fresh start with
``overwrite_output_dir`` removes the earlier run's checkpoints, a start from a named checkpoint-N moves those numbered
above N aside (an earlier run went further; they are not this run's).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from accel_recipes.config import TrainingArguments
from accel_recipes.errors import CheckpointError, TrainingError
from accel_recipes.io import atomic_file, replace_dir, temporary_dir_for
from accel_recipes.nodes import writes_checkpoints
from accel_recipes.optim import ONE_CYCLE_MIN_UPDATES
from accel_recipes.write_failures import written_together

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"
FILES_KEY = "files"  # in STATE_FILE: every file the save wrote (relative path -> size in bytes)


@dataclass
class RunState:
    """Where training is and what it has measured; JSON in every checkpoint (``training_state.json``)."""

    update: int = 0
    epoch: int = 0  # completed epochs; the next micro-batch belongs to epoch index ``epoch``
    micro_in_epoch: int = 0  # micro-batches of that epoch already trained
    skipped_updates: int = 0  # fp16 steps the loss scaler skipped (inf/NaN gradients)
    train_seconds: float = 0.0  # training steps only: evaluation and checkpointing are excluded
    train_samples: int = 0  # over all processes
    data_wait_seconds: float = 0.0  # main process, time blocked waiting for the next batch
    steady_seconds_offset: float | None = None  # train_seconds when the warm-up updates were done
    steady_samples_offset: int | None = None
    skipped_images: int = 0  # undecodable images left out (skip_corrupt_images)
    best_metric: float | None = None
    best_update: int | None = None
    # the first evaluation that reached target_metric_value: training time (as train_seconds), updates and samples
    time_to_target_seconds: float | None = None
    time_to_target_updates: int | None = None
    time_to_target_samples: int | None = None
    time_to_target_value: float | None = None  # the target_metric_value they were measured for
    # early stopping (transformers' EarlyStoppingCallback): the best metric_for_best_model so far, by any margin,
    # and the evaluations in a row that did not beat it by more than early_stopping_threshold
    early_stopping_best: float | None = None
    evaluations_without_improvement: int = 0
    num_classes: int = 0
    model_ema: bool | None = None  # whether the checkpoint holds an EMA of the weights (None: saved before it said)
    total_updates: int | None = None  # the run's length its schedule was built for (None: saved before it said)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def steady_samples_per_second(self) -> float:
        """Throughput after the warm-up updates (compilation, allocator and cache warm-up left out)."""
        if self.steady_seconds_offset is None or self.train_seconds <= self.steady_seconds_offset:
            return self.train_samples / self.train_seconds if self.train_seconds else 0.0
        return (self.train_samples - self.steady_samples_offset) / (self.train_seconds - self.steady_seconds_offset)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders never match the pattern)."""
    if not directory.is_dir():
        return []
    found = [
        path for path in directory.iterdir() if CHECKPOINT_PATTERN.match(path.name) and (path / STATE_FILE).is_file()
    ]
    return sorted(found, key=update_of)


def update_of(checkpoint: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def newest_checkpoint(directory: Path) -> Path | None:
    """The newest whole checkpoint, the one ``resume_from_checkpoint latest`` takes on one machine (a damaged newer
    one is passed over silently: this names the way on after a failure, it does not resume)."""
    return next(_whole(reversed(list_checkpoints(directory)), lambda message: None), None)


def remove_earlier_run(directory: Path, report: Callable[[str], None]) -> None:
    """A fresh start with ``overwrite_output_dir``: the earlier run's checkpoints go (whole, damaged or half
    written), before this run's first save, so that neither ``latest`` nor an elastic restart resumes them and
    rotation never weighs them against this run's own."""
    if not directory.is_dir():
        return
    earlier = [path.name for path in list_checkpoints(directory)]
    shutil.rmtree(directory)
    named = f" ({', '.join(earlier)})" if earlier else ""
    report(f"overwrite_output_dir: removed the earlier run's checkpoints{named} from {directory}")


def set_aside_later_checkpoints(directory: Path, start: int, report: Callable[[str], None]) -> None:
    """A run started from checkpoint-``start``: the checkpoints numbered above it in ``directory`` were not written
    by this run (an earlier run went further). They are moved into ``superseded-<time>/`` before the first save,
    kept but out of reach of ``latest``, an elastic restart and rotation, and this run saves its own in their
    place."""
    later = [path for path in list_checkpoints(directory) if update_of(path) > start]
    if not later:
        return
    aside = directory / f"superseded-{time.strftime('%Y%m%dT%H%M%S')}"
    aside.mkdir()
    for path in later:
        path.rename(aside / path.name)
    report(
        f"starting from checkpoint-{start}: the later checkpoints {', '.join(path.name for path in later)} are not "
        f"this run's; moved to {aside} (not resumed, not rotated)"
    )


def save_checkpoint(accelerator: Accelerator, directory: Path, state: RunState, limit: int | None) -> Path:
    """Save model, optimizer, scheduler, scaler and RNG states plus the run's counters as checkpoint-<update>.
    A write the system refuses (a full disk) stops every process with a ``WriteError`` naming the newest whole
    checkpoint, after the temporary folder is removed. Collective: every process calls it."""
    final = directory / f"checkpoint-{state.update}"
    temporary = temporary_dir_for(final)
    previous = newest_checkpoint(directory)  # left whole whatever happens to this save
    what = f"the checkpoint '{final}'"
    writer = writes_checkpoints(accelerator)  # the main process, or each node's with save_on_each_node
    with written_together(accelerator, what, previous, partial=temporary):
        if writer:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
    with written_together(accelerator, what, previous, partial=temporary):
        accelerator.save_state(str(temporary))  # every process writes its part (its RNG states) before the rename
    with written_together(accelerator, what, previous, partial=temporary):
        if writer:
            record = {**json.loads(state.to_json()), FILES_KEY: written_files(temporary)}
            (temporary / STATE_FILE).write_text(json.dumps(record, indent=2))
            replace_dir(temporary, final)
    # every node has its new checkpoint before any node deletes an older one (written_together is collective): a
    # node killed in between still shares a whole checkpoint with the others (latest takes the newest they all have)
    if writer:
        rotate_checkpoints(directory, limit, saved=final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(directory: Path, limit: int | None, saved: Path | None = None) -> None:
    """Keep the newest ``limit`` checkpoints (at least one). With ``saved``, the checkpoint just written: those
    numbered above it count as older than any other (no run saves backwards, so an earlier run that went further
    left them, or ``latest`` skipped them as damaged), and ``saved`` itself is always kept."""
    if limit is None:
        return
    checkpoints = list_checkpoints(directory)
    if saved is not None:
        ahead = [path for path in checkpoints if update_of(path) > update_of(saved)]
        checkpoints = ahead + [path for path in checkpoints if update_of(path) <= update_of(saved)]
    for stale in checkpoints[: max(0, len(checkpoints) - max(1, limit))]:
        shutil.rmtree(stale, ignore_errors=True)


def written_files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (sharded states are folders of files) and its size, by relative path."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()
    }


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is wrong with ``checkpoint``, or None when it is whole: its counters parse, every file its save wrote
    is there with the size it had, and every safetensors file's header reads. Reads headers only, never weights."""
    state_file = checkpoint / STATE_FILE
    try:
        record = json.loads(state_file.read_text())
        RunState(**{key: value for key, value in record.items() if key != FILES_KEY})
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (ValueError, TypeError, AttributeError) as error:  # not JSON, not an object, or fields of the wrong kind
        return f"{STATE_FILE} cannot be read ({type(error).__name__}: {error})"
    expected = record.get(FILES_KEY) or {}  # checkpoints written before the file list: their headers are checked
    for name, size in expected.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the save wrote {size}"
    for path in sorted(checkpoint.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as error:
            return f"{path.relative_to(checkpoint)} cannot be read ({error})"
    return None


def resolve_checkpoint(
    training: TrainingArguments, report: Callable[[str], None] = print, accelerator: Accelerator | None = None
) -> Path | None:
    """``resume_from_checkpoint``: ``latest`` is the newest whole checkpoint in output_dir (None when there is none
    yet, so a requeued job that never saved starts fresh); a damaged newer one is skipped, with ``report`` naming
    it, and left on disk. Anything else must be a whole checkpoint folder. Given the ``accelerator`` of several
    processes, collective: ``latest`` is the newest checkpoint that is whole for every process (with a folder per
    node, a node killed during a save may lack the newest one that the others have)."""
    value = training.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        checkpoints = reversed(list_checkpoints(Path(training.output_dir) / "checkpoints"))
        if accelerator is None or accelerator.num_processes == 1:
            return next(_whole(checkpoints, report), None)
        return _newest_whole_everywhere(accelerator, list(_whole(checkpoints, report)), report)
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise TrainingError(
            f"resume_from_checkpoint '{value}' is not a checkpoint folder (no {STATE_FILE}); pass "
            "'latest' or a folder like output_dir/checkpoints/checkpoint-N"
        )
    damage = checkpoint_damage(path)
    if damage is not None:
        raise CheckpointError(
            f"resume_from_checkpoint '{value}' is damaged: {damage}; pass an older checkpoint-N from the same "
            "folder, or 'latest' to use the newest whole one"
        )
    return path


def _whole(checkpoints: Iterable[Path], report: Callable[[str], None]) -> Iterator[Path]:
    """The whole ones of ``checkpoints``, in their order; ``report`` names each damaged one."""
    for checkpoint in checkpoints:
        damage = checkpoint_damage(checkpoint)
        if damage is None:
            yield checkpoint
        else:
            report(f"skipping the damaged checkpoint '{checkpoint}': {damage} (left on disk)")


def _newest_whole_everywhere(accelerator: Accelerator, whole: list[Path], report: Callable[[str], None]) -> Path | None:
    """The first of ``whole`` (newest first) whose update every process also has whole. Collective."""
    updates = [update_of(path) for path in whole]
    common = set.intersection(*(set(theirs) for theirs in gather_object([updates])))
    for update, checkpoint in zip(updates, whole, strict=True):
        if update in common:
            if update != updates[0]:
                report(f"checkpoint-{updates[0]} is not whole on every node: resuming from {checkpoint}")
            return checkpoint
    if updates:
        report("no checkpoint is whole on every node: starting from scratch")
    return None


def require_same_ema(checkpoint: Path, model_ema: bool) -> None:
    """A checkpoint holds an EMA of the weights exactly when the resuming run keeps one (``model_ema``); a checkpoint
    saved before it recorded this is not checked. Else Accelerate would say only that the number of custom
    checkpoints differs from the registered objects."""
    saved = RunState.from_file(checkpoint / STATE_FILE)
    if saved.model_ema is None or saved.model_ema == model_ema:
        return
    held = "holds an EMA of the weights" if saved.model_ema else "holds no EMA of the weights"
    raise TrainingError(
        f"checkpoint '{checkpoint}' {held}, but this run has model_ema {str(model_ema).lower()}; resume with "
        f"--model_ema {str(saved.model_ema).lower()}, or start a new run (fine-tune from the exported model folder "
        "with --model_name_or_path)"
    )


def require_reachable_end(checkpoint: Path, training: TrainingArguments, total_updates: int) -> None:
    """A run resumed with another length (``max_steps`` / ``num_train_epochs``) must end at or after the update its
    checkpoint holds; a one-cycle schedule cannot shrink to a run too short for its two phases (it would become
    another kind of schedule). Checked before the run writes anything."""
    saved = RunState.from_file(checkpoint / STATE_FILE)
    length = (
        f"max_steps {training.max_steps}"
        if training.max_steps > 0
        else f"num_train_epochs {training.num_train_epochs:g}, {total_updates} updates"
    )
    if saved.update > total_updates:
        raise TrainingError(
            f"checkpoint '{checkpoint}' is at update {saved.update}, past the end of this run ({length}); pass "
            f"--max_steps {saved.update} or more to carry on from it, or resume from an earlier checkpoint-N with "
            f"N <= {total_updates}"
        )
    previous = saved.total_updates
    shrinks_below = previous is not None and previous >= ONE_CYCLE_MIN_UPDATES > total_updates
    if training.lr_scheduler_type == "one_cycle" and shrinks_below:
        raise TrainingError(
            f"checkpoint '{checkpoint}' holds a one_cycle schedule of {previous} updates, and this run ({length}) is "
            f"too short for its two phases (at least {ONE_CYCLE_MIN_UPDATES} updates); pass --max_steps "
            f"{ONE_CYCLE_MIN_UPDATES} or more"
        )


def require_same_classes(checkpoint: Path, num_classes: int, dataset_name: str) -> RunState:
    """The checkpoint's counters, once it is known to be trained on ``num_classes`` classes."""
    state_file = checkpoint / STATE_FILE
    if not state_file.is_file():
        raise TrainingError(f"'{checkpoint}' is not a complete checkpoint (no {STATE_FILE})")
    saved = RunState.from_file(state_file)
    if saved.num_classes != num_classes:
        raise TrainingError(
            f"checkpoint '{checkpoint}' was trained on {saved.num_classes} classes but the dataset "
            f"'{dataset_name}' has {num_classes}; resume with the same dataset, or start a new "
            "run (fine-tune from the exported model folder with --model_name_or_path)"
        )
    return saved


def restore_checkpoint(accelerator: Accelerator, checkpoint: Path, num_classes: int, dataset_name: str) -> RunState:
    """Load every prepared object's state (model, optimizer, scheduler, loss scaler, RNG, the EMA) from
    ``checkpoint`` and return the run's counters, after checking that the checkpoint was trained on as many classes.
    Whether it holds an EMA is checked earlier, before the run writes anything (``require_same_ema``)."""
    saved = require_same_classes(checkpoint, num_classes, dataset_name)
    accelerator.load_state(str(checkpoint))
    return saved


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP2 (``fully_shard``), whose ``state_dict()`` holds each process's shards.
    Checked on the modules too: between a forward and the next reshard a root's parameters are whole tensors."""
    modules = any(isinstance(module, FSDPModule) for module in model.modules())
    return modules or any(isinstance(parameter, DTensor) for parameter in model.parameters())


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded weights of a prepared ``model`` as plain CPU tensors on the main process (an empty
    dict on the others). Collective: every process calls it, however the model is sharded."""
    unwrapped = accelerator.unwrap_model(model)
    if is_sharded(unwrapped):
        # what accelerator.get_state_dict does for FSDP2, also for a model sharded with fully_shard outside
        # Accelerate's FSDP plugin (which Accelerate enables only on accelerators)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state_dict = get_model_state_dict(unwrapped, options=options)
    else:  # DDP, one process, DeepSpeed (ZeRO-3 gathered by Accelerate) and Accelerate's FSDP
        state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return {}
    # clone: safetensors refuses tensors that share storage (tied weights); contiguous: channels_last weights
    return {name: tensor.detach().cpu().clone().contiguous() for name, tensor in state_dict.items()}


def save_weights(accelerator: Accelerator, model, path: Path, checkpoint_dir: Path | None = None) -> None:
    """Model weights alone (safetensors), e.g. the best model so far; atomic like every checkpoint. A refused write
    stops every process with a ``WriteError`` naming the newest whole checkpoint in ``checkpoint_dir``; the file
    that was there is left as it was. Collective."""
    tensors = full_state_dict(accelerator, model)
    previous = newest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    with written_together(accelerator, f"'{path}'", previous):
        if accelerator.is_main_process:
            with atomic_file(path) as temporary:
                save_file(tensors, temporary)


def load_weights(accelerator: Accelerator, model, path: Path) -> None:
    """Load weights ``save_weights`` wrote into the prepared ``model``, sharded or not. Collective: the main process
    reads the file (the only one that wrote it: with a folder per node, the other nodes have no copy) and torch
    sends every other process its weights, or its shards of them."""
    unwrapped = accelerator.unwrap_model(model)
    if is_sharded(unwrapped) or accelerator.num_processes > 1:
        state = load_file(path, device="cpu") if accelerator.is_main_process else {}
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=is_sharded(unwrapped))
        set_model_state_dict(unwrapped, state, options=options)
    else:
        unwrapped.load_state_dict(load_file(path, device="cpu"))
    accelerator.wait_for_everyone()
