"""One training run from arguments to a finished output_dir: the body of ``recipes/train.py``.

YAML + CLI -> RecipeArguments -> build_data -> build_model -> engine.fit -> results, plots, model folder
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from accel_recipes.config import ConfigError, RecipeArguments, dump_config, parse_args
from accel_recipes.data import DataError, build_data
from accel_recipes.engine import RunResult, TrainingError, create_accelerator, fit
from accel_recipes.export import save_model_folder
from accel_recipes.models import ModelError, build_model
from accel_recipes.reporting import plot_learning_curves, write_json_atomic

USER_ERRORS = (ConfigError, DataError, ModelError, TrainingError)
FINISHED_MARKERS = ("all_results.json", "metrics.jsonl", "checkpoints", "model")


def prepare_output_dir(args: RecipeArguments) -> Path:
    """Refuse to mix a new run into a finished or running one: nothing already there is ever overwritten
    unless the user says so."""
    output_dir = Path(args.output_dir)
    existing = [name for name in FINISHED_MARKERS if (output_dir / name).exists()]
    if existing and not args.overwrite_output_dir:
        raise ConfigError(
            f"output_dir '{output_dir}' already holds a run ({', '.join(existing)}); pass a new --output_dir, "
            "or --overwrite_output_dir true to replace it"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.overwrite_output_dir and (output_dir / "metrics.jsonl").exists():
        (output_dir / "metrics.jsonl").unlink()
    return output_dir


def train(args: RecipeArguments, accelerator: Accelerator | None = None) -> RunResult:
    accelerator = accelerator or create_accelerator(args)
    if accelerator.is_main_process:
        output_dir = prepare_output_dir(args)
        dump_config(args, output_dir / "config.yaml")
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    set_seed(args.seed)
    with accelerator.main_process_first():
        data = build_data(args)
    spec = build_model(args, data.label_names, data.mean, data.std, data.native_size)
    if args.report_targets():
        accelerator.init_trackers(args.run_name or output_dir.name, config=_tracker_config(args))
    result = fit(args, spec, data, accelerator)
    if accelerator.is_main_process:
        write_json_atomic(output_dir / "all_results.json", result.metrics)
        plot_learning_curves(output_dir / "metrics.jsonl", output_dir / "learning_curves.png")
        save_model_folder(spec, accelerator.unwrap_model(result.model), output_dir / "model", data.label_names)
        _print_summary(accelerator, result)
    accelerator.wait_for_everyone()
    accelerator.end_training()
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
    return 0
