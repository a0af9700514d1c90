"""``all_results.json``, the one results contract: every key a finished run writes and its type, defined once.

The trainer writes it (``Trainer._finish``, checked by ``check_results``); the model card, the reports, the
benchmarks and the GPU check read it through ``key`` (a name not in the contract is a ``KeyError``), so a renamed key
fails their tests instead of vanishing from a card or a table. Names follow the Hugging Face example scripts
(``train_runtime``, ``train_samples_per_second``, ``eval_accuracy``, ``test_f1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

RESULTS_FILE = "all_results.json"

# the final evaluation: {split}[_ema][_tta]_{metric}, as the trainer's MetricAccumulator names them
SPLITS = ("eval", "test")
EVALUATION_METRICS: dict[str, type] = {"loss": float, "accuracy": float, "f1": float, "samples": int}


def evaluation_key(split: str, metric: str, ema: bool = False, tta: bool = False) -> str:
    """``eval_accuracy``, ``test_ema_f1``, ``eval_tta_loss``, ...: one metric of the final evaluation."""
    return key(f"{split}{'_ema' if ema else ''}{'_tta' if tta else ''}_{metric}")


# what training measured and how it ran (always written)
TRAINING_KEYS: dict[str, Any] = {
    "epoch": float,
    "train_updates": int,
    "train_samples": int,
    "train_runtime": float,  # seconds of training steps: evaluation and checkpoints excluded
    "train_samples_per_second": float,
    "train_steps_per_second": float,
    "steady_samples_per_second": float,  # after throughput_warmup_steps
    "data_wait_fraction": float,
    "peak_memory_mb": float,
    "skipped_updates": int,
    "skipped_images": int,
    "best_update": int | None,
    "num_processes": int,
    "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int,
    "global_batch_size": int,
    "mixed_precision": str | None,
    "device": str,
    "exported_weights": str,  # "ema" or "live"
    "metric_for_best_model": str,  # the validation metric that chose the exported weights and decides stopping
    "target_metric_value": float | None,
    "time_to_target_seconds": float | None,  # training time at the first evaluation reaching target_metric_value
    "time_to_target_updates": int | None,
    "time_to_target_samples": int | None,
    "stopped_early": bool,  # target_metric_value or early stopping ended training before its plan
}

# written only by the runs they describe
OPTIONAL_KEYS: dict[str, Any] = {
    "validation_held_out": str,  # a stream without a validation split: how validation was held out of train
}

EVALUATION_KEYS: dict[str, type] = {
    f"{split}{ema}{tta}_{metric}": kind
    for split in SPLITS
    for ema in ("", "_ema")
    for tta in ("", "_tta")
    for metric, kind in EVALUATION_METRICS.items()
}
RESULT_KEYS: dict[str, Any] = {**TRAINING_KEYS, **OPTIONAL_KEYS, **EVALUATION_KEYS}

# the typed form of all_results.json (total=False: the evaluation keys depend on the run's splits and switches)
RunResults = TypedDict("RunResults", RESULT_KEYS, total=False)  # noqa: UP013 (keys are not identifiers-only)


def key(name: str) -> str:
    """``name`` when ``all_results.json`` has such a key, else a ``KeyError`` naming it: how readers name keys."""
    if name not in RESULT_KEYS:
        raise KeyError(f"{name!r} is not a key of {RESULTS_FILE} (accel_recipes/results.py)")
    return name


def check_results(results: dict[str, Any]) -> RunResults:
    """The trainer's results, checked against the contract: every training key present, no key outside it."""
    unknown = sorted(set(results) - set(RESULT_KEYS))
    missing = sorted(set(TRAINING_KEYS) - set(results))
    if unknown or missing:
        raise KeyError(f"{RESULTS_FILE} out of contract: unknown keys {unknown}, missing keys {missing}")
    return results  # type: ignore[return-value]


def read_results(path: Path) -> RunResults:
    """A run's ``all_results.json`` (older runs may lack newer keys: readers use ``.get``)."""
    return json.loads(Path(path).read_text())
