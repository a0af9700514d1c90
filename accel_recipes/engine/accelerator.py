"""The run's one Accelerator, created here and nowhere else (never at import time)."""

from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration

from accel_recipes.config import TrainingArguments
from accel_recipes.errors import ConfigError

logger = logging.getLogger(__name__)

SHARDING_VARIABLES = {"FSDP": "ACCELERATE_USE_FSDP", "DeepSpeed": "ACCELERATE_USE_DEEPSPEED"}  # set by the launcher


def create_accelerator(training: TrainingArguments) -> Accelerator:
    """One Accelerator per run; ``training.mixed_precision`` is set to what it resolved to, so config.yaml records
    what ran. On a CPU, fp16 gets torch's CPU autocast and GradScaler, which Accelerate leaves off, so the fp16 path
    (loss scaling, skipped steps) is the same code on every device."""
    sharding = requested_sharding()
    without_accelerator = sharding is not None and not torch.accelerator.is_available()
    accelerator = Accelerator(
        cpu=_multi_process_without_accelerator() or without_accelerator,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mixed_precision=training.mixed_precision,
        log_with=_trackers(training),
        # with save_on_each_node, Accelerate's save_state writes each node's copy from that node's local main
        project_config=ProjectConfiguration(
            project_dir=training.output_dir, save_on_each_node=training.save_on_each_node
        ),
        dataloader_config=DataLoaderConfiguration(non_blocking=training.dataloader_pin_memory),
        step_scheduler_with_optimizer=False,
    )
    training.mixed_precision = accelerator.mixed_precision
    if without_accelerator and accelerator.is_main_process:
        logger.warning(
            "the Accelerate config asks for %s, which Accelerate enables only on accelerators (GPUs); on this "
            "machine without one the run is %s on the CPU: every process holds the whole model, and checkpoints "
            "hold whole weights, not sharded state",
            sharding,
            f"DDP over gloo with {accelerator.num_processes} processes"
            if accelerator.num_processes > 1
            else "one process",
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _take_recipe_clipping(accelerator, training)
    if training.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        _enable_cpu_fp16_scaler(accelerator)
    cpu_bf16 = training.mixed_precision == "bf16" and accelerator.device.type == "cpu"
    if cpu_bf16 and accelerator.is_main_process and not cpu_has_native_bf16():
        logger.warning(
            "mixed_precision bf16 on a CPU without native bf16 arithmetic (%s; no AVX512-BF16 or AMX): bf16 "
            "autocast is emulated there and trains many times slower than fp32; pass --mixed_precision no to "
            "train on this CPU",
            torch.backends.cpu.get_cpu_capability(),
        )
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = training.tf32
        torch.backends.cudnn.allow_tf32 = training.tf32
        torch.backends.cudnn.benchmark = True
    return accelerator


def requested_sharding() -> str | None:
    """``FSDP`` or ``DeepSpeed`` when ``accelerate launch`` was given such a config (it says so in the trainer's
    environment), else None."""
    for name, variable in SHARDING_VARIABLES.items():
        if os.environ.get(variable, "false").lower() == "true":
            return name
    return None


def _take_recipe_clipping(accelerator: Accelerator, training: TrainingArguments) -> None:
    # Under DeepSpeed, accelerator.clip_grad_norm_ does nothing: DeepSpeed clips inside its step, at its config's
    # gradient_clipping, which Accelerate fills with 1.0 when the config leaves it out. The recipe's max_grad_norm
    # goes there before the engine is built (in prepare), so one field decides the clipping on every backend.
    accelerator.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] = max(0.0, training.max_grad_norm)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so CPU bf16 autocast pays off."""
    # torch exposes these checks only under torch.cpu's private names (what its own CPU autocast tests use); a torch
    # without them is treated as having native bf16, so the warning below is never given wrongly.
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    present = [check for check in checks if callable(check)]
    return not present or any(check() for check in present)


def _enable_cpu_fp16_scaler(accelerator: Accelerator) -> None:
    # Accelerate's public API has no switch for loss scaling on a CPU: it creates its GradScaler only for devices it
    # knows fp16 scaling on. Setting the two attributes its own `backward`/`optimizer.step` read is the smallest
    # change that gives CPU fp16 runs the same scaled, step-skipping path as a GPU.
    if accelerator.scaler is None:
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")
    if accelerator.is_main_process:
        logger.warning(
            "mixed_precision fp16 on a CPU: torch's CPU fp16 autocast with loss scaling is correct, but on CPUs "
            "without fast fp16 arithmetic it trains many times slower than bf16 or fp32; pass "
            "--mixed_precision bf16 (or no) to train on a CPU"
        )


def _multi_process_without_accelerator() -> bool:
    """`accelerate launch --multi_gpu --num_processes N` on a machine with no GPU: run N CPU processes over gloo
    (Accelerate would otherwise start N independent single-process runs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return world_size > 1 and not torch.accelerator.is_available()


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}  # report_to -> package


def _trackers(training: TrainingArguments) -> list[str] | str | None:
    targets = training.report_targets()
    if not targets:
        return None
    if "all" in targets:
        return "all"  # every tracker that is installed, as Accelerate means it
    check_trackers_installed(targets)
    return targets


def check_trackers_installed(targets: list[str]) -> None:
    """A ConfigError naming the pip command when a tracker of ``report_to`` is not installed: Accelerate would
    leave it out silently (a debug log line) and the run would train with no tracker."""
    from accelerate.utils import imports

    for tracker in targets:
        package = TRACKER_PACKAGES.get(tracker)
        if package and not getattr(imports, f"is_{package}_available")():
            raise ConfigError(
                f"report_to {tracker!r} needs the {package} package, which is not installed: "
                f'pip install "accel-recipes[{tracker}]" (or pip install {package}), or remove {tracker} from report_to'
            )
