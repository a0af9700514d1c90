"""What an ablation runs: its options, the recipe it starts from, one planned run per arm and repeat, and the
statement of what every arm holds fixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.arms import Arm, ArmContext, effective_batch, parse_arms
from accel_recipes.bench.ablate.bound import BoundPlan, plan_bounds
from accel_recipes.bench.ablate.runner import PlannedRun, launched_processes
from accel_recipes.bench.common.order import rotation
from accel_recipes.bench.common.recipe import resolve_recipe
from accel_recipes.bench.common.target import Target
from accel_recipes.config import RecipeArguments
from accel_recipes.errors import ConfigError

# Set for every run whatever the user passes: the runner owns the output folders, and an ablation never pushes.
FORCED = {"overwrite_output_dir": True, "push_to_hub": False, "resume_from_checkpoint": None}
# Set unless the user passes them: checkpoints cost disk and wall time and are not measured; no progress bars.
DEFAULTS = {"save_strategy": "no", "disable_tqdm": True}
ARM_FIELDS = ("mixed_precision", "tf32", "dataloader_pin_memory", "data_pipeline")  # set by every arm
LOG_POINTS = 25  # training-loss points per run in the learning curves when max_steps is given


@dataclass
class AblationOptions:
    config: str | None
    arms: str = "baseline,ga,amp,pin,all"
    repeats: int = 3
    output_dir: str | None = None
    overwrite_output_dir: bool = False
    target_accuracy: float | None = None
    launch_args: str = ""
    amp_dtype: str | None = None
    ga_steps: int | None = None
    bound: bool = True  # measure each arm's compute-only bound (bound arms on synthetic data)
    keep_weights: bool = False
    recipe_overrides: dict[str, str] = field(default_factory=dict)  # --field value pairs for every run


@dataclass
class Ablation:
    options: AblationOptions
    base: RecipeArguments  # the recipe with the user's overrides
    context: ArmContext
    arms: list[Arm]
    output_dir: Path
    processes: int
    bounds: BoundPlan = field(default_factory=lambda: BoundPlan([], {}))

    @property
    def target(self) -> Target | None:
        """What the time to target is measured to: ``--target_accuracy`` (reported only; every run trains its
        budget), else the recipe's own ``target_metric_value`` (every run stops there, as training does)."""
        if self.options.target_accuracy is not None:
            return Target(self.options.target_accuracy)
        training = self.base.training
        if training.target_metric_value is None:
            return None
        return Target(training.target_metric_value, training.metric_for_best_model.removeprefix("ema_"))

    def run_overrides(self, arm: Arm, output_dir: Path) -> dict[str, Any]:
        """The command-line fields of one run: defaults, then the user's, then the arm's, then the runner's."""
        overrides: dict[str, Any] = dict(DEFAULTS)
        training = self.base.training
        if training.max_steps > 0 and "logging_steps" not in self.options.recipe_overrides:
            overrides["logging_steps"] = max(1, min(training.logging_steps, training.max_steps // LOG_POINTS))
        overrides.update(self.options.recipe_overrides)
        overrides.update(arm.overrides)
        overrides.update(FORCED)
        overrides["output_dir"] = str(output_dir)
        return overrides

    def resolved(self, arm: Arm) -> RecipeArguments:
        """The arm's full arguments, as its run will resolve them."""
        return resolve_recipe(self.options.config, self.run_overrides(arm, self.output_dir / arm.folder))

    def planned_runs(self) -> list[PlannedRun]:
        """Repeats interleaved: every arm and bound arm once, then every one again, each repeat in the same order
        rotated to start further along (see ``rotation``)."""
        every_arm = [*self.arms, *self.bounds.arms]
        runs = []
        for repeat in range(1, self.options.repeats + 1):
            shift = rotation(repeat, self.options.repeats, len(every_arm))
            for arm in every_arm[shift:] + every_arm[:shift]:
                folder = self.output_dir / arm.folder / f"run-{repeat}"
                runs.append(PlannedRun(arm.name, repeat, folder, self.run_overrides(arm, folder)))
        return runs


def default_amp_dtype(device_type: str) -> str:
    """fp16 (with loss scaling) where there is an accelerator, bf16 on a CPU (CPU autocast's native dtype)."""
    return "bf16" if device_type == "cpu" else "fp16"


def plan_ablation(options: AblationOptions, device_type: str) -> Ablation:
    """Check everything before the first run starts: the recipe, the overrides, every arm's arguments."""
    if options.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {options.repeats}")
    base = resolve_recipe(options.config, options.recipe_overrides)
    context = ArmContext.from_args(base, options.ga_steps, options.amp_dtype or default_amp_dtype(device_type))
    arms = parse_arms(options.arms, context)
    recipe_dir = Path(base.training.output_dir)
    output_dir = Path(options.output_dir or recipe_dir.with_name(f"ablate-{recipe_dir.name}"))
    if output_dir.is_dir() and any(output_dir.iterdir()) and not options.overwrite_output_dir:
        raise ConfigError(
            f"output_dir '{output_dir}' is not empty; pass a new --output_dir, or --overwrite_output_dir true to "
            "run the ablation again into it"
        )
    ablation = Ablation(options, base, context, arms, output_dir, launched_processes(options.launch_args))
    for arm in arms:
        ablation.resolved(arm)  # a ConfigError naming the field now, not after hours of other arms
    if options.bound:
        ablation.bounds = plan_bounds(arms, ablation.resolved)
    return ablation


def held_fixed(ablation: Ablation, device_type: str) -> list[str]:
    """What every arm holds fixed and why, in sentences for the report."""
    training, context, options = ablation.base.training, ablation.context, ablation.options
    batch, k, processes = context.effective_batch, context.ga_steps, ablation.processes
    recipe = f"`{options.config}`" if options.config else "the default arguments"
    given = " ".join(f"--{key} {value}" for key, value in options.recipe_overrides.items())
    length = (
        f"{training.max_steps} optimizer updates" if training.max_steps > 0 else f"{training.num_train_epochs:g} epochs"
    )
    amp = (
        "fp16 with dynamic loss scaling (steps the scaler skips are counted)"
        if context.amp_dtype == "fp16"
        else "bf16 (no loss scaling needed)"
    )
    used = {part for arm in ablation.arms for part in arm.parts}
    lines = [
        f"Every arm starts from {recipe}{f' with `{given}`' if given else ''} and changes only what its switches "
        "set: precision and TF32, micro-batch and accumulation steps, pinned memory. The recipe's own values of "
        "those fields and of data_pipeline are replaced by the baseline's (fp32 with TF32 off, no accumulation, "
        "pageable memory, the streaming loader).",
        f"The effective batch is {batch} per process ({batch * processes} in all) in every arm, so the learning rate "
        f"({training.learning_rate:g}), its schedule and the length ({length}) are the same: every arm takes the same "
        "optimizer steps over the same samples. The baseline takes each batch as one micro-batch.",
        f"The seed ({training.seed}) is the same: the same initial weights, data order and augmentation of every "
        "sample (drawn per sample from seed, epoch and index), whatever the micro-batch or the worker count.",
        "The data path is the streaming DataLoader (per-sample transforms in workers, the paper's) in every arm that "
        "does not set data_pipeline itself: the switches are measured on the loader they were made for. The "
        "device-resident path is an arm of its own: `resident=data_pipeline:resident`, combinable (`all+resident`); "
        "it draws its augmentation from generators of its own, so its accuracy is not bit-comparable.",
        "Each arm and repeat is a fresh `accelerate launch` with its own output folder; repeats are interleaved (every "
        "arm once, then again) so drifting machine load slows every arm alike, and each repeat starts at another arm "
        "(the same order, rotated) so load that recurs every repeat does not fall on one arm each time. Evaluation "
        "and checkpoints never count as training time; checkpoints are off unless asked for (save_strategy no).",
    ]
    switch_lines = {
        "ga": f"`ga` takes each batch of {batch} as {k} micro-batches of {batch // k}: the same gradient (each "
        "micro-batch weighted by its window's length), so the same learning rate and curve, except that BatchNorm "
        "sees the micro-batch. It is a memory tool, not a speed-up: smaller kernels run less efficiently, so expect "
        "it at or below 1.00x, and compare its peak memory with the baseline's to see what it buys. One difference "
        "remains at the end of each epoch: the loader drops the last incomplete micro-batch, so the baseline drops "
        f"the last (train size mod {batch}) images while `ga` trains on the whole micro-batches among them as one "
        "smaller, last update; its epochs can be an update longer (176 updates instead of 175 on CIFAR-10 at batch "
        "256 with k 2; visible only on tiny data sets).",
        "amp": f"`amp` is autocast at {amp}. TF32 stays off in every arm, so fp32 means fp32 on Ampere and newer GPUs.",
        "pin": "`pin` page-locks the loader's batches and copies them without blocking. The loader keeps the recipe's "
        f"{training.dataloader_num_workers} worker(s) in every arm, so pinning is measured alone.",
    }
    lines[3:3] = [switch_lines[switch] for switch in ("ga", "amp", "pin") if switch in used]
    if ablation.bounds.arms:
        lines.append(
            "Each arm's compute-only bound is a bound arm (`bound-1`, ...): the arm's own settings with "
            "`data_pipeline: synthetic`, one batch of training images held on the device as every training batch. "
            "Arms that compute the same (model, precision, micro-batch, accumulation, memory format, optimizer) "
            "share one. Bound arms are launched and timed like the arms, in the same interleaved repeats; their "
            "accuracy means nothing."
        )
    if device_type == "cpu" and "pin" in used:
        lines.append(
            "On a CPU there is no host-to-device copy and the loader pins nothing whatever the arm says: `pin` runs "
            "the baseline again, and its speed-up shows the run-to-run noise of this machine."
        )
    return lines


def arm_notes(ablation: Ablation) -> list[str]:
    """Warnings about arms or settings that make a comparison less than like-for-like."""
    notes = []
    for arm in ablation.arms:
        batch = effective_batch(arm.overrides)
        if batch != ablation.context.effective_batch:
            notes.append(
                f"`{arm.name}` trains with an effective batch of {batch}, not {ablation.context.effective_batch}: its "
                "speed-up and accuracy are not like-for-like with the baseline's"
            )
    replaced = [f"--{name}" for name in ARM_FIELDS if name in ablation.options.recipe_overrides]
    if replaced:
        notes.append(f"{', '.join(replaced)} on the command line is replaced by each arm's own setting")
    training = ablation.base.training
    if 0 < training.max_steps <= training.throughput_warmup_steps:
        notes.append(
            f"max_steps {training.max_steps} <= throughput_warmup_steps {training.throughput_warmup_steps}: there is "
            "no steady state, so images/s includes the warm-up updates"
        )
    return notes
