"""The compute-only bound: how fast the arm's model trains when the input costs nothing.

The same model (``build_model`` with the arm's arguments), the same optimizer, micro-batch, accumulation steps,
precision (autocast dtype, fp16 loss scaling), memory format and TF32 setting, trained on random normalised
images and labels already on the device. Warm-up steps are left out and the device is synchronised before the
clock is read. An arm's throughput divided by this bound is the share of the device's speed its input pipeline
lets it keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from accel_recipes.config import RecipeArguments, load_recipe, make_args
from accel_recipes.models import RECIPE_KEY, build_model, logits_of
from accel_recipes.optim import create_optimizer

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
)
WINDOWS = 3  # timed windows; the bound is the fastest, the one least slowed by anything else on the machine
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def bound_key(args: RecipeArguments) -> tuple:
    """Arms whose compute is the same share one bound measurement."""
    return tuple((name, getattr(args, name)) for name in BOUND_FIELDS)


def default_device() -> torch.device:
    """The device a one-process run trains on: the accelerator when there is one, else the CPU."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return torch.device(accelerator.current_accelerator().type, 0)
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu" and hasattr(torch, "accelerator"):
        torch.accelerator.synchronize(device)


@contextlib.contextmanager
def _tf32(device: torch.device, enabled: bool) -> Iterator[None]:
    """TF32 and cuDNN autotuning as the engine sets them, restored afterwards."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def measure_bound(
    args: RecipeArguments,
    label_names: list[str],
    input_size: int,
    device: torch.device | None = None,
    warmup_steps: int = 2,
    min_seconds: float = 5.0,
    max_steps: int = 50,
) -> float:
    """Training images per second of one device on device-resident tensors: ``k`` forward+backward passes of the
    micro-batch and one optimizer step per update. After ``warmup_steps`` untimed updates (and one that sizes the
    windows), three windows of about ``min_seconds / 3`` each (at least one update, at most ``max_steps``) are
    timed, the device synchronised at both ends; the fastest window is the bound."""
    device = device or default_device()
    torch.manual_seed(args.seed)
    # native_size = the run's input size: the builder then gives the model the run had (stem, patch, input).
    spec = build_model(args, label_names, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_size)
    model = spec.model.to(device).train()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = create_optimizer(args, model)
    if args.torch_compile:
        model = torch.compile(model)
    micro, k = args.per_device_train_batch_size, args.gradient_accumulation_steps
    images = torch.randn(micro, 3, spec.input_size, spec.input_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, len(label_names), (micro,), device=device)
    dtype = AUTOCAST_DTYPES.get(args.mixed_precision or "no")
    scaler = torch.amp.GradScaler(device.type) if args.mixed_precision == "fp16" else None

    def update() -> None:
        for _ in range(k):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(logits_of(model(images)).float(), labels) / k
            (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with _tf32(device, args.tf32):
        for _ in range(max(warmup_steps, 1)):
            update()
        synchronize(device)
        started = time.perf_counter()
        update()
        synchronize(device)
        per_update = max(time.perf_counter() - started, 1e-6)
        steps = min(max_steps, max(1, math.ceil(min_seconds / WINDOWS / per_update)))
        fastest = 0.0
        for _ in range(WINDOWS):
            started = time.perf_counter()
            for _ in range(steps):
                update()
            synchronize(device)
            fastest = max(fastest, steps * k * micro / (time.perf_counter() - started))
    return fastest


def run_arguments(run_dir: Path) -> RecipeArguments:
    """The arguments a finished run trained with (its config.yaml: precision resolved, batch as trained)."""
    return make_args(load_recipe(Path(run_dir) / "config.yaml"))


def measure_run_bound(run_dir: Path, seconds: float) -> float:
    """The bound of a finished run: its arguments, its labels and input size (from the exported model folder)."""
    block = json.loads((Path(run_dir) / "model" / "config.json").read_text())[RECIPE_KEY]
    args = run_arguments(run_dir)
    return measure_bound(args, block["label_names"], int(block["preprocessing"]["input_size"]), min_seconds=seconds)


def bound_in_subprocess(run_dir: Path, seconds: float, env: dict[str, str]) -> tuple[float | None, str | None]:
    """``measure_run_bound`` in a fresh process with the runs' environment (threads, OpenMP policy), so the
    ablation's own process never holds a GPU. Returns (images/s, None) or (None, why not)."""
    command = [sys.executable, "-m", "accel_recipes.ablation.bound", str(run_dir), "--seconds", str(seconds)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
        return float(json.loads(lines[-1])["images_per_second"]), None
    errors = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["no output"]
    return None, errors[-1][:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The compute-only bound of a finished run's configuration.")
    parser.add_argument("run_dir", type=Path, help="a run's output_dir (config.yaml and model/config.json)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds (at least 3 updates)")
    options = parser.parse_args(argv)
    print(json.dumps({"images_per_second": measure_run_bound(options.run_dir, options.seconds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
