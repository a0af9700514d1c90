"""One training run from arguments to a finished output_dir: the body of ``recipes/train.py``.

YAML + CLI -> arguments -> build_data -> build_model -> build_loaders -> engine.fit -> results, plots, model
folder -> card -> push (optional)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from accel_recipes.card import write_model_card
from accel_recipes.checkpoints import (
    STATE_FILE,
    RunState,
    full_state_dict,
    newest_checkpoint,
    remove_earlier_run,
    require_reachable_end,
    require_same_classes,
    require_same_ema,
    resolve_checkpoint,
    set_aside_later_checkpoints,
)
from accel_recipes.config import RecipeArguments, TrainingArguments, dump_config, parse_args
from accel_recipes.data import ModelInput, build_data, build_loaders
from accel_recipes.elastic import check_restartable, resume_after_restart
from accel_recipes.engine import RunResult, create_accelerator, fit
from accel_recipes.engine.out_of_memory import is_out_of_memory
from accel_recipes.engine.resolution import check_model_sizes
from accel_recipes.errors import ConfigError, OutOfMemoryOnAnotherProcess, TrainingError, run_entry_point
from accel_recipes.hub import checkpoint_pusher, default_repo_id, push_run
from accel_recipes.io import write_json_atomic
from accel_recipes.models import build_model
from accel_recipes.models.folder import save_model_folder
from accel_recipes.nodes import check_output_dir_layout, writes_checkpoints
from accel_recipes.plan import TrainingPlan
from accel_recipes.reporting import plot_learning_curves
from accel_recipes.results import RESULTS_FILE
from accel_recipes.signals import stop_with_launcher
from accel_recipes.write_failures import written_together

FINISHED_MARKERS = (RESULTS_FILE, "metrics.jsonl", "checkpoints", "model")


def check_output_dir(training: TrainingArguments) -> None:
    """Refuse to mix a new run into a finished or running one: nothing already there is ever overwritten
    unless the user says so (or resumes it). Also refuse, before any work, an output_dir that is a file, lies
    under a file, or cannot be written."""
    output_dir = Path(training.output_dir)
    _check_writable_folder(output_dir)
    existing = [name for name in FINISHED_MARKERS if (output_dir / name).exists()]
    if existing and not training.overwrite_output_dir and training.resume_from_checkpoint is None:
        raise ConfigError(
            f"output_dir '{output_dir}' already holds a run ({', '.join(existing)}); pass a new --output_dir, "
            "--resume_from_checkpoint latest to carry on, or --overwrite_output_dir true to replace it"
        )


def _check_writable_folder(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir '{output_dir}' is a file, not a folder; pass a folder for --output_dir")
    existing = next(parent for parent in [output_dir, *output_dir.absolute().parents] if parent.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"output_dir '{output_dir}' lies under '{existing}', which is a file; pass a folder for --output_dir"
        )
    try:  # a real write: permission bits alone do not tell (root, read-only mounts, ACLs)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(
            f"output_dir '{output_dir}' cannot be written ({existing}: {error.strerror or error}); pass a folder "
            "you can write to for --output_dir"
        ) from None


def prepare_output_dir(training: TrainingArguments) -> Path:
    output_dir = Path(training.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if training.overwrite_output_dir and training.resume_from_checkpoint is None:
        (output_dir / "metrics.jsonl").unlink(missing_ok=True)
    return output_dir


def clear_others_checkpoints(
    training: TrainingArguments, checkpoint: Path | None, report: Callable[[str], None]
) -> None:
    """Before the first save: output_dir's checkpoints are the ones this run may build on, so that ``latest``, an
    elastic restart and rotation only ever weigh those against its own. A fresh start with overwrite_output_dir
    removes the earlier run's; a start from a named checkpoint-N moves aside those numbered above N."""
    directory = Path(training.output_dir) / "checkpoints"
    if checkpoint is not None and training.resume_from_checkpoint != "latest":
        set_aside_later_checkpoints(directory, RunState.from_file(checkpoint / STATE_FILE).update, report)
    elif training.overwrite_output_dir and training.resume_from_checkpoint is None:
        remove_earlier_run(directory, report)


def train(args: RecipeArguments, accelerator: Accelerator | None = None) -> RunResult:
    """Train one recipe end to end; the model folder, card, metrics and plots land in ``output_dir``."""
    training = args.training
    check_restartable()  # before the process group: a restarted one could not connect
    accelerator = accelerator or create_accelerator(training)
    resume_after_restart(training, accelerator.print)
    check_output_dir(training)
    check_output_dir_layout(accelerator, training)
    # a named checkpoint that is not a whole one: an error before anything is written (skips are reported at resume)
    checkpoint = resolve_checkpoint(training, report=lambda message: None, accelerator=accelerator)
    if checkpoint is not None:
        require_same_ema(checkpoint, training.model_ema)
    output_dir = Path(training.output_dir)

    # ---- data -------------------------------------------------------------------------------------------------
    set_seed(training.seed)
    with accelerator.main_process_first():
        data = build_data(args.data, training.seed, args.model.cache_dir)

    # ---- model, loaders, training (with auto_find_batch_size, again at half the micro-batch on out-of-memory) --
    started = False
    with checkpoint_pusher(args, accelerator.is_main_process) as on_checkpoint:
        while True:
            set_seed(training.seed)
            spec = build_model(args.model, data.label_names, data.mean, data.std, data.native_size)
            try:
                model_input = ModelInput(spec.input_size, spec.interpolation, spec.pretrained)
                loaders = build_loaders(data, args.data, training, model_input, accelerator, args.model.cache_dir)
                check_model_sizes(spec.model, loaders.augment, spec.name)
                if not started:
                    if checkpoint is not None:  # a checkpoint this run cannot carry on from: before any write
                        require_same_classes(checkpoint, data.num_classes, data.name)
                        plan = TrainingPlan.build(training, len(loaders.train), accelerator.num_processes)
                        require_reachable_end(checkpoint, training, plan.total_updates)
                    _start_writing(args, accelerator, checkpoint)
                    started = True
                result = fit(training, spec, data, loaders, accelerator, on_checkpoint)
                break
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                del spec
                _halve_batch_or_raise(args, accelerator, error)

    # ---- results, model folder, card, Hub --------------------------------------------------------------------
    weights = full_state_dict(accelerator, result.model)  # collective: a sharded model is gathered on every process
    last_checkpoint = newest_checkpoint(output_dir / "checkpoints")
    with written_together(accelerator, f"the results and model folder in '{output_dir}'", last_checkpoint):
        if accelerator.is_main_process:
            write_json_atomic(output_dir / RESULTS_FILE, result.metrics)
            plot_learning_curves(output_dir / "metrics.jsonl", output_dir / "learning_curves.png")
            model = accelerator.unwrap_model(result.model)
            # the folder's preprocessing is evaluation's: eval_image_size when set (the run's test metrics are at it)
            exported = replace(spec, input_size=loaders.augment.eval_input_size)
            save_model_folder(exported, model, output_dir / "model", data.label_names, state_dict=weights)
            write_model_card(output_dir)
    _print_summary(accelerator, result)
    accelerator.end_training()  # closes the TensorBoard event files before they are pushed
    if args.hub.push_to_hub and accelerator.is_main_process:
        repo_id = default_repo_id(args.hub.hub_model_id, output_dir)
        accelerator.print(f"pushed to {push_run(output_dir, repo_id, private=args.hub.hub_private_repo)}")
    return result


def _start_writing(args: RecipeArguments, accelerator: Accelerator, checkpoint: Path | None) -> None:
    """The first change to output_dir, once data, model and loaders are built: a run that fails before this
    leaves an existing run there exactly as it was."""
    training = args.training
    if accelerator.is_main_process:
        dump_config(args, prepare_output_dir(training) / "config.yaml")
    if writes_checkpoints(accelerator):  # with save_on_each_node, each node's folder by its own writer
        clear_others_checkpoints(training, checkpoint, accelerator.print)
    accelerator.wait_for_everyone()
    if training.report_targets():
        name = training.run_name or Path(training.output_dir).name
        accelerator.init_trackers(
            name,
            config=_tracker_config(args),
            init_kwargs={"wandb": {"dir": training.output_dir}},  # wandb's files under output_dir, not the cwd
        )


def _halve_batch_or_raise(args: RecipeArguments, accelerator: Accelerator, error: Exception) -> None:
    """After an out-of-memory error: with ``auto_find_batch_size``, halve the micro-batch and double
    ``gradient_accumulation_steps`` (same effective batch, same schedule) so training starts over, on every process
    together; else a clear error."""
    training = args.training
    batch_size = training.per_device_train_batch_size
    # with several processes, all of them get here together (OutOfMemoryAgreement): the one that ran out of memory
    # with its own error, the others with OutOfMemoryOnAnotherProcess, which names it
    where = f" ({error})" if isinstance(error, OutOfMemoryOnAnotherProcess) else ""
    if not training.auto_find_batch_size or batch_size == 1:
        hint = "" if training.auto_find_batch_size else " or pass --auto_find_batch_size true"
        raise TrainingError(
            f"out of memory at per_device_train_batch_size {batch_size}{where}: lower it (and raise "
            f"gradient_accumulation_steps to keep the effective batch){hint}"
        ) from error
    accelerator.free_memory()
    # free_memory() releases the prepared models, optimizers and loaders but not the objects registered with
    # register_for_checkpointing (the failed attempt's scheduler), and Accelerate has no public call to unregister
    # them; left there, the next attempt's checkpoints would hold two schedulers and fail to load.
    accelerator._custom_objects.clear()
    training.per_device_train_batch_size = batch_size // 2
    training.gradient_accumulation_steps *= 2
    accelerator.gradient_accumulation_steps = training.gradient_accumulation_steps
    accelerator.print(
        f"out of memory at per_device_train_batch_size {batch_size}{where}: retrying from the start with "
        f"{training.per_device_train_batch_size} x {training.gradient_accumulation_steps} accumulation steps"
    )
    if accelerator.is_main_process:
        dump_config(args, Path(training.output_dir) / "config.yaml")
        (Path(training.output_dir) / "metrics.jsonl").unlink(missing_ok=True)


def _tracker_config(args: RecipeArguments) -> dict:
    """Trackers accept scalars only."""
    return {
        key: ("None" if value is None else str(value) if isinstance(value, list) else value)
        for key, value in args.to_dict().items()
    }


def _print_summary(accelerator: Accelerator, result: RunResult) -> None:
    metrics = result.metrics
    lines = [f"finished: {result.output_dir}"]
    for key in ("eval_accuracy", "eval_f1", "test_accuracy", "test_f1", "train_runtime", "train_samples_per_second"):
        if key in metrics:
            lines.append(f"  {key:<26} {metrics[key]:.4f}")
    accelerator.print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``recipes/train.py``: 0 when finished, 2 for a user error, 3 when only the push failed, 75 when stopped by
    a signal after saving a checkpoint."""

    def run() -> None:
        stop_with_launcher()
        train(parse_args(argv))

    return run_entry_point(run)
