"""What the GPU check runs: each check is one or two ``accelerate launch recipes/train.py`` runs of a shipped recipe
over a fixed number of updates, on the check's own data, with the recipe fields that make the difference.

``--smoke`` keeps one check of every kind (and the code that runs it), swaps the models for timm's test models and
a tiny ViT and trains a few updates, so it finishes on a CPU in minutes.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.arms import TRAINING_SWITCHES

RECIPES = [f"{dataset}/{model}" for dataset in ("cifar10", "cifar100") for model in ("resnet50", "efficientnet", "vit")]
PRECISIONS = {"fp32": {"mixed_precision": "no", "tf32": False}, "fp16": {"mixed_precision": "fp16"},
              "bf16": {"mixed_precision": "bf16"}}  # fmt: skip
ONE_PROCESS = "--num_processes 1 --num_machines 1 --dynamo_backend no"
# the ablation's arms the check measures (the first also runs in --smoke, on timm's test ResNet, which has no
# anti-aliased variant); a new one is one name here
TIME_TO_ACCURACY_METHODS = ("ema", "blurpool")
# the resolution methods at the CIFAR ResNet-50 recipe's 32 px: a progressive schedule (equal phases at 16, 24 and
# 32 px, each batch resized on the device) and FixRes (trained at 24 px, evaluated and exported at 32; crop_flip
# named, since auto would switch to a random-resized crop once the input is not the images' own size)
RESOLUTION_METHODS: dict[str, dict[str, Any]] = {
    "progressive 16-24-32 px": {"train_img_sizes": [16, 24, 32], "train_size_schedule": "progressive"},
    "FixRes: train 24 px, evaluate 32 px": {"image_size": 24, "eval_image_size": 32, "augmentation": "crop_flip"},
}


@dataclass
class Data:
    """Where the check's own data is: the generated CIFAR folders, Fashion-MNIST (None when not installed) and the
    ViT config folder standing in for the Hub checkpoint."""

    cifar10: Path
    cifar100: Path
    fashion_mnist: Path | None
    vit: Path


@dataclass
class Check:
    """One row of the table: ``runs`` launches (a resume is a second one into the same output_dir)."""

    group: str
    recipe: str
    setting: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # recipe fields of each launch
    launch_args: str = ONE_PROCESS
    skip_reason: str | None = None

    @property
    def config(self) -> str:
        return f"recipes/{self.recipe}.yaml"


def model_fields(recipe: str, data: Data, smoke: bool) -> dict[str, Any]:
    """The recipe's model from random weights, offline (its dataset replaced by the generated one)."""
    dataset, model = recipe.split("/")
    fields: dict[str, Any] = {"pretrained": False}
    if dataset == "fashion_mnist":
        fields["dataset_name"] = str(data.fashion_mnist)
    else:
        fields["dataset_name"] = str(data.cifar10 if dataset == "cifar10" else data.cifar100)
    if model == "vit":
        fields["model_name_or_path"] = str(data.vit)  # ViT-B/16 config folder: the Hub checkpoint's architecture
    elif model == "efficientnet":
        fields["model_name_or_path"] = "test_efficientnet" if smoke else "efficientnet_b0"
    elif smoke:
        fields["model_name_or_path"] = "test_resnet"
    return fields


def common_fields(smoke: bool, updates: int) -> dict[str, Any]:
    """A fixed number of updates, no evaluation or checkpoint inside them, a bounded final evaluation."""
    fields: dict[str, Any] = {
        "max_steps": updates,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": max(1, updates // 4),
        "throughput_warmup_steps": 1 if smoke else 5,
        "max_eval_samples": 64 if smoke else 1024,
        "disable_tqdm": True,
        "load_best_model_at_end": False,
    }
    if smoke:
        fields.update(per_device_train_batch_size=8, per_device_eval_batch_size=16, gradient_accumulation_steps=1,
                      dataloader_num_workers=0, max_train_samples=256)  # fmt: skip
    return fields


def plan_checks(data: Data, smoke: bool, updates: int) -> list[Check]:
    """Every check in the order it runs: the one-time checks (sharded runs, accuracy) first, then throughput."""
    base = common_fields(smoke, updates)

    def run(recipe: str, **fields: Any) -> dict[str, Any]:
        return {**model_fields(recipe, data, smoke), **base, **fields}

    checks: list[Check] = []
    sharded = {"FSDP": "fsdp", "DeepSpeed ZeRO-2": "deepspeed"}
    for name, config in sharded.items():
        recipe = "cifar10/vit" if config == "fsdp" else "cifar10/resnet50"
        saving = {"save_strategy": "steps", "save_steps": updates, "mixed_precision": "bf16"}
        check = Check(
            "sharded, one process", recipe, f"{name}: train {updates}, checkpoint, resume to {2 * updates}, export",
            runs=[run(recipe, **saving), run(recipe, **saving, max_steps=2 * updates, resume_from_checkpoint="latest")],
            launch_args=f"--config_file accelerate_configs/{config}.yaml {ONE_PROCESS}",
        )  # fmt: skip
        if config == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
            check.skip_reason = "deepspeed is not installed (pip install deepspeed)"
        checks.append(check)

    fashion = Check("accuracy", "fashion_mnist/resnet18", "the recipe as shipped, bf16" if not smoke else "smoke")
    if data.fashion_mnist is None:
        fashion.skip_reason = "no Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)"
    else:
        fields = model_fields(fashion.recipe, data, smoke)
        fields.update({"mixed_precision": "bf16", "disable_tqdm": True, "save_strategy": "no"})
        if smoke:
            fields.update(base, max_steps=updates, mixed_precision="no")
        fashion.runs = [fields]
    checks.append(fashion)

    precisions = ["fp32", "bf16"] if smoke else ["bf16", "fp16", "fp32"]
    recipes = ["cifar10/resnet50", "cifar10/efficientnet", "cifar10/vit"] if smoke else RECIPES
    for precision in precisions[:1]:
        for recipe in recipes:
            checks.append(Check("recipe throughput", recipe, precision, [run(recipe, **PRECISIONS[precision])]))

    resnet = "cifar10/resnet50"
    fast = "no" if smoke else "bf16"  # the data paths compared at the recipe's speed, not fp32's
    paths = {
        "stream, pinned memory": {"data_pipeline": "stream", "dataloader_pin_memory": True},
        "stream, pageable memory": {"data_pipeline": "stream", "dataloader_pin_memory": False},
        "resident": {"data_pipeline": "resident"},
        "compute-only bound (synthetic)": {"data_pipeline": "synthetic"},
    }
    for setting, fields in paths.items():
        checks.append(Check("data path", resnet, f"{fast}, {setting}", [run(resnet, mixed_precision=fast, **fields)]))
    layouts = {"channels_last": {"channels_last": True}}
    if not smoke:  # compiling takes minutes on a CPU; on a GPU it is one of the measurements
        layouts["torch.compile"] = {"torch_compile": True}
    for setting, fields in layouts.items():
        checks.append(Check("memory format, compile", resnet, f"{fast}, resident, {setting}",
                            [run(resnet, mixed_precision=fast, data_pipeline="resident", **fields)]))  # fmt: skip

    # the methods that move time to accuracy, at the data path and precision above: what each costs per image
    for method in TIME_TO_ACCURACY_METHODS:
        fields = {"mixed_precision": fast, "data_pipeline": "resident", **TRAINING_SWITCHES[method]}
        checks.append(Check("time-to-accuracy methods", resnet, f"{fast}, resident, {method}", [run(resnet, **fields)]))
    for method, sizes in RESOLUTION_METHODS.items():
        fields = {"mixed_precision": fast, "data_pipeline": "resident", **sizes}
        checks.append(Check("time-to-accuracy methods", resnet, f"{fast}, resident, {method}", [run(resnet, **fields)]))

    for precision in precisions[1:]:
        for recipe in recipes[:1] if smoke else recipes:
            checks.append(Check("recipe throughput", recipe, precision, [run(recipe, **PRECISIONS[precision])]))
    if smoke:  # one check of each kind runs every code path; the skipped ones cost nothing and stay listed
        groups: set[str] = set()
        checks = [
            check for check in checks if check.skip_reason or not (check.group in groups or groups.add(check.group))
        ]
    return checks
