"""The training loop on Accelerate: accumulation, mixed precision, clipping, schedule, evaluation, checkpoints.

The step is Accelerate's canonical one (``accelerator.accumulate`` + ``accelerator.backward``), with one
correction: Accelerate divides every micro-batch loss by ``gradient_accumulation_steps``, which mis-scales a
window cut short at the end of an epoch. Here each micro-batch loss is weighted by ``1 / window length``, so a
window of k equal micro-batches gives exactly the gradient of one batch k times larger, partial windows
included. Training batches are therefore all full (the loader drops the last incomplete micro-batch of each
epoch, as timm's does), which keeps every micro-batch the same size on every process.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from accel_recipes.accumulation import TrainingPlan, accumulation_weight
from accel_recipes.checkpoints import list_checkpoints, load_weights, save_checkpoint, save_weights
from accel_recipes.config import RecipeArguments
from accel_recipes.data import (
    DataBundle,
    DeviceLoader,
    ResidentLoader,
    SyntheticLoader,
    choose_pipeline,
    decode_split,
    first_batch,
    make_dataloader,
    make_transform,
    resolve_augmentation,
)
from accel_recipes.metrics import MetricAccumulator
from accel_recipes.models import ModelSpec, logits_of
from accel_recipes.optim import create_optimizer, create_scheduler
from accel_recipes.reporting import MetricsLog, truncate_metrics
from accel_recipes.state import DeviceClock, RunState, StopRequest, peak_memory_mb

logger = logging.getLogger(__name__)

STOP_POLL_UPDATES = 10  # several processes agree on a stop signal this often (one all-reduce each time)


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


class Preempted(Exception):
    """Raised after a stop signal once a checkpoint is safely saved; the run resumes from it."""

    def __init__(self, signal_name: str, checkpoint: Path) -> None:
        super().__init__(f"received {signal_name}: saved {checkpoint}; resume with --resume_from_checkpoint latest")
        self.checkpoint = checkpoint


@dataclass
class RunResult:
    metrics: dict[str, Any]
    output_dir: Path
    best_model_path: Path | None
    model: torch.nn.Module = field(repr=False)


def create_accelerator(args: RecipeArguments) -> Accelerator:
    """One Accelerator per run. On a CPU, fp16 gets torch's CPU autocast and GradScaler, which Accelerate
    leaves off, so the fp16 path (loss scaling, skipped steps) is the same code on every device."""
    accelerator = Accelerator(
        cpu=_multi_process_without_accelerator(),
        gradient_accumulation_steps=args.training.gradient_accumulation_steps,
        mixed_precision=args.training.mixed_precision,
        log_with=_trackers(args),
        project_dir=args.training.output_dir,
        dataloader_config=DataLoaderConfiguration(non_blocking=args.training.dataloader_pin_memory),
        step_scheduler_with_optimizer=False,
    )
    args.training.mixed_precision = accelerator.mixed_precision  # resolved, so config.yaml records what ran
    if args.training.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        if accelerator.scaler is None:
            accelerator.native_amp = True
            accelerator.scaler = torch.amp.GradScaler("cpu")
        if accelerator.is_main_process:
            logger.warning(
                "mixed_precision fp16 on a CPU: torch's CPU fp16 autocast with loss scaling is correct, but on CPUs "
                "without fast fp16 arithmetic it trains many times slower than bf16 or fp32; pass "
                "--mixed_precision bf16 (or no) to train on a CPU"
            )
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = args.training.tf32
        torch.backends.cudnn.allow_tf32 = args.training.tf32
        torch.backends.cudnn.benchmark = True
    return accelerator


def _multi_process_without_accelerator() -> bool:
    """`accelerate launch --multi_gpu --num_processes N` on a machine with no GPU: run N CPU processes over gloo
    (Accelerate would otherwise start N independent single-process runs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return world_size > 1 and not torch.accelerator.is_available()


def _trackers(args: RecipeArguments) -> list[str] | str | None:
    targets = args.report_targets()
    if not targets:
        return None
    return "all" if "all" in targets else targets


class Normalizer(torch.nn.Module):
    """uint8 NCHW batches to normalised floats, on the device: ``(x / 255 - mean) / std``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)), persistent=False)
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift


class Trainer:
    """Runs one recipe; built by ``fit``. Holds the objects prepared by Accelerate and the run's counters."""

    def __init__(
        self,
        args: RecipeArguments,
        spec: ModelSpec,
        data: DataBundle,
        accelerator: Accelerator,
        on_checkpoint: Callable[[Path], None] | None = None,
    ):
        self.args = args
        self.spec = spec
        self.data = data
        self.accelerator = accelerator
        self.on_checkpoint = on_checkpoint
        self.output_dir = Path(args.training.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.best_model_path = self.output_dir / "best_model" / "model.safetensors"
        self.metrics_log = MetricsLog(self.output_dir / "metrics.jsonl", accelerator.is_main_process)
        self.num_classes = len(data.label_names)
        self.state = RunState(num_classes=self.num_classes)
        self.clock = DeviceClock(accelerator.device)
        self.stop = StopRequest()
        self._build()

    # ---- set-up -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        args, spec, data = self.args, self.spec, self.data
        self.augmentation = resolve_augmentation(args, spec.pretrained, spec.input_size, data.native_size)
        model = spec.model
        if args.training.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = create_optimizer(args, model)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.pipeline = choose_pipeline(args, data.train, data.native_size)
        loaders = self._stream_loaders() if self.pipeline == "stream" else self._resident_loaders()
        self.train_loader, self.validation_loader, self.test_loader = loaders
        # The compiled module only runs the forward pass; state dicts, checkpoints and the export go through
        # self.model, so no key ever carries torch.compile's `_orig_mod.` prefix.
        self.forward_module = torch.compile(self.model) if args.training.torch_compile else self.model
        if len(self.train_loader) == 0:
            raise TrainingError(
                f"the training set has {len(data.train)} samples, fewer than one micro-batch of "
                f"{args.training.per_device_train_batch_size} x {self.accelerator.num_processes} process(es); "
                "lower per_device_train_batch_size"
            )
        self.plan = TrainingPlan.build(args, len(self.train_loader), self.accelerator.num_processes)
        # Not prepared by Accelerate on purpose: its wrapper steps the schedule once per process per update.
        self.scheduler = create_scheduler(args, self.optimizer.optimizer, self.plan.total_updates)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.normalizer = Normalizer(spec.mean, spec.std).to(self.accelerator.device)
        self.nonfinite_streak = torch.zeros((), dtype=torch.long, device=self.accelerator.device)

    def _stream_loaders(self) -> tuple:
        """Per-sample transforms through DataLoaders, prepared by Accelerate (sharding, device placement)."""
        data = self.data
        test = self.stream_loader(data.test, train=False) if data.test is not None else None
        return self.stream_loader(data.train, train=True), self.stream_loader(data.validation, train=False), test

    def stream_loader(self, split: datasets.Dataset, train: bool, args: RecipeArguments | None = None) -> DataLoader:
        """``split`` through a DataLoader of per-sample transforms (augmented and shuffled when ``train``),
        prepared by Accelerate; ``args`` (default: the run's) gives the dataloader_* settings."""
        args, spec = args or self.args, self.spec
        transform = make_transform(
            train, self.augmentation, spec.input_size, self.data.native_size, args.data.crop_padding, spec.interpolation
        )
        batch_size = args.training.per_device_train_batch_size if train else args.training.per_device_eval_batch_size
        loader = make_dataloader(split, transform, batch_size, shuffle=train, args=args, drop_last=train)
        return self.accelerator.prepare(loader)

    def _resident_loaders(self) -> tuple:
        """Each split decoded once (cached on disk), held on the device, augmented there in whole batches; with
        ``data_pipeline: synthetic`` only the evaluation splits, training on one batch held on the device."""
        data = self.data
        train = self.synthetic_loader() if self.pipeline == "synthetic" else self.resident_loader(data.train, True)
        validation = self.resident_loader(data.validation, train=False)
        test = self.resident_loader(data.test, train=False) if data.test is not None else None
        return train, validation, test

    def resident_loader(self, split: datasets.Dataset, train: bool) -> ResidentLoader:
        """``split`` decoded once (one process per machine decodes and writes the cache), held on the device and
        cut into batches there, augmented and reshuffled each epoch when ``train``."""
        args, accelerator = self.args, self.accelerator
        with accelerator.local_main_process_first():
            images, labels = decode_split(split, self.data.native_size, args.model.cache_dir, args.data.skip_corrupt_images)
        return ResidentLoader(
            images,
            labels,
            args.training.per_device_train_batch_size if train else args.training.per_device_eval_batch_size,
            train=train,
            drop_last=train,
            device=accelerator.device,
            seed=args.training.seed,
            augmentation=self.augmentation,
            input_size=self.spec.input_size,
            crop_padding=args.data.crop_padding,
            interpolation=self.spec.interpolation,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
        )

    def synthetic_loader(self) -> SyntheticLoader:
        """As many batches per epoch as the resident path's, all the same batch of the run's own training images
        (the first ones, at the model's input size): the compute-only bound."""
        args, accelerator = self.args, self.accelerator
        batches = len(self.data.train) // (args.training.per_device_train_batch_size * accelerator.num_processes)
        accelerator.print(
            "data_pipeline synthetic: every training batch is the same batch of training images (a throughput "
            "measurement; the accuracy means nothing)"
        )
        images, labels = first_batch(self.data.train, args.training.per_device_train_batch_size, self.spec.input_size)
        return SyntheticLoader(images, labels, batches, device=accelerator.device)

    # ---- the step ---------------------------------------------------------------------------------------------
    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self.normalizer(images)
        if self.args.training.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return logits_of(self.forward_module(images))

    def train_micro_batch(self, images: torch.Tensor, labels: torch.Tensor, micro_index: int) -> torch.Tensor:
        """Forward and backward of micro-batch ``micro_index`` of an epoch, its loss weighted for its accumulation
        window; at the window's end, clipping and the optimizer step (Accelerate skips them inside a window).
        Returns the detached loss times its share of the window, summed into the window's mean loss."""
        args, accelerator, k = self.args, self.accelerator, self.args.training.gradient_accumulation_steps
        with accelerator.accumulate(self.model):
            logits = self._forward(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=args.training.label_smoothing_factor)
            weight = accumulation_weight(self.plan, micro_index, k)
            accelerator.backward(loss * weight)
            if accelerator.sync_gradients and args.training.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), args.training.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach() * (weight / k)

    def _train_epoch(self, epoch: int, progress: tqdm) -> None:
        """Train epoch ``epoch`` (0-based) from micro-batch ``state.micro_in_epoch`` on (non-zero on resume)."""
        args, accelerator, state = self.args, self.accelerator, self.state
        self.model.train()
        self.train_loader.set_epoch(epoch)
        start = state.micro_in_epoch
        loader = self.train_loader
        if start and isinstance(loader, DeviceLoader):
            loader = loader.skip_first_batches(start)
        elif start:
            loader = accelerator.skip_first_batches(loader, start)
        window_loss = torch.zeros((), device=accelerator.device)
        segment_started = self.clock()
        batches = iter(loader)
        micro_index = start - 1
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            state.data_wait_seconds += time.perf_counter() - waited
            if batch is None:
                break
            images, labels = batch
            micro_index += 1
            window_loss += self.train_micro_batch(images, labels, micro_index)
            state.train_samples += images.shape[0] * accelerator.num_processes
            state.skipped_images += args.training.per_device_train_batch_size - images.shape[0]
            if not accelerator.sync_gradients:
                continue
            state.update += 1
            state.micro_in_epoch = micro_index + 1
            if self.optimizer.step_was_skipped:
                state.skipped_updates += 1
            else:
                self.scheduler.step()
            finite = torch.isfinite(window_loss)
            self.nonfinite_streak = torch.where(finite, 0, self.nonfinite_streak + 1)
            progress.update(1)
            at_log = state.update % args.training.logging_steps == 0
            at_eval = args.training.eval_strategy == "steps" and state.update % args.training.eval_steps == 0
            at_save = args.training.save_strategy == "steps" and state.update % args.training.save_steps == 0
            at_warmup_end = state.update == args.training.throughput_warmup_steps
            at_end = state.update >= self.plan.total_updates
            if state.update % args.training.max_nonfinite_steps == 0:
                self._check_finite()
            stop = self._stop_requested()
            if at_log or at_eval or at_save or at_warmup_end or at_end or stop:
                state.train_seconds += self.clock() - segment_started
                if at_warmup_end:
                    state.steady_seconds_offset, state.steady_samples_offset = state.train_seconds, state.train_samples
                self._check_finite()
                fraction = epoch + state.micro_in_epoch / self.plan.micro_batches_per_epoch
                if at_log or at_end:
                    self._log_training(fraction, accelerator.reduce(window_loss, "mean").item(), progress)
                if at_eval:
                    self.evaluate_and_track(fraction)
                if at_save or stop:
                    checkpoint = self.save()
                    if stop:
                        raise Preempted(self.stop.received or "a stop signal", checkpoint)
                segment_started = self.clock()
            window_loss.zero_()
            if at_end:
                break
        state.train_seconds += self.clock() - segment_started
        if state.micro_in_epoch >= self.plan.micro_batches_per_epoch:
            state.epoch, state.micro_in_epoch = epoch + 1, 0

    def _stop_requested(self) -> bool:
        """Whether any process received a stop signal; every process must agree, since saving is collective.
        With several processes that takes an all-reduce (and a device sync), so it is asked every
        ``STOP_POLL_UPDATES`` updates, not on every one."""
        requested = self.stop.received is not None
        if self.accelerator.num_processes > 1:
            if self.state.update % STOP_POLL_UPDATES:
                return False
            flag = torch.tensor(float(requested), device=self.accelerator.device)
            requested = self.accelerator.reduce(flag, "max").item() > 0
        return requested

    def _check_finite(self) -> None:
        streak = int(self.nonfinite_streak.item())
        if streak >= self.args.training.max_nonfinite_steps:
            latest = list_checkpoints(self.checkpoint_dir)
            kept = f"the last good checkpoint is {latest[-1]}" if latest else "no checkpoint was saved yet"
            raise TrainingError(
                f"the training loss was not finite for {streak} consecutive updates (from update "
                f"{self.state.update - streak + 1} to {self.state.update}); {kept}. Try --mixed_precision bf16 "
                f"(fp16 overflows more easily), a lower --learning_rate, or --max_grad_norm 1.0"
            )

    def _log_training(self, epoch: float, loss: float, progress: tqdm) -> None:
        state = self.state
        throughput = state.train_samples / state.train_seconds if state.train_seconds else 0.0
        record = {
            "step": state.update,
            "epoch": round(epoch, 4),
            "loss": loss,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "images_per_second": throughput,
            "train_runtime": state.train_seconds,
            "skipped_updates": state.skipped_updates,
        }
        if self.accelerator.scaler is not None:
            record["loss_scale"] = self.accelerator.scaler.get_scale()
        self.metrics_log.write(record)
        self.accelerator.log({f"train/{key}": value for key, value in record.items()}, step=state.update)
        progress.set_postfix(loss=f"{loss:.4f}", img_s=f"{throughput:,.0f}", refresh=False)

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loader, prefix: str) -> dict[str, float]:
        """Loss, accuracy and macro-F1 over every sample of ``loader`` exactly once, on any number of processes.
        Samples labelled -1 are padding (added to even out shards) and are left out."""
        self.model.eval()
        accumulator = MetricAccumulator(self.num_classes, device=self.accelerator.device)
        for images, labels in loader:
            logits = self._forward(images).float()
            losses = F.cross_entropy(logits, labels, reduction="none", ignore_index=-1)
            predictions, labels, losses = self.accelerator.gather_for_metrics((logits.argmax(dim=-1), labels, losses))
            keep = labels >= 0
            accumulator.update(predictions[keep], labels[keep], losses[keep])
        self.model.train()
        return accumulator.compute(prefix)

    def evaluate_and_track(self, epoch: float) -> dict[str, float]:
        """Evaluate on validation, log it, and keep the best weights by ``metric_for_best_model``."""
        state = self.state
        metrics = self.evaluate(self.validation_loader, "eval")
        record = {"step": state.update, "epoch": round(epoch, 4), "train_runtime": state.train_seconds, **metrics}
        self.metrics_log.write(record)
        self.accelerator.log({f"eval/{key[5:]}": value for key, value in metrics.items()}, step=state.update)
        self.accelerator.print(
            f"epoch {epoch:.2f} update {state.update}: eval_loss {metrics['eval_loss']:.4f} "
            f"eval_accuracy {metrics['eval_accuracy']:.4f} eval_f1 {metrics['eval_f1']:.4f}"
        )
        value = metrics[f"eval_{self.args.training.metric_for_best_model}"]
        lower_is_better = self.args.training.metric_for_best_model == "loss"
        best = state.best_metric
        improved = best is None or (value < best if lower_is_better else value > best)
        if improved and self.args.training.load_best_model_at_end and math.isfinite(value):
            state.best_metric, state.best_update = value, state.update
            save_weights(self.accelerator, self.model, self.best_model_path)
        return metrics

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """A checkpoint of this update, unless the loss is currently not finite (the last good one is kept)."""
        if int(self.nonfinite_streak.item()) > 0:
            self.accelerator.print(f"update {self.state.update}: loss not finite, checkpoint not saved")
            return None
        path = save_checkpoint(
            self.accelerator, self.checkpoint_dir, self.state.update, self.state.to_json(), self.args.training.save_total_limit
        )
        if self.on_checkpoint is not None and self.accelerator.is_main_process:
            self.on_checkpoint(path)
        return path

    def resume(self, checkpoint: Path) -> None:
        """Restore model, optimizer, scheduler, loss scaler, RNG states and the position inside the epoch."""
        state_file = checkpoint / "training_state.json"
        if not state_file.is_file():
            raise TrainingError(f"'{checkpoint}' is not a complete checkpoint (no training_state.json)")
        saved = RunState.from_file(state_file)
        if saved.num_classes != self.num_classes:
            raise TrainingError(
                f"checkpoint '{checkpoint}' was trained on {saved.num_classes} classes but the dataset "
                f"'{self.args.data.dataset_name}' has {self.num_classes}; resume with the same dataset, or start a new "
                "run (fine-tune from the exported model folder with --model_name_or_path)"
            )
        self.accelerator.load_state(str(checkpoint))
        self.state = saved
        if self.accelerator.is_main_process:
            truncate_metrics(self.metrics_log.path, after_step=saved.update)
        self.accelerator.print(
            f"resumed from {checkpoint}: update {saved.update}, epoch {saved.epoch} + {saved.micro_in_epoch} "
            "micro-batches"
        )

    # ---- the run ----------------------------------------------------------------------------------------------
    def _describe(self) -> str:
        args, plan, data = self.args, self.plan, self.data
        test_size = len(data.test) if data.test is not None else 0
        pinned = args.training.dataloader_pin_memory and self.accelerator.device.type != "cpu"
        if self.pipeline == "synthetic":
            loading = "one training batch held on the device (compute-only bound)"
        elif self.pipeline == "resident":
            loading = "data held on the device"
        else:
            loading = f"pinned memory {pinned}; {args.training.dataloader_num_workers} loader worker(s)"
        return (
            f"{self.spec.describe()}\n"
            f"data: {data.source}: {len(data.train)} train / {len(data.validation)} validation / {test_size} test, "
            f"{self.num_classes} classes, augmentation {self.augmentation}, {self.pipeline} data pipeline\n"
            f"plan: {plan.total_updates} updates over {plan.epochs} epoch(s) of {plan.updates_per_epoch}; "
            f"global batch {plan.global_batch_size} = {args.training.per_device_train_batch_size} x "
            f"{args.training.gradient_accumulation_steps} accumulation x {self.accelerator.num_processes} process(es); "
            f"precision {args.training.mixed_precision}; {loading}"
        )

    def train(self) -> RunResult:
        args, accelerator, plan, state = self.args, self.accelerator, self.plan, self.state
        accelerator.print(self._describe())
        progress = tqdm(
            total=plan.total_updates,
            initial=state.update,
            desc="training",
            unit="update",
            disable=args.training.disable_tqdm or not accelerator.is_local_main_process,
        )
        with self.stop:
            for epoch in range(self.state.epoch, plan.epochs):
                if self.state.update >= plan.total_updates:
                    break
                self._train_epoch(epoch, progress)
                completed = self.state.update / plan.updates_per_epoch
                if args.training.eval_strategy == "epoch":
                    self.evaluate_and_track(completed)
                if args.training.save_strategy == "epoch":
                    self.save()
        progress.close()
        self._check_finite()
        return self._finish()

    def _finish(self) -> RunResult:
        args, accelerator, plan, state = self.args, self.accelerator, self.plan, self.state
        if state.skipped_images:
            accelerator.print(f"skipped {state.skipped_images} undecodable training image(s)")
        if args.training.load_best_model_at_end and state.best_update is not None:
            accelerator.wait_for_everyone()
            load_weights(accelerator, self.model, self.best_model_path)
            accelerator.print(
                f"loaded the best model (update {state.best_update}, eval_{args.training.metric_for_best_model} "
                f"{state.best_metric:.4f}) for the final evaluation"
            )
        final = self.evaluate(self.validation_loader, "eval")
        if self.test_loader is not None:
            final.update(self.evaluate(self.test_loader, "test"))
        seconds = state.train_seconds
        results = {
            **final,
            "epoch": state.update / plan.updates_per_epoch,
            "train_updates": state.update,
            "train_samples": state.train_samples,
            "train_runtime": seconds,
            "train_samples_per_second": state.train_samples / seconds if seconds else 0.0,
            "train_steps_per_second": state.update / seconds if seconds else 0.0,
            "steady_samples_per_second": state.steady_samples_per_second(),
            "data_wait_fraction": state.data_wait_seconds / seconds if seconds else 0.0,
            "peak_memory_mb": peak_memory_mb(accelerator.device),
            "skipped_updates": state.skipped_updates,
            "skipped_images": state.skipped_images,
            "best_update": state.best_update,
            "num_processes": accelerator.num_processes,
            "per_device_train_batch_size": args.training.per_device_train_batch_size,
            "gradient_accumulation_steps": args.training.gradient_accumulation_steps,
            "global_batch_size": plan.global_batch_size,
            "mixed_precision": args.training.mixed_precision,
            "device": _device_name(accelerator.device),
        }
        self.metrics_log.write({"step": state.update, "final": True, **final})
        best = self.best_model_path if state.best_update is not None else None
        return RunResult(results, self.output_dir, best, self.model)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def resolve_checkpoint(args: RecipeArguments) -> Path | None:
    """``resume_from_checkpoint``: ``latest`` is the newest complete checkpoint in output_dir (None when there is
    none yet, so a requeued job that never saved starts fresh); anything else must be a checkpoint folder."""
    value = args.training.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        found = list_checkpoints(Path(args.training.output_dir) / "checkpoints")
        return found[-1] if found else None
    path = Path(value)
    if not (path / "training_state.json").is_file():
        raise TrainingError(
            f"resume_from_checkpoint '{value}' is not a checkpoint folder (no training_state.json); pass "
            "'latest' or a folder like output_dir/checkpoints/checkpoint-N"
        )
    return path


def fit(
    args: RecipeArguments,
    spec: ModelSpec,
    data: DataBundle,
    accelerator: Accelerator,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> RunResult:
    """Train ``spec.model`` on ``data`` as ``args`` say; return the final metrics (best model, test split).
    ``on_checkpoint(path)`` runs on the main process after each checkpoint is in place."""
    trainer = Trainer(args, spec, data, accelerator, on_checkpoint)
    checkpoint = resolve_checkpoint(args)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    elif args.training.resume_from_checkpoint == "latest":
        accelerator.print(f"no checkpoint in {Path(args.training.output_dir) / 'checkpoints'} yet: starting from scratch")
    return trainer.train()
