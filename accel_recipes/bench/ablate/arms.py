"""Arms of an ablation: each is the baseline plus named switches, as recipe-field overrides.

Every arm starts from the same baseline (fp32 with TF32 off, no accumulation, pageable memory, the streaming
DataLoader) at the recipe's effective batch size, and adds its switches in the order named:

- ``ga``: the same effective batch B in k micro-batches of B / k (gradient accumulation);
- ``amp``: autocast at fp16 (with dynamic loss scaling) on a GPU, bf16 on a CPU, or the dtype asked for;
- ``pin``: page-locked host batches and non-blocking copies (the loader's workers are the recipe's in every arm);
- ``all``: ``ga+amp+pin``;
- the training switches of timm's train.py, each at timm's usual setting: ``ema`` (EMA of the weights, exported
  when it validates better: ``metric_for_best_model: ema_accuracy``), ``mixup`` (alpha 0.8), ``cutmix`` (alpha 1.0),
  ``trivial_augment``, ``rand_augment`` (magnitude 9), ``erasing`` (random erasing, probability 0.25) and
  ``flip_tta`` (flip test-time augmentation, reported as ``*_tta_*``);
- the methods that move time to accuracy: ``blurpool`` (anti-aliased downsampling, timm's ``aa_layer`` blur: the
  ResNet is built as timm's ``resnetblur*``) and ``early_stop`` (transformers' early stopping: 2 evaluations without
  an improvement end the run); ``ema`` above is one too. With ``--target_metric_value`` every arm stops at the target;
- ``field:value``: any recipe field, so a new switch needs no code (``resident=data_pipeline:resident``).
  A list field takes its items separated by spaces (``progressive=train_img_sizes:16 24 32``), as ``--arms`` is
  comma-separated; a resolution schedule must end at the recipe's input size, so it is an arm of this kind.

``--arms baseline,ga,amp+pin,fast=all+channels_last:true`` names four arms: two built-in, a combination and a
custom one; a custom name can be used in later combinations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from accel_recipes.config import FIELDS, RecipeArguments, coerce
from accel_recipes.errors import ArmError

# timm's train.py switches as arms: the fields each sets (``--model-ema``, ``--mixup 0.8``, ``--cutmix 1.0``,
# ``--aa rand-m9``, ``--reprob 0.25``).
TRAINING_SWITCHES: dict[str, dict[str, Any]] = {
    "ema": {"model_ema": True, "metric_for_best_model": "ema_accuracy"},
    "mixup": {"mixup_alpha": 0.8},
    "cutmix": {"cutmix_alpha": 1.0},
    "trivial_augment": {"augmentation": "trivial_augment"},
    "rand_augment": {"augmentation": "rand_augment", "rand_augment_magnitude": 9},
    "erasing": {"random_erasing": 0.25},
    "flip_tta": {"eval_flip_tta": True},
    # the methods that move time to accuracy; a new one is one entry here
    "blurpool": {"aa_layer": "blur"},
    "early_stop": {"early_stopping_patience": 2},
}
BUILTIN_ARMS = ("baseline", "ga", "amp", "pin", "all", *TRAINING_SWITCHES)
AMP_DTYPES = ("fp16", "bf16")


@dataclass(frozen=True)
class ArmContext:
    """What the built-in switches need to know about the recipe and the machine."""

    effective_batch: int  # per process: the recipe's micro-batch x accumulation steps
    ga_steps: int  # k of the ``ga`` switch
    amp_dtype: str  # fp16 or bf16

    @classmethod
    def from_args(cls, args: RecipeArguments, ga_steps: int | None, amp_dtype: str) -> ArmContext:
        """k defaults to the recipe's accumulation steps, or 2 when the recipe has none."""
        if amp_dtype not in AMP_DTYPES:
            raise ArmError(f"amp_dtype must be one of {list(AMP_DTYPES)}, got {amp_dtype!r}")
        steps = ga_steps if ga_steps is not None else max(args.training.gradient_accumulation_steps, 2)
        if steps < 2:
            raise ArmError(f"ga_steps must be at least 2 (1 is no accumulation), got {steps}")
        return cls(
            args.training.per_device_train_batch_size * args.training.gradient_accumulation_steps, steps, amp_dtype
        )


@dataclass
class Arm:
    name: str
    parts: list[str]  # the switches, expanded and in order ("all" becomes ga, amp, pin)
    overrides: dict[str, Any] = field(default_factory=dict)  # every field the arm sets, baseline's included

    @property
    def folder(self) -> str:
        """The arm's name as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.+=-]", "_", self.name)


def baseline_overrides(context: ArmContext) -> dict[str, Any]:
    return {
        "mixed_precision": "no",
        "tf32": False,
        "per_device_train_batch_size": context.effective_batch,
        "gradient_accumulation_steps": 1,
        "dataloader_pin_memory": False,
        "data_pipeline": "stream",  # the paper's loader, where pinned memory means something
    }


def switch_overrides(switch: str, context: ArmContext) -> dict[str, Any]:
    """The fields one built-in switch sets."""
    if switch == "baseline":
        return {}
    if switch == "ga":
        k, batch = context.ga_steps, context.effective_batch
        if batch % k:
            raise ArmError(
                f"arm 'ga' splits the effective batch {batch} into {k} micro-batches, but {batch} is not divisible "
                f"by {k}; pass --ga_steps with a divisor of {batch}, or change per_device_train_batch_size"
            )
        return {"per_device_train_batch_size": batch // k, "gradient_accumulation_steps": k}
    if switch == "amp":
        return {"mixed_precision": context.amp_dtype}
    if switch == "pin":
        return {"dataloader_pin_memory": True}
    if switch in TRAINING_SWITCHES:
        return dict(TRAINING_SWITCHES[switch])
    raise ArmError(f"unknown switch {switch!r}; the built-in ones are {list(BUILTIN_ARMS)}")


def _field_override(part: str) -> dict[str, Any]:
    name, _, value = part.partition(":")
    if name not in FIELDS:
        raise ArmError(f"arm part '{part}' names no recipe field '{name}'; see `recipes/train.py --help`")
    return {name: coerce(name, value)}


def _expand(part: str, defined: dict[str, list[str]], item: str) -> list[str]:
    if part == "all":
        return ["ga", "amp", "pin"]
    if part in BUILTIN_ARMS:
        return [part]
    if part in defined:
        return list(defined[part])
    if ":" in part:
        return [part]
    valid = list(BUILTIN_ARMS) + [name for name in defined if name not in BUILTIN_ARMS]
    raise ArmError(
        f"unknown arm {part!r} in {item!r}; valid arms are {valid}, '+'-combinations of them (ga+amp), "
        "recipe settings as field:value (channels_last:true), and name=spec to define one"
    )


def build_arm(name: str, parts: list[str], context: ArmContext) -> Arm:
    overrides = baseline_overrides(context)
    for part in parts:
        overrides.update(_field_override(part) if ":" in part else switch_overrides(part, context))
    return Arm(name, parts, overrides)


def parse_arms(text: str, context: ArmContext) -> list[Arm]:
    """``baseline,ga,amp,ga+amp,resident=data_pipeline:resident`` -> arms, baseline first (added when missing:
    every speed-up is measured against it)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ArmError(f"--arms is empty; name some of {list(BUILTIN_ARMS)}")
    defined: dict[str, list[str]] = {}
    arms: list[Arm] = []
    for item in items:
        name, has_name, spec = item.partition("=")
        if not has_name:
            name, spec = item, item
        name = name.strip()
        if not name or not spec.strip():
            raise ArmError(f"arm {item!r} must be NAME=SPEC or SPEC, e.g. resident=data_pipeline:resident")
        if name in defined:
            raise ArmError(f"arm {name!r} is named twice in --arms")
        if has_name and name in BUILTIN_ARMS:
            raise ArmError(f"arm name {name!r} is a built-in arm; choose another name for {item!r}")
        parts = [piece for part in spec.split("+") for piece in _expand(part.strip(), defined, item)]
        defined[name] = parts
        arms.append(build_arm(name, parts, context))
    if "baseline" not in defined:
        arms.insert(0, build_arm("baseline", [], context))
    return sorted(arms, key=lambda arm: arm.name != "baseline")  # stable: baseline first, the rest as named


def effective_batch(overrides: dict[str, Any]) -> int:
    """Per process: micro-batch x accumulation steps."""
    return int(overrides["per_device_train_batch_size"]) * int(overrides["gradient_accumulation_steps"])
