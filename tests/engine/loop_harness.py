"""An in-process training run for the tests of the loop: the real ``Trainer`` (and ``engine.fit``) on a tiny MLP and
in-memory uint8 images served by the resident loader, each run on a fresh Accelerator made by
``create_accelerator``. A run of a dozen updates takes a fraction of a second on a CPU.

``WatchedLoader`` is the resident training loader with one addition: ``on_batch(epoch, index, batch)`` runs just
before each batch is handed to the loop, that is after the loop has finished everything that follows the previous
micro-batch (its update, log, evaluation, checkpoint). Tests use it to look at the run between micro-batches, to
send a stop signal or to crash the run at a chosen micro-batch, without copying any of the loop.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from accel_recipes.config import TrainingArguments, make_args
from accel_recipes.data import DataBundle, Loaders
from accel_recipes.data.resident import ResidentLoader
from accel_recipes.engine import RunResult, Trainer, create_accelerator, fit
from accel_recipes.models import ModelSpec
from accel_recipes.models.preprocess import Normalizer
from accel_recipes.reporting import read_metrics

SIDE = 4  # image side in pixels
CLASSES = 3
BATCH = 4  # per-device training micro-batch
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TIMING_KEYS = ("train_runtime", "images_per_second")  # wall-clock values: differ between two runs of the same maths

Batch = tuple[torch.Tensor, torch.Tensor]
E = TypeVar("E", bound=BaseException)
OnBatch = Callable[[int, int, Batch], None]


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 3, SIDE, SIDE)
    labels: torch.Tensor  # int64 (N,)
    dataset: datasets.Dataset  # the labels alone: the Trainer reads only a split's size from it


@dataclass(frozen=True)
class TinyData:
    """A training and a validation split of random images with random labels: nothing to learn, so the validation
    loss rises as the training set is memorised (the best model is then not the last one)."""

    train: Split
    validation: Split


def make_split(num_samples: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_samples, 3, SIDE, SIDE), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, CLASSES, (num_samples,), generator=generator)
    return Split(images, labels, datasets.Dataset.from_dict({"label": labels.tolist()}))


@functools.cache
def make_data(train_micro_batches: int, validation_samples: int = 24) -> TinyData:
    """``train_micro_batches`` full micro-batches of training samples (so an epoch has exactly that many); made once
    per process for each size (no test changes them)."""
    return TinyData(make_split(train_micro_batches * BATCH, seed=0), make_split(validation_samples, seed=1))


def tiny_model() -> torch.nn.Module:
    """The same small classifier every call; no batch norm, so the size of a batch does not change the maths."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * SIDE * SIDE, 8), torch.nn.Tanh(), torch.nn.Linear(8, CLASSES)
        )


def spec_of(model: torch.nn.Module) -> ModelSpec:
    return ModelSpec(
        model=model,
        library="timm",
        name="tiny-mlp",
        architecture="tiny-mlp",
        input_size=SIDE,
        mean=MEAN,
        std=STD,
        interpolation="bilinear",
        pretrained=False,
        small_image_stem=False,
        patch_size=None,
        num_parameters=sum(p.numel() for p in model.parameters()),
    )


def training_args(output_dir: Path, **fields: Any) -> TrainingArguments:
    """Validated training arguments of a tiny run into ``output_dir``: two epochs, a log every update, no evaluation
    or checkpoint unless ``fields`` ask for them, a linear schedule (so a learning rate names its update)."""
    defaults = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": 64,
        "num_train_epochs": 2,
        "optim": "sgd",
        "learning_rate": 0.5,
        "lr_scheduler_type": "linear",
        "mixed_precision": "no",
        "logging_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "save_total_limit": None,
        "load_best_model_at_end": False,
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    return make_args({**defaults, **fields}).training


class WatchedLoader(ResidentLoader):
    """The resident training loader, calling ``on_batch(epoch, index, batch)`` before it hands out each batch."""

    def __init__(self, *args: Any, on_batch: OnBatch | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_batch = on_batch

    def _epoch(self, epoch: int) -> Callable[[int], Batch]:
        make_batch = super()._epoch(epoch)

        def watched(index: int) -> Batch:
            batch = make_batch(index)
            if self.on_batch is not None:
                self.on_batch(epoch, index, batch)
            return batch

        return watched


def reset_accelerate_state() -> None:
    """Clear Accelerate's process-wide singletons, as Accelerate's own tests do: they would otherwise carry one
    run's precision, accumulation and device choice into the next Accelerator of the process."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def fresh_accelerator(training: TrainingArguments) -> Accelerator:
    """The run's Accelerator as training makes it (``create_accelerator``), on a clean Accelerate state."""
    reset_accelerate_state()
    return create_accelerator(training)


@contextmanager
def tiny_run_environment() -> Iterator[None]:
    """One torch thread while tiny runs train; afterwards a clean Accelerate state, and the global random
    generators as they were (resuming loads a checkpoint's RNG states into them, as it must in training).

    One thread because a second intra-op thread only adds a hand-off to every op of a model this small: on a busy
    2-core machine one 4 x 48 matmul took 1.8 ms instead of 0.08 ms, which made a run of a dozen updates take
    seconds."""
    threads = torch.get_num_threads()
    generators = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.random.set_rng_state(generators[2])
        reset_accelerate_state()


def train_loader(training: TrainingArguments, split: Split, on_batch: OnBatch | None = None) -> WatchedLoader:
    """Shuffled each epoch (seeded), full micro-batches only, as the resident pipeline's training loader."""
    return WatchedLoader(
        split.images,
        split.labels,
        training.per_device_train_batch_size,
        train=True,
        drop_last=True,
        device="cpu",
        seed=training.seed,
        augmentation="none",
        crop_padding=0,
        on_batch=on_batch,
    )


def make_trainer(
    training: TrainingArguments,
    data: TinyData,
    on_batch: OnBatch | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    make_train_loader: Callable[[Accelerator], Any] | None = None,
) -> Trainer:
    """The real Trainer of a tiny run of ``tiny_model()``; ``make_train_loader(accelerator)`` replaces the resident
    training loader (for batches of chosen sizes)."""
    return Trainer(*_pieces(training, data, on_batch, make_train_loader), on_checkpoint=on_checkpoint)


def run_fit(training: TrainingArguments, data: TinyData, on_batch: OnBatch | None = None) -> RunResult:
    """``engine.fit`` of a tiny run: resumes when ``training.resume_from_checkpoint`` says so, as training does."""
    return fit(*_pieces(training, data, on_batch, None))


def _pieces(
    training: TrainingArguments,
    data: TinyData,
    on_batch: OnBatch | None,
    make_train_loader: Callable[[Accelerator], Any] | None,
) -> tuple[TrainingArguments, ModelSpec, DataBundle, Loaders, Accelerator]:
    """What training hands the Trainer: arguments, model, data, loaders and a fresh Accelerator."""
    Path(training.output_dir).mkdir(parents=True, exist_ok=True)  # run.py makes it before the Trainer writes
    accelerator = fresh_accelerator(training)
    bundle = DataBundle(
        train=data.train.dataset,
        validation=data.validation.dataset,
        test=None,
        label_names=[f"class_{index}" for index in range(CLASSES)],
        mean=MEAN,
        std=STD,
        native_size=SIDE,
        source="in-memory tensors",
        name="tiny",
    )
    validation = ResidentLoader(
        data.validation.images,
        data.validation.labels,
        training.per_device_eval_batch_size,
        train=False,
        device="cpu",
        crop_padding=0,
    )
    train = make_train_loader(accelerator) if make_train_loader else train_loader(training, data.train, on_batch)
    loaders = Loaders(train, validation, None, pipeline="resident", augmentation="none")
    return training, spec_of(tiny_model()), bundle, loaders, accelerator


def raised_by(kind: type[E], run: Callable[[], Any]) -> E:
    """The ``kind`` exception that ``run()`` must raise, without its traceback. The traceback holds the stopped
    loop's frames and so its suspended training loader; kept by a test (``pytest.raises(...) as info`` makes a
    reference cycle through the test's frame), that loader would be collected only by a later full collection,
    after Accelerate's state was reset, and its end-of-epoch bookkeeping would then fail."""
    try:
        run()
    except kind as error:
        return error.with_traceback(None)
    raise AssertionError(f"{kind.__name__} was not raised")


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict (parameters and buffers), detached."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def live_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return weights(trainer.accelerator.unwrap_model(trainer.step.model))


def metrics_of(output_dir: str | Path, without_timing: bool = False) -> list[dict[str, Any]]:
    """The records of ``output_dir/metrics.jsonl`` in order; ``without_timing`` drops the wall-clock values."""
    records = read_metrics(Path(output_dir) / "metrics.jsonl")
    if without_timing:
        records = [{key: value for key, value in record.items() if key not in TIMING_KEYS} for record in records]
    return records


def kind_of(record: dict[str, Any]) -> str:
    """``log`` (a training log), ``eval`` (an evaluation during training) or ``final`` (the run's last record)."""
    if record.get("final"):
        return "final"
    return "eval" if "eval_loss" in record else "log"


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    """Bitwise equal state dicts."""
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


class SaveRecorder:
    """An ``on_checkpoint`` that records, for each checkpoint saved, its update and how many records
    ``metrics.jsonl`` held at that moment (so saves can be placed among the logs and evaluations)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.saves: list[tuple[int, int]] = []

    def __call__(self, checkpoint: Path) -> None:
        self.saves.append((int(checkpoint.name.removeprefix("checkpoint-")), len(metrics_of(self.output_dir))))

    def timeline(self) -> list[tuple[str, int]]:
        """Every record of ``metrics.jsonl`` and every save, as (kind, update), in the order they happened."""
        records = metrics_of(self.output_dir)
        events: list[tuple[str, int]] = []
        for position in range(len(records) + 1):
            events += [("save", update) for update, written in self.saves if written == position]
            if position < len(records):
                events.append((kind_of(records[position]), records[position]["step"]))
        return events


def mean_loss(model_weights: dict[str, torch.Tensor], split: Split) -> float:
    """Mean cross-entropy of ``tiny_model()`` holding ``model_weights`` over ``split``, normalised as the run does:
    what an evaluation of those weights must report as its loss."""
    model = tiny_model()
    model.load_state_dict(model_weights)
    with torch.no_grad():
        logits = model(Normalizer(MEAN, STD)(split.images))
        return torch.nn.functional.cross_entropy(logits, split.labels).item()
