"""The compute-only bound: how fast an arm's model trains when the input costs nothing.

Measured by the recipe itself: for each distinct compute among the arms (model, precision, micro-batch,
accumulation, memory format...), a *bound arm* runs the same recipe with ``data_pipeline: synthetic`` (one batch of
the run's training images, held on the device, serves as every training batch). It is launched like every arm, in
the same interleaved repeats, and its throughput is read the same way (steady state, warm-up excluded), so an
arm's median images/s over its bound's is a like-for-like share, not a ratio of two differently taken measurements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accel_recipes.bench.ablate.arms import Arm
from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.bench.common.stats import spread
from accel_recipes.config import RecipeArguments
from accel_recipes.results import key

# The fields that decide what one training step computes; arms equal on all of them share a bound.
BOUND_FIELDS = (
    "model_name_or_path",
    "model_library",
    "pretrained",
    "small_image_stem",
    "patch_size",
    "image_size",
    "drop_path_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "mixed_precision",
    "tf32",
    "channels_last",
    "torch_compile",
    "optim",
    "optimizer_implementation",
    "max_grad_norm",
)
SYNTHETIC = {"data_pipeline": "synthetic", "dataloader_num_workers": 0, "dataloader_pin_memory": False}


def bound_key(args: RecipeArguments) -> tuple:
    """Arms whose compute is the same share one bound."""
    return tuple((name, args.get(name)) for name in BOUND_FIELDS)


@dataclass
class BoundPlan:
    arms: list[Arm]  # the bound arms, run like any arm
    of: dict[str, str]  # arm name -> its bound arm's name


def plan_bounds(arms: list[Arm], resolve: Callable[[Arm], RecipeArguments]) -> BoundPlan:
    """One bound arm (``bound-1``, ``bound-2``...) per distinct ``bound_key`` among ``arms``: the first such arm's
    settings with the synthetic data pipeline."""
    by_key: dict[tuple, Arm] = {}
    of: dict[str, str] = {}
    for arm in arms:
        key = bound_key(resolve(arm))
        if key not in by_key:
            name = f"bound-{len(by_key) + 1}"
            by_key[key] = Arm(name, [*arm.parts, "data_pipeline:synthetic"], {**arm.overrides, **SYNTHETIC})
        of[arm.name] = by_key[key].name
    return BoundPlan(list(by_key.values()), of)


def summarize_bounds(
    plan: BoundPlan, records: list[RunRecord], resolve: Callable[[Arm], RecipeArguments]
) -> list[dict[str, Any]]:
    """Per bound arm: the arms it bounds, the settings it shares with them, and its steady images/s over the
    repeats (median, min, max; None with the last error when no repeat finished)."""
    summaries = []
    for bound in plan.arms:
        runs = [record for record in records if record.arm == bound.name]
        done = [record for record in runs if record.ok]
        measured = spread([record.results.get(key("steady_samples_per_second")) for record in done])
        args = resolve(bound)
        errors = [record.error for record in runs if not record.ok and record.error]
        summaries.append(
            {
                "name": bound.name,
                "arms": [arm for arm, name in plan.of.items() if name == bound.name],
                "settings": {name: args.get(name) for name in BOUND_FIELDS},
                "runs_ok": f"{len(done)}/{len(runs)}",
                "images_per_second": measured.median if measured else None,
                "images_per_second_min": measured.min if measured else None,
                "images_per_second_max": measured.max if measured else None,
                "error": None if measured else (errors[-1] if errors else "no run finished"),
            }
        )
    return summaries
