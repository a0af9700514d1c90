"""The training loop on Accelerate: accumulation, mixed precision, clipping, schedule, evaluation, checkpoints.

The step is Accelerate's canonical one (``accelerator.accumulate`` + ``accelerator.backward``), with one
correction: Accelerate divides every micro-batch loss by ``gradient_accumulation_steps``, which mis-scales a
window cut short at the end of an epoch. Here each micro-batch loss is weighted by ``1 / window length``, so a
window of k equal micro-batches gives exactly the gradient of one batch k times larger, partial windows
included. Training batches are therefore all full (the loader drops the last incomplete micro-batch of each
epoch, as timm's does), which keeps every micro-batch the same size on every process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from tqdm.auto import tqdm

from accel_recipes.accumulation import TrainingPlan, accumulation_weight
from accel_recipes.checkpoints import load_weights, save_checkpoint, save_weights
from accel_recipes.config import RecipeArguments
from accel_recipes.data import DataBundle, make_dataloader, make_transform, resolve_augmentation
from accel_recipes.metrics import MetricAccumulator
from accel_recipes.models import ModelSpec, logits_of
from accel_recipes.optim import create_optimizer, create_scheduler
from accel_recipes.reporting import MetricsLog


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


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
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=_trackers(args),
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(non_blocking=args.dataloader_pin_memory),
    )
    args.mixed_precision = accelerator.mixed_precision  # resolved, so config.yaml records what ran
    if args.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
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

    def __init__(self, args: RecipeArguments, spec: ModelSpec, data: DataBundle, accelerator: Accelerator):
        self.args = args
        self.spec = spec
        self.data = data
        self.accelerator = accelerator
        self.output_dir = Path(args.output_dir)
        self.metrics_log = MetricsLog(self.output_dir / "metrics.jsonl", accelerator.is_main_process)
        self.num_classes = len(data.label_names)
        self.update = 0
        self.skipped_updates = 0
        self.train_seconds = 0.0
        self.train_samples = 0
        self.best_metric: float | None = None
        self.best_update: int | None = None
        self.best_model_path = self.output_dir / "best_model" / "model.safetensors"
        self._build()

    # ---- set-up -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        args, spec, data = self.args, self.spec, self.data
        augmentation = resolve_augmentation(args, spec.pretrained, spec.input_size, data.native_size)
        self.augmentation = augmentation
        train_transform = make_transform(
            True, augmentation, spec.input_size, data.native_size, args.crop_padding, spec.interpolation
        )
        eval_transform = make_transform(
            False, augmentation, spec.input_size, data.native_size, args.crop_padding, spec.interpolation
        )
        bs = args.per_device_train_batch_size
        train_loader = make_dataloader(data.train, train_transform, bs, shuffle=True, args=args, drop_last=True)
        eval_bs = args.per_device_eval_batch_size
        validation_loader = make_dataloader(data.validation, eval_transform, eval_bs, shuffle=False, args=args)
        test_loader = (
            make_dataloader(data.test, eval_transform, eval_bs, shuffle=False, args=args) if data.test else None
        )
        optimizer = create_optimizer(args, spec.model)
        self.model, self.optimizer, self.train_loader, self.validation_loader = self.accelerator.prepare(
            spec.model, optimizer, train_loader, validation_loader
        )
        self.test_loader = self.accelerator.prepare(test_loader) if test_loader is not None else None
        if len(self.train_loader) == 0:
            raise TrainingError(
                f"the training set has {len(data.train)} samples, fewer than one micro-batch of "
                f"{bs} x {self.accelerator.num_processes} process(es); lower per_device_train_batch_size"
            )
        self.plan = TrainingPlan.build(args, len(self.train_loader), self.accelerator.num_processes)
        # Not prepared by Accelerate on purpose: its wrapper steps the schedule once per process per update.
        self.scheduler = create_scheduler(args, self.optimizer.optimizer, self.plan.total_updates)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.normalizer = Normalizer(spec.mean, spec.std).to(self.accelerator.device)

    # ---- the step ---------------------------------------------------------------------------------------------
    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(self.normalizer(images)))

    def _train_epoch(self, epoch: int, progress: tqdm) -> None:
        args, accelerator, k = self.args, self.accelerator, self.args.gradient_accumulation_steps
        self.model.train()
        window_loss = torch.zeros((), device=accelerator.device)
        started = self._clock()
        for micro_index, (images, labels) in enumerate(self.train_loader):
            with accelerator.accumulate(self.model):
                logits = self._forward(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=args.label_smoothing_factor)
                weight = accumulation_weight(self.plan, micro_index, k)
                accelerator.backward(loss * weight)
                window_loss += loss.detach() * (weight / k)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.train_samples += images.shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            self.update += 1
            if self.optimizer.step_was_skipped:
                self.skipped_updates += 1
            else:
                self.scheduler.step()
            progress.update(1)
            at_log = self.update % args.logging_steps == 0 or self.update == self.plan.total_updates
            at_eval = args.eval_strategy == "steps" and self.update % args.eval_steps == 0
            at_save = args.save_strategy == "steps" and self.update % args.save_steps == 0
            if at_log or at_eval or at_save or self.update >= self.plan.total_updates:
                self.train_seconds += self._clock() - started
                fraction = (micro_index + 1) / self.plan.micro_batches_per_epoch
                if at_log:
                    self._log_training(epoch - 1 + fraction, accelerator.reduce(window_loss, "mean").item(), progress)
                if at_eval:
                    self.evaluate_and_track(epoch - 1 + fraction)
                if at_save:
                    self.save(epoch - 1 + fraction)
                started = self._clock()
            window_loss.zero_()
            if self.update >= self.plan.total_updates:
                return
        self.train_seconds += self._clock() - started

    def _clock(self) -> float:
        """Wall time after the device has finished its queued work, so GPU time is not misattributed."""
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize(self.accelerator.device)
        return time.perf_counter()

    def _log_training(self, epoch: float, loss: float, progress: tqdm) -> None:
        throughput = self.train_samples / self.train_seconds if self.train_seconds else 0.0
        record = {
            "step": self.update,
            "epoch": round(epoch, 4),
            "loss": loss,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "images_per_second": throughput,
            "skipped_updates": self.skipped_updates,
        }
        if self.accelerator.scaler is not None:
            record["loss_scale"] = self.accelerator.scaler.get_scale()
        self.metrics_log.write(record)
        self.accelerator.log({f"train/{key}": value for key, value in record.items()}, step=self.update)
        progress.set_postfix(loss=f"{loss:.4f}", img_s=f"{throughput:,.0f}", refresh=False)

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loader, prefix: str) -> dict[str, float]:
        """Loss, accuracy and macro-F1 over every sample of ``loader`` exactly once, on any number of processes."""
        self.model.eval()
        accumulator = MetricAccumulator(self.num_classes, device=self.accelerator.device)
        for images, labels in loader:
            logits = self._forward(images).float()
            losses = F.cross_entropy(logits, labels, reduction="none")
            predictions, labels, losses = self.accelerator.gather_for_metrics((logits.argmax(dim=-1), labels, losses))
            accumulator.update(predictions, labels, losses)
        self.model.train()
        return accumulator.compute(prefix)

    def evaluate_and_track(self, epoch: float) -> dict[str, float]:
        """Evaluate on validation, log it, and keep the best weights by ``metric_for_best_model``."""
        metrics = self.evaluate(self.validation_loader, "eval")
        record = {"step": self.update, "epoch": round(epoch, 4), **metrics}
        self.metrics_log.write(record)
        self.accelerator.log({f"eval/{key[5:]}": value for key, value in metrics.items()}, step=self.update)
        self.accelerator.print(
            f"epoch {epoch:.2f} update {self.update}: eval_loss {metrics['eval_loss']:.4f} "
            f"eval_accuracy {metrics['eval_accuracy']:.4f} eval_f1 {metrics['eval_f1']:.4f}"
        )
        value = metrics[f"eval_{self.args.metric_for_best_model}"]
        lower_is_better = self.args.metric_for_best_model == "loss"
        improved = self.best_metric is None or (
            value < self.best_metric if lower_is_better else value > self.best_metric
        )
        if improved and self.args.load_best_model_at_end:
            self.best_metric, self.best_update = value, self.update
            save_weights(self.accelerator, self.model, self.best_model_path)
        return metrics

    def save(self, epoch: float) -> None:
        state = {
            "update": self.update,
            "epoch": epoch,
            "best_metric": self.best_metric,
            "best_update": self.best_update,
            "skipped_updates": self.skipped_updates,
        }
        save_checkpoint(
            self.accelerator, self.output_dir / "checkpoints", self.update, state, self.args.save_total_limit
        )

    # ---- the run ----------------------------------------------------------------------------------------------
    def train(self) -> RunResult:
        args, accelerator, plan = self.args, self.accelerator, self.plan
        accelerator.print(
            f"{self.spec.describe()}\n"
            f"data: {self.data.source}: {len(self.data.train)} train / {len(self.data.validation)} validation / "
            f"{len(self.data.test) if self.data.test is not None else 0} test, {self.num_classes} classes, "
            f"augmentation {self.augmentation}\n"
            f"plan: {plan.total_updates} updates over {plan.epochs} epoch(s) of {plan.updates_per_epoch}; "
            f"global batch {plan.global_batch_size} = {args.per_device_train_batch_size} x "
            f"{args.gradient_accumulation_steps} accumulation x {accelerator.num_processes} process(es); "
            f"precision {args.mixed_precision}; pinned memory {args.dataloader_pin_memory}; "
            f"{args.dataloader_num_workers} loader worker(s)"
        )
        progress = tqdm(
            total=plan.total_updates,
            desc="training",
            unit="update",
            disable=args.disable_tqdm or not accelerator.is_local_main_process,
        )
        for epoch in range(1, plan.epochs + 1):
            self._train_epoch(epoch, progress)
            completed_epoch = min(epoch, self.update / plan.updates_per_epoch)
            if args.eval_strategy == "epoch":
                self.evaluate_and_track(completed_epoch)
            if args.save_strategy == "epoch":
                self.save(completed_epoch)
            if self.update >= plan.total_updates:
                break
        progress.close()
        if args.load_best_model_at_end and self.best_update is not None:
            accelerator.wait_for_everyone()
            load_weights(accelerator, self.model, self.best_model_path)
            accelerator.print(
                f"loaded the best model (update {self.best_update}, eval_{args.metric_for_best_model} "
                f"{self.best_metric:.4f}) for the final evaluation"
            )
        final = self.evaluate(self.validation_loader, "eval")
        if self.test_loader is not None:
            final.update(self.evaluate(self.test_loader, "test"))
        results = {
            **final,
            "epoch": self.update / plan.updates_per_epoch,
            "train_updates": self.update,
            "train_samples": self.train_samples,
            "train_runtime": self.train_seconds,
            "train_samples_per_second": self.train_samples / self.train_seconds if self.train_seconds else 0.0,
            "train_steps_per_second": self.update / self.train_seconds if self.train_seconds else 0.0,
            "skipped_updates": self.skipped_updates,
            "best_update": self.best_update,
            "num_processes": accelerator.num_processes,
            "global_batch_size": plan.global_batch_size,
            "mixed_precision": args.mixed_precision,
            "device": _device_name(accelerator.device),
        }
        self.metrics_log.write({"step": self.update, "final": True, **final})
        best = self.best_model_path if self.best_update is not None else None
        return RunResult(results, self.output_dir, best, self.model)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def fit(args: RecipeArguments, spec: ModelSpec, data: DataBundle, accelerator: Accelerator) -> RunResult:
    """Train ``spec.model`` on ``data`` as ``args`` say; return the final metrics (best model, test split)."""
    return Trainer(args, spec, data, accelerator).train()
