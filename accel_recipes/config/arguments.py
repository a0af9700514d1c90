"""The four groups of recipe arguments (model, data, training, Hub) and the flat index of their fields.

Field names follow transformers' ``TrainingArguments`` and the Hugging Face example scripts wherever the
meaning is the same, so a user who knows those knows these; timm's meanings (in snake_case) for what only timm has.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class ModelArguments:
    """Which backbone, how it is shaped for the data, and where its files come from."""

    model_name_or_path: str = field(
        default="resnet50",
        metadata=_help(
            "timm architecture or Hub id (resnet50, timm/vit_base_patch16_224.augreg_in21k), transformers "
            "checkpoint (google/vit-base-patch16-224-in21k), or a local folder holding either's config.json"
        ),
    )
    model_library: Literal["auto", "timm", "transformers"] = field(
        default="auto", metadata=_help("which library builds the backbone; auto decides from the name")
    )
    pretrained: bool = field(default=False, metadata=_help("start from the checkpoint's pretrained weights"))
    small_image_stem: Literal["auto", "true", "false"] = field(
        default="auto",
        metadata=_help(
            "ResNet only: 3x3 stride-1 first conv and no max-pool, for small images trained from scratch; "
            "auto turns it on when training from scratch at 64 px or less"
        ),
    )
    patch_size: int | None = field(
        default=None,
        metadata=_help("ViT only, from scratch: patch size (default 4 at 32 px or less, else the model's)"),
    )
    image_size: int | None = field(
        default=None,
        metadata=_help(
            "input size fed to the backbone; default: the dataset's native size from scratch, "
            "the backbone's pretrained size when pretrained"
        ),
    )
    drop_path_rate: float = field(default=0.0, metadata=_help("stochastic depth rate, where the backbone has it"))
    aa_layer: Literal["blur", "avg", "blurpc"] | None = field(
        default=None,
        metadata=_help(
            "timm ResNets from scratch: anti-aliased downsampling (blur: BlurPool, avg: average pooling), built as "
            "timm's own resnetblur* / resnetaa* architecture so the exported folder rebuilds it; None: off"
        ),
    )
    cache_dir: str | None = field(default=None, metadata=_help("where Hub downloads are cached"))
    trust_remote_code: bool = field(default=False, metadata=_help("allow code from the Hub to run; off by default"))

    @property
    def effective_small_image_stem(self) -> bool | None:
        """True/False when forced; None means decide from the image size and ``pretrained``."""
        return {"auto": None, "true": True, "false": False}[self.small_image_stem]


@dataclass
class DataArguments:
    """Which dataset, which splits and columns, how it is augmented and how it reaches the device."""

    dataset_name: str = field(
        default="uoft-cs/cifar10",
        metadata=_help(
            "Hub dataset id, or a local path: image folder, save_to_disk folder, parquet file(s), CIFAR python "
            "batches (cifar-10-batches-py, cifar-100-python) or an IDX folder (MNIST family)"
        ),
    )
    dataset_config_name: str | None = field(default=None, metadata=_help("the Hub dataset's configuration"))
    image_column_name: str | None = field(default=None, metadata=_help("image column; detected when unset"))
    label_column_name: str | None = field(default=None, metadata=_help("label column; detected when unset"))
    train_split_name: str = field(default="train", metadata=_help("split to train on"))
    validation_split_name: str | None = field(
        default=None, metadata=_help("validation split; detected (validation/valid/val), else held out of train")
    )
    test_split_name: str | None = field(
        default=None, metadata=_help("test split, used only for the final evaluation; detected (test) when unset")
    )
    streaming: bool = field(
        default=False,
        metadata=_help(
            "read the dataset as it streams (datasets' IterableDataset: Hub ids, parquet / arrow / webdataset .tar "
            "shards, image folders), never whole; resumes and evaluates exactly"
        ),
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata=_help("streaming: examples shuffled together in each window of a shard (after shard order)"),
    )
    label_names: list[str] | None = field(
        default=None,
        metadata=_help(
            "class names in label order (a YAML list, or comma-separated); for a stream whose labels are plain "
            "indices or strings (default: the ClassLabel names, or an image folder's metadata file)"
        ),
    )
    validation_split_percentage: float = field(
        default=10.0, metadata=_help("percent of train held out (seeded) when the dataset has no validation split")
    )
    max_train_samples: int | None = field(default=None, metadata=_help("truncate the training set (debugging)"))
    max_eval_samples: int | None = field(default=None, metadata=_help("truncate validation and test sets"))
    augmentation: Literal["auto", "crop_flip", "resized_crop", "none", "trivial_augment", "rand_augment"] = field(
        default="auto",
        metadata=_help(
            "crop_flip: random crop with reflect padding + flip at native size; resized_crop: random-resized "
            "crop + flip at the backbone's size; auto: crop_flip from scratch at native size, else resized_crop; "
            "trivial_augment / rand_augment: auto's crop, then torchvision's TrivialAugmentWide / RandAugment"
        ),
    )
    rand_augment_magnitude: int = field(
        default=9, metadata=_help("rand_augment only: magnitude of every op, 0..30 (timm's rand-m9)")
    )
    rand_augment_num_ops: int = field(default=2, metadata=_help("rand_augment only: ops applied to each image"))
    crop_padding: int = field(default=4, metadata=_help("reflect padding of the crop_flip augmentation"))
    train_img_sizes: list[int] | None = field(
        default=None,
        metadata=_help(
            "resolution schedule (timm's --train-img-sizes): square sizes, smallest first, ending at the model's "
            "input size; whole batches are resized on the device to the size of their update. Unset: every update "
            "at the input size"
        ),
    )
    train_size_schedule: Literal["progressive", "constant"] = field(
        default="progressive",
        metadata=_help(
            "with train_img_sizes: progressive trains the updates in equal phases, one per size, smallest first "
            "(the run ends at the input size); constant draws each update's size uniformly from the list, seeded "
            "by (seed, update)"
        ),
    )
    eval_image_size: int | None = field(
        default=None,
        metadata=_help(
            "size of validation, test, predict and the exported folder's preprocessing (FixRes: train smaller, "
            "evaluate larger); unset: the training input size"
        ),
    )
    data_pipeline: Literal["stream", "resident", "auto", "synthetic"] = field(
        default="stream",
        metadata=_help(
            "stream: per-sample transforms through a DataLoader; resident: decode once into a uint8 tensor kept "
            "on the device and augment whole batches there; auto: resident when it fits resident_memory_budget_gb; "
            "synthetic: one training batch held on the device as every batch (benchmarks: the compute-only bound)"
        ),
    )
    resident_memory_budget_gb: float = field(
        default=4.0, metadata=_help("largest decoded train split (GiB) that data_pipeline auto keeps resident")
    )
    skip_corrupt_images: bool = field(
        default=False, metadata=_help("skip images that cannot be decoded (counted in the log) instead of failing")
    )


@dataclass
class TrainingArguments:
    """The optimisation, its speed switches, evaluation, checkpoints and logging (transformers' meanings)."""

    output_dir: str = field(default="runs/cifar10-resnet50", metadata=_help("where everything of the run goes"))
    overwrite_output_dir: bool = field(
        default=False,
        metadata=_help(
            "replace the run in a non-empty output_dir: a fresh start removes its metrics.jsonl and checkpoints "
            "before the first save"
        ),
    )
    seed: int = field(default=42, metadata=_help("seed for weights, data order and augmentation"))
    num_train_epochs: float = field(default=30.0, metadata=_help("epochs to train (ignored when max_steps > 0)"))
    max_steps: int = field(default=-1, metadata=_help("optimizer updates to train; -1: from num_train_epochs"))
    per_device_train_batch_size: int = field(default=128, metadata=_help("micro-batch per process"))
    per_device_eval_batch_size: int = field(default=256, metadata=_help("evaluation batch per process"))
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("micro-batches per optimizer update (effective batch = micro x steps x processes)")
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata=_help(
            "no, fp16 (autocast with dynamic loss scaling) or bf16 (autocast, no scaling needed); "
            "unset: what `accelerate launch` was configured with"
        ),
    )
    tf32: bool = field(default=True, metadata=_help("allow TF32 matmuls/convolutions on Ampere+ GPUs in fp32"))
    optim: Literal["sgd", "adamw"] = field(default="sgd", metadata=_help("SGD with Nesterov momentum, or AdamW"))
    learning_rate: float = field(default=0.1, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=5e-4, metadata=_help("decoupled for AdamW, L2 for SGD; not on norms/biases"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum (Nesterov)"))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon"))
    lr_scheduler_type: Literal["cosine", "one_cycle", "linear", "constant"] = field(
        default="cosine", metadata=_help("schedule over optimizer updates, after warmup")
    )
    warmup_ratio: float = field(default=0.0, metadata=_help("fraction of updates spent warming up"))
    warmup_steps: int = field(default=0, metadata=_help("updates spent warming up (wins over warmup_ratio)"))
    label_smoothing_factor: float = field(default=0.0, metadata=_help("label smoothing of the cross-entropy"))
    mixup_alpha: float = field(default=0.0, metadata=_help("mixup Beta(alpha, alpha) on each micro-batch; 0: off"))
    cutmix_alpha: float = field(default=0.0, metadata=_help("cutmix Beta(alpha, alpha) on each micro-batch; 0: off"))
    mixup_prob: float = field(default=1.0, metadata=_help("probability that a micro-batch is mixed (mixup or cutmix)"))
    mixup_switch_prob: float = field(
        default=0.5, metadata=_help("with both alphas set: probability of cutmix instead of mixup")
    )
    random_erasing: float = field(
        default=0.0, metadata=_help("probability of erasing a box of each training image with noise (timm's reprob)")
    )
    model_ema: bool = field(default=False, metadata=_help("keep an exponential moving average of the weights"))
    model_ema_decay: float = field(default=0.9998, metadata=_help("EMA decay per optimizer update (timm's default)"))
    model_ema_warmup: bool = field(
        default=False, metadata=_help("EMA decay warm-up: 1 - (1 + update) ** -2/3, capped at model_ema_decay")
    )
    max_grad_norm: float = field(default=0.0, metadata=_help("clip the gradient norm to this; 0 turns it off"))
    dataloader_pin_memory: bool = field(default=True, metadata=_help("page-locked host batches, non-blocking copies"))
    dataloader_num_workers: int = field(default=0, metadata=_help("loader worker processes"))
    dataloader_persistent_workers: bool = field(default=True, metadata=_help("keep workers alive across epochs"))
    dataloader_prefetch_factor: int | None = field(default=None, metadata=_help("batches each worker prefetches"))
    eval_strategy: Literal["epoch", "steps", "no"] = field(default="epoch", metadata=_help("when to evaluate"))
    eval_steps: int | None = field(default=None, metadata=_help("evaluate every this many updates (steps)"))
    save_strategy: Literal["epoch", "steps", "no"] = field(default="epoch", metadata=_help("when to checkpoint"))
    save_steps: int | None = field(default=None, metadata=_help("checkpoint every this many updates (steps)"))
    save_total_limit: int | None = field(
        default=2, metadata=_help("newest checkpoints kept (the best weights stay in best_model/); None keeps all")
    )
    save_on_each_node: bool = field(
        default=False,
        metadata=_help(
            "several machines whose output_dir is each one's own disk, not one shared folder: every node keeps the "
            "checkpoints it resumes from in its own output_dir; results are still written once, by the main process"
        ),
    )
    metric_for_best_model: Literal["accuracy", "f1", "loss", "ema_accuracy", "ema_f1", "ema_loss"] = field(
        default="accuracy",
        metadata=_help(
            "validation metric that picks the best checkpoint; ema_*: of the EMA weights, which are then exported"
        ),
    )
    target_metric_value: float | None = field(
        default=None,
        metadata=_help(
            "stop training at the first evaluation whose metric_for_best_model reaches this value (at or below it "
            "for *loss, else at or above; accuracy and f1 are fractions); the run then finishes as usual"
        ),
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata=_help(
            "stop training after this many evaluations in a row without an improvement of metric_for_best_model "
            "larger than early_stopping_threshold (transformers' EarlyStoppingCallback); None: off"
        ),
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata=_help("how much metric_for_best_model must improve to reset early_stopping_patience")
    )
    eval_flip_tta: bool = field(
        default=False, metadata=_help("also evaluate on the logits of each image and its mirror averaged (eval_tta_*)")
    )
    load_best_model_at_end: bool = field(
        default=True, metadata=_help("evaluate on test and export the best checkpoint, not the last")
    )
    logging_steps: int = field(default=50, metadata=_help("log the training loss every this many updates"))
    report_to: str = field(default="none", metadata=_help("tensorboard, trackio, wandb, all or none (comma-separated)"))
    run_name: str | None = field(default=None, metadata=_help("name shown by trackers; defaults to output_dir"))
    disable_tqdm: bool = field(default=False, metadata=_help("hide the progress bar"))
    throughput_warmup_steps: int = field(
        default=5, metadata=_help("updates left out of the steady-state throughput (compilation, cache warm-up)")
    )
    channels_last: bool = field(default=False, metadata=_help("channels-last memory format for convolutional models"))
    torch_compile: bool = field(default=False, metadata=_help("compile the model with torch.compile"))
    optimizer_implementation: Literal["auto", "foreach", "fused", "for_loop"] = field(
        default="auto", metadata=_help("torch optimizer kernel: auto lets torch choose")
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata=_help("latest (newest complete checkpoint in output_dir), or a checkpoint folder")
    )
    auto_find_batch_size: bool = field(
        default=False,
        metadata=_help(
            "on out-of-memory, halve the micro-batch and double gradient_accumulation_steps (same effective batch)"
        ),
    )
    max_nonfinite_steps: int = field(
        default=5, metadata=_help("stop after this many consecutive updates with a non-finite loss")
    )

    def report_targets(self) -> list[str]:
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return [] if names in ([], ["none"]) else names


@dataclass
class HubArguments:
    """Whether and where the finished run is pushed to the Hugging Face Hub."""

    push_to_hub: bool = field(default=False, metadata=_help("push the model folder, card and metrics to the Hub"))
    hub_model_id: str | None = field(
        default=None, metadata=_help("Hub repository, e.g. me/cifar10-resnet50 (default: output_dir's name)")
    )
    hub_private_repo: bool = field(default=False, metadata=_help("create the Hub repository as private"))
    hub_strategy: Literal["end", "every_save"] = field(
        default="end", metadata=_help("end: push once when training ends; every_save: each checkpoint too")
    )


GROUPS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "training": TrainingArguments,
    "hub": HubArguments,
}


@dataclass
class RecipeArguments:
    """The four groups of one run. ``args.model`` / ``args.data`` / ``args.training`` / ``args.hub``."""

    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    training: TrainingArguments = field(default_factory=TrainingArguments)
    hub: HubArguments = field(default_factory=HubArguments)

    def to_dict(self) -> dict[str, Any]:
        """Every field, flat, in recipe order (model, data, training, Hub), as a recipe YAML holds them."""
        flat: dict[str, Any] = {}
        for group in GROUPS:
            flat.update(dataclasses.asdict(getattr(self, group)))
        return flat

    def get(self, name: str) -> Any:
        """A field by its flat name (``args.get("learning_rate")``), for code that handles fields generically."""
        return getattr(getattr(self, GROUP_OF[name]), name)

    def set(self, name: str, value: Any) -> None:
        setattr(getattr(self, GROUP_OF[name]), name, value)


FIELDS: dict[str, dataclasses.Field] = {}
GROUP_OF: dict[str, str] = {}  # flat field name -> the group holding it
_TYPE_HINTS: dict[str, Any] = {}
for _group, _cls in GROUPS.items():
    _hints = typing.get_type_hints(_cls)
    for _field in dataclasses.fields(_cls):
        FIELDS[_field.name] = _field
        GROUP_OF[_field.name] = _group
        _TYPE_HINTS[_field.name] = _hints[_field.name]
_SECTION_TITLES = {
    "model": "# Model arguments",
    "data": "# Data arguments",
    "training": "# Training arguments",
    "hub": "# Hub arguments",
}
