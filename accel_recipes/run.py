"""One training run from arguments to a finished output_dir: the body of ``recipes/train.py``.

YAML + CLI -> RecipeArguments -> build_data -> build_model -> engine.fit -> results, plots, model folder
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed
from accelerate.utils.memory import should_reduce_batch_size

from accel_recipes.card import write_model_card
from accel_recipes.config import ConfigError, RecipeArguments, dump_config, parse_args
from accel_recipes.data import DataBundle, DataError, build_data
from accel_recipes.engine import Preempted, RunResult, TrainingError, create_accelerator, fit
from accel_recipes.export import save_model_folder
from accel_recipes.hub import HubError, checkpoint_pusher, default_repo_id, push_run
from accel_recipes.models import ModelError, ModelSpec, build_model
from accel_recipes.reporting import plot_learning_curves, write_json_atomic

USER_ERRORS = (ConfigError, DataError, ModelError, TrainingError)
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: try again (resume); the checkpoint is saved
FINISHED_MARKERS = ("all_results.json", "metrics.jsonl", "checkpoints", "model")


def check_output_dir(args: RecipeArguments) -> None:
    """Refuse to mix a new run into a finished or running one: nothing already there is ever overwritten
    unless the user says so (or resumes it)."""
    output_dir = Path(args.training.output_dir)
    existing = [name for name in FINISHED_MARKERS if (output_dir / name).exists()]
    if existing and not args.training.overwrite_output_dir and args.training.resume_from_checkpoint is None:
        raise ConfigError(
            f"output_dir '{output_dir}' already holds a run ({', '.join(existing)}); pass a new --output_dir, "
            "--resume_from_checkpoint latest to carry on, or --overwrite_output_dir true to replace it"
        )


def prepare_output_dir(args: RecipeArguments) -> Path:
    output_dir = Path(args.training.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.training.overwrite_output_dir and args.training.resume_from_checkpoint is None:
        (output_dir / "metrics.jsonl").unlink(missing_ok=True)
    return output_dir


def fit_with_batch_search(
    args: RecipeArguments, data: DataBundle, accelerator: Accelerator, on_checkpoint=None
) -> tuple[RunResult, ModelSpec]:
    """Build the model and train it. With ``auto_find_batch_size``, an out-of-memory error halves the micro-batch
    and doubles ``gradient_accumulation_steps`` (same effective batch, same schedule) and training starts over."""
    while True:
        set_seed(args.training.seed)
        spec = build_model(args, data.label_names, data.mean, data.std, data.native_size)
        try:
            return fit(args, spec, data, accelerator, on_checkpoint), spec
        except Exception as error:
            if not should_reduce_batch_size(error):
                raise
            batch_size = args.training.per_device_train_batch_size
            if not args.training.auto_find_batch_size or batch_size == 1:
                hint = "" if args.training.auto_find_batch_size else " or pass --auto_find_batch_size true"
                raise TrainingError(
                    f"out of memory at per_device_train_batch_size {batch_size}: lower it (and raise "
                    f"gradient_accumulation_steps to keep the effective batch){hint}"
                ) from error
        del spec
        accelerator.free_memory()
        accelerator._custom_objects.clear()  # the scheduler registered for checkpointing by the failed attempt
        args.training.per_device_train_batch_size = batch_size // 2
        args.training.gradient_accumulation_steps *= 2
        accelerator.gradient_accumulation_steps = args.training.gradient_accumulation_steps
        accelerator.print(
            f"out of memory at per_device_train_batch_size {batch_size}: retrying from the start with "
            f"{args.training.per_device_train_batch_size} x {args.training.gradient_accumulation_steps} accumulation steps"
        )
        if accelerator.is_main_process:
            dump_config(args, Path(args.training.output_dir) / "config.yaml")
            (Path(args.training.output_dir) / "metrics.jsonl").unlink(missing_ok=True)


def train(args: RecipeArguments, accelerator: Accelerator | None = None) -> RunResult:
    accelerator = accelerator or create_accelerator(args)
    check_output_dir(args)
    if accelerator.is_main_process:
        output_dir = prepare_output_dir(args)
        dump_config(args, output_dir / "config.yaml")
    accelerator.wait_for_everyone()
    output_dir = Path(args.training.output_dir)
    set_seed(args.training.seed)
    with accelerator.main_process_first():
        data = build_data(args)
    if args.report_targets():
        accelerator.init_trackers(args.training.run_name or output_dir.name, config=_tracker_config(args))
    with checkpoint_pusher(args, accelerator.is_main_process) as on_checkpoint:
        result, spec = fit_with_batch_search(args, data, accelerator, on_checkpoint)
    if accelerator.is_main_process:
        write_json_atomic(output_dir / "all_results.json", result.metrics)
        plot_learning_curves(output_dir / "metrics.jsonl", output_dir / "learning_curves.png")
        save_model_folder(spec, accelerator.unwrap_model(result.model), output_dir / "model", data.label_names)
        write_model_card(output_dir)
        _print_summary(accelerator, result)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the TensorBoard event files before they are pushed
    if args.hub.push_to_hub and accelerator.is_main_process:
        repo_id = default_repo_id(args.hub.hub_model_id, output_dir)
        accelerator.print(f"pushed to {push_run(output_dir, repo_id, private=args.hub.hub_private_repo)}")
    return result


def _tracker_config(args: RecipeArguments) -> dict:
    """Trackers accept scalars only."""
    return {key: ("None" if value is None else value) for key, value in args.to_dict().items()}


def _print_summary(accelerator: Accelerator, result: RunResult) -> None:
    metrics = result.metrics
    lines = [f"finished: {result.output_dir}"]
    for key in ("eval_accuracy", "eval_f1", "test_accuracy", "test_f1", "train_runtime", "train_samples_per_second"):
        if key in metrics:
            lines.append(f"  {key:<26} {metrics[key]:.4f}")
    accelerator.print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        train(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except HubError as error:  # the run itself finished: every file is on disk
        print(f"error: {error}", file=sys.stderr)
        return 3
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    return 0
