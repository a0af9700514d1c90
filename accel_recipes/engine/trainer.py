"""The training loop: Accelerate's canonical loop over epochs of micro-batches, with evaluation, the best model,
checkpoints and resume. What happens after each update is decided by ``UpdateMonitor``; the step itself is
``TrainingStep``."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from accel_recipes.checkpoints import (
    RunState,
    load_weights,
    require_reachable_end,
    require_same_classes,
    resolve_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_weights,
)
from accel_recipes.config import TrainingArguments
from accel_recipes.data import DataBundle, DeviceLoader, Loaders
from accel_recipes.data.size_schedule import SizeSchedule
from accel_recipes.data.stream_loader import is_stream
from accel_recipes.engine.ema import copy_ema_into
from accel_recipes.engine.monitor import UpdateMonitor, peak_memory_mb
from accel_recipes.engine.resolution import ResolutionPhases
from accel_recipes.engine.step import TrainingStep
from accel_recipes.engine.stopping import EarlyStopping
from accel_recipes.errors import Preempted, TrainingError
from accel_recipes.metrics import MetricAccumulator
from accel_recipes.models import ModelSpec
from accel_recipes.optim import rebuild_schedule
from accel_recipes.plan import require_a_micro_batch
from accel_recipes.reporting import MetricsLog, truncate_metrics
from accel_recipes.results import RunResults, check_results, key


@dataclass
class RunResult:
    metrics: RunResults  # all_results.json
    output_dir: Path
    best_model_path: Path | None
    model: torch.nn.Module = field(repr=False)


class Trainer:
    """Trains ``spec.model`` on ``loaders`` as ``training`` says; ``data`` describes the dataset in the log."""

    def __init__(
        self,
        training: TrainingArguments,
        spec: ModelSpec,
        data: DataBundle,
        loaders: Loaders,
        accelerator: Accelerator,
        on_checkpoint: Callable[[Path], None] | None = None,
    ) -> None:
        require_a_micro_batch(
            len(loaders.train), len(data.train), training.per_device_train_batch_size, accelerator.num_processes
        )
        self.training, self.spec, self.data, self.loaders = training, spec, data, loaders
        self.accelerator, self.on_checkpoint = accelerator, on_checkpoint
        self.step = TrainingStep(training, spec, accelerator, len(loaders.train), data.num_classes)
        self.plan = self.step.plan
        self.output_dir = Path(training.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.best_model_path = self.output_dir / "best_model" / "model.safetensors"
        self.metrics_log = MetricsLog(self.output_dir / "metrics.jsonl", accelerator.is_main_process)
        self.state = RunState(
            num_classes=data.num_classes, model_ema=training.model_ema, total_updates=self.plan.total_updates
        )
        self.monitor = UpdateMonitor(training, self.plan, accelerator, self.state, self.checkpoint_dir)
        self.early_stopping = EarlyStopping(training)
        schedule = SizeSchedule.of(loaders.augment, self.plan.total_updates, training.seed)
        self.resolution = ResolutionPhases(schedule, self.monitor, self.metrics_log, accelerator) if schedule else None

    # ---- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        training, plan = self.training, self.plan
        self.accelerator.print(self._describe())
        disable = training.disable_tqdm or not self.accelerator.is_local_main_process
        progress = tqdm(
            total=plan.total_updates, initial=self.state.update, desc="training", unit="update", disable=disable
        )
        with self.monitor.stop:
            for epoch in range(self.state.epoch, plan.epochs):
                if self.stopping_early:  # also a run resumed from a checkpoint saved after the stop was decided
                    break
                # Resumed from a checkpoint of the last update saved before its epoch's end: train_epoch trains
                # nothing, and the epoch's evaluation (which resume dropped from metrics.jsonl) and save run again.
                epoch_end_pending = self.state.micro_in_epoch >= plan.micro_batches_per_epoch
                if self.state.update >= plan.total_updates and not epoch_end_pending:
                    break
                self.train_epoch(epoch, progress)
                if self.stopping_early:  # decided by an evaluation inside the epoch (eval_strategy steps)
                    break
                if training.eval_strategy == "epoch":
                    self.evaluate_and_track(self.state.update / plan.updates_per_epoch)
                if training.save_strategy == "epoch":
                    self.save()
        progress.close()
        if self.resolution:
            self.resolution.report(self.state)  # the last phase
        self.monitor.check_finite()
        return self._finish()

    def train_epoch(self, epoch: int, progress: tqdm) -> None:
        """Train epoch ``epoch`` (0-based) from micro-batch ``state.micro_in_epoch`` on (non-zero on resume)."""
        accelerator, state, monitor, step = self.accelerator, self.state, self.monitor, self.step
        step.model.train()
        loader = self.loaders.train
        loader.set_epoch(epoch)
        start = state.micro_in_epoch
        if start:
            skip = loader.skip_first_batches if isinstance(loader, DeviceLoader) else None
            loader = skip(start) if skip else accelerator.skip_first_batches(loader, start)
        window_loss = torch.zeros((), device=accelerator.device)
        monitor.start_timing()
        batches, micro_index = iter(loader), start - 1
        while (batch := monitor.next_batch(batches)) is not None:
            images, labels = batch
            if self.resolution:  # every micro-batch of an update at that update's size
                images = self.resolution(images, state)
            micro_index += 1
            window_loss += step.micro_batch(images, labels, micro_index, epoch)
            state.train_samples += images.shape[0] * accelerator.num_processes
            state.skipped_images += self.training.per_device_train_batch_size - images.shape[0]
            if not accelerator.sync_gradients:
                continue
            state.update, state.micro_in_epoch = state.update + 1, micro_index + 1
            state.skipped_updates += step.after_update(state.update)
            progress.update(1)
            events = monitor.after_update(window_loss)
            if events.paused:
                fraction = epoch + state.micro_in_epoch / self.plan.micro_batches_per_epoch
                if events.log or events.end:
                    self._log_training(fraction, accelerator.reduce(window_loss, "mean").item(), progress)
                if events.evaluate:
                    self.evaluate_and_track(fraction)
                    events.end = events.end or self.stopping_early
                if events.save or events.stop:
                    checkpoint = self.save()
                    if events.stop:
                        raise Preempted(monitor.stop.received or "a stop signal", checkpoint)
                if events.end:  # the clock stays stopped: train_runtime ends with this update
                    self._close_epoch(epoch)
                    return
                monitor.start_timing()
            window_loss.zero_()
        monitor.stop_timing()
        self._close_epoch(epoch)

    def _close_epoch(self, epoch: int) -> None:
        """Count epoch ``epoch`` as completed once all its micro-batches are trained."""
        state = self.state
        if state.micro_in_epoch >= self.plan.micro_batches_per_epoch:
            state.epoch, state.micro_in_epoch = epoch + 1, 0

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loader, prefix: str, ema: bool = False) -> dict[str, float]:
        """Loss, accuracy and macro-F1 over every sample of ``loader`` exactly once, on any number of processes,
        of the live weights or (``ema``) their EMA; with ``eval_flip_tta`` also ``{prefix}_tta_*``, from the logits
        of each image and its mirror averaged. Samples labelled -1 are padding (added to even out shards) and are
        left out."""
        model = self.step.model
        model.eval()
        flip_tta = self.training.eval_flip_tta
        accumulators = {
            name: MetricAccumulator(self.data.num_classes, device=self.accelerator.device)
            for name in ([prefix, f"{prefix}_tta"] if flip_tta else [prefix])
        }
        with self.step.ema_weights() if ema else nullcontext():
            for images, labels in loader:
                logits = self.step.forward(images, ema=ema).float()
                self._accumulate(accumulators[prefix], logits, labels)
                if flip_tta:
                    mirrored = self.step.forward(images.flip(-1), ema=ema).float()
                    self._accumulate(accumulators[f"{prefix}_tta"], (logits + mirrored) / 2, labels)
        model.train()
        return {key: value for name, acc in accumulators.items() for key, value in acc.compute(name).items()}

    def _accumulate(self, accumulator: MetricAccumulator, logits: torch.Tensor, labels: torch.Tensor) -> None:
        losses = F.cross_entropy(logits, labels, reduction="none", ignore_index=-1)
        predictions, labels, losses = self.accelerator.gather_for_metrics((logits.argmax(dim=-1), labels, losses))
        keep = labels >= 0
        accumulator.update(predictions[keep], labels[keep], losses[keep])

    @property
    def exports_ema(self) -> bool:
        """Whether the EMA weights compete for the best model and are exported (``metric_for_best_model: ema_*``)."""
        return self.training.metric_for_best_model.startswith("ema_")

    def evaluate_and_track(self, epoch: float) -> dict[str, float]:
        """Evaluate on validation, log it, and keep the best weights by ``metric_for_best_model``."""
        state, training = self.state, self.training
        metrics = self.evaluate(self.loaders.validation, "eval")
        if self.step.ema is not None:
            metrics.update(self.evaluate(self.loaders.validation, "eval_ema", ema=True))
        record = {"step": state.update, "epoch": round(epoch, 4), "train_runtime": state.train_seconds, **metrics}
        self.metrics_log.write(record)
        self.accelerator.log({f"eval/{key[5:]}": value for key, value in metrics.items()}, step=state.update)
        self.accelerator.print(
            f"epoch {epoch:.2f} update {state.update}: eval_loss {metrics['eval_loss']:.4f} "
            f"eval_accuracy {metrics['eval_accuracy']:.4f} eval_f1 {metrics['eval_f1']:.4f}"
            + (f" eval_ema_accuracy {metrics['eval_ema_accuracy']:.4f}" if "eval_ema_accuracy" in metrics else "")
        )
        value = metrics[f"eval_{training.metric_for_best_model}"]
        lower_is_better = training.metric_for_best_model.endswith("loss")
        best = state.best_metric
        improved = best is None or (value < best if lower_is_better else value > best)
        if improved and training.load_best_model_at_end and math.isfinite(value) and self._weights_finite():
            state.best_metric, state.best_update = value, state.update
            weights = self.step.ema.module if self.exports_ema else self.step.model
            save_weights(self.accelerator, weights, self.best_model_path, self.checkpoint_dir)
        was_stopping = self.stopping_early
        self.early_stopping.observe(state, value)
        reason = self.early_stopping.reason(state)
        if reason and not was_stopping:
            self.accelerator.print(f"update {state.update}: stopping training early: {reason}")
        return metrics

    @property
    def stopping_early(self) -> bool:
        """Whether an evaluation decided that training ends here (``target_metric_value``, early stopping)."""
        return self.early_stopping.reason(self.state) is not None

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """A checkpoint of this update, unless the loss or the weights are not finite (the last good one is kept)."""
        if not (self.monitor.loss_is_finite() and self._weights_finite()):
            self.accelerator.print(f"update {self.state.update}: loss or weights not finite, checkpoint not saved")
            return None
        path = save_checkpoint(self.accelerator, self.checkpoint_dir, self.state, self.training.save_total_limit)
        if self.on_checkpoint is not None and self.accelerator.is_main_process:
            self.on_checkpoint(path)
        return path

    def _weights_finite(self) -> bool:
        return self.monitor.weights_are_finite(self.step.model)

    def resume(self, checkpoint: Path) -> None:
        """Restore model, optimizer, scheduler, loss scaler, RNG states and the position inside the epoch; a run of
        another length than the checkpoint's continues on a schedule rebuilt for its own."""
        require_same_classes(checkpoint, self.data.num_classes, self.data.name)  # the more basic mismatch first
        require_reachable_end(checkpoint, self.training, self.plan.total_updates)
        saved = restore_checkpoint(self.accelerator, checkpoint, self.data.num_classes, self.data.name)
        saved.model_ema = self.training.model_ema  # what later checkpoints of this run hold
        self._continue_schedule(saved)
        another_target = self.early_stopping.forget_another_target(saved)
        if another_target:
            self.accelerator.print(another_target)
        self.state = self.monitor.state = saved
        # a checkpoint of an epoch's last update comes before that epoch's evaluation, which the resumed run repeats
        at_epoch_end = saved.micro_in_epoch >= self.plan.micro_batches_per_epoch
        evaluated_again = at_epoch_end and self.training.eval_strategy == "epoch"
        if self.accelerator.is_main_process:
            truncate_metrics(self.metrics_log.path, after_step=saved.update, evaluated_again=evaluated_again)
            self._bring_best_model(checkpoint, saved.best_update)
        self.accelerator.wait_for_everyone()
        self.accelerator.print(
            f"resumed from {checkpoint}: update {saved.update}, epoch {saved.epoch} + {saved.micro_in_epoch} "
            "micro-batches"
        )

    def _continue_schedule(self, saved: RunState) -> None:
        """Rebuild the restored schedule for this run's length when the checkpoint's run had another one. A checkpoint
        saved before it recorded its length: a one-cycle schedule still holds it; the others are taken as unchanged
        (their multiplier is built for this run's length anyway)."""
        scheduler, total = self.step.scheduler, self.plan.total_updates
        previous = saved.total_updates or getattr(scheduler, "total_steps", total)
        saved.total_updates = total  # what later checkpoints of this run hold
        if previous == total:
            return
        before = scheduler.get_last_lr()[0]
        rebuild_schedule(self.training, scheduler, self.step.optimizer.optimizer, total)
        self.accelerator.print(
            f"the checkpoint's run was {previous} updates long, this one is {total}: the "
            f"{self.training.lr_scheduler_type} schedule is rebuilt for {total} updates and continues from update "
            f"{saved.update} (learning rate {before:.4g} -> {scheduler.get_last_lr()[0]:.4g})"
            + (", and so are the train_img_sizes phases" if self.resolution else "")
        )

    def _bring_best_model(self, checkpoint: Path, best_update: int | None) -> None:
        """Resumed into another output_dir: the best weights the checkpoint's counters point at are in the run it
        came from (``<run>/checkpoints/checkpoint-N``), and the end of this run loads them."""
        if not self.training.load_best_model_at_end or best_update is None or self.best_model_path.is_file():
            return
        source = checkpoint.parent.parent / "best_model" / self.best_model_path.name
        if not source.is_file():
            raise TrainingError(
                f"the checkpoint '{checkpoint}' says the best model is update {best_update}, but its weights are "
                f"neither in '{self.best_model_path.parent}' nor in '{source.parent}'; resume in the run's own "
                "output_dir, or copy its best_model folder into the new one"
            )
        self.best_model_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.best_model_path)

    # ---- logs and results -------------------------------------------------------------------------------------
    def _describe(self) -> str:
        training, plan, data, loaders = self.training, self.plan, self.data, self.loaders
        test_size = _size(data.test) if data.test is not None else 0
        pinned = training.dataloader_pin_memory and self.accelerator.device.type != "cpu"
        if loaders.pipeline == "synthetic":
            loading = "one training batch held on the device (compute-only bound)"
        elif loaders.pipeline == "resident":
            loading = "data held on the device"
        else:
            loading = f"pinned memory {pinned}; {training.dataloader_num_workers} loader worker(s)"
        held_out = f"validation: {data.held_out}\n" if data.held_out else ""
        return (
            f"{self.spec.describe()}\n"
            f"data: {data.source}: {_size(data.train)} train / {_size(data.validation)} validation / {test_size} test, "
            f"{data.num_classes} classes, augmentation {loaders.augmentation}"
            f"{' + ' + loaders.policy.name if loaders.policy else ''}, {loaders.pipeline} data pipeline\n"
            f"{held_out}"
            f"plan: {plan.total_updates} updates over {plan.epochs} epoch(s) of {plan.updates_per_epoch}; "
            f"global batch {plan.global_batch_size} = {training.per_device_train_batch_size} x "
            f"{training.gradient_accumulation_steps} accumulation x {self.accelerator.num_processes} process(es); "
            f"precision {training.mixed_precision}; {loading}"
        )

    def _log_training(self, epoch: float, loss: float, progress: tqdm) -> None:
        state = self.state
        throughput = state.train_samples / state.train_seconds if state.train_seconds else 0.0
        record = {
            "step": state.update,
            "epoch": round(epoch, 4),
            "loss": loss,
            "learning_rate": self.step.scheduler.get_last_lr()[0],
            "images_per_second": throughput,
            "train_runtime": state.train_seconds,
            "skipped_updates": state.skipped_updates,
        }
        if self.accelerator.scaler is not None:
            record["loss_scale"] = self.accelerator.scaler.get_scale()
        self.metrics_log.write(record)
        self.accelerator.log({f"train/{key}": value for key, value in record.items()}, step=state.update)
        progress.set_postfix(loss=f"{loss:.4f}", img_s=f"{throughput:,.0f}", refresh=False)

    def _finish(self) -> RunResult:
        training, accelerator, plan, state = self.training, self.accelerator, self.plan, self.state
        if state.skipped_images:
            accelerator.print(f"skipped {state.skipped_images} undecodable training image(s)")
        if training.load_best_model_at_end and state.best_update is not None:
            accelerator.wait_for_everyone()
            load_weights(accelerator, self.step.model, self.best_model_path)
            accelerator.print(
                f"loaded the best model (update {state.best_update}, eval_{training.metric_for_best_model} "
                f"{state.best_metric:.4f}) for the final evaluation"
            )
        elif self.exports_ema:  # no best model kept: the last EMA weights are the ones exported
            copy_ema_into(self.step.ema, accelerator.unwrap_model(self.step.model))  # sharded or not
        self.monitor.check_weights_finite(self.step.model)  # the weights run.py exports as the model folder
        final = self.evaluate(self.loaders.validation, "eval")
        if self.loaders.test is not None:
            final.update(self.evaluate(self.loaders.test, "test"))
        if self.step.ema is not None:  # the EMA weights at the end of training, whichever weights are exported
            final.update(self.evaluate(self.loaders.validation, "eval_ema", ema=True))
            if self.loaders.test is not None:
                final.update(self.evaluate(self.loaders.test, "test_ema", ema=True))
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
            "per_device_train_batch_size": training.per_device_train_batch_size,
            "gradient_accumulation_steps": training.gradient_accumulation_steps,
            "global_batch_size": plan.global_batch_size,
            "mixed_precision": training.mixed_precision,
            "device": _device_name(accelerator.device),
            "exported_weights": "ema" if self.exports_ema else "live",
            "metric_for_best_model": training.metric_for_best_model,
            "target_metric_value": training.target_metric_value,
            "time_to_target_seconds": state.time_to_target_seconds,
            "time_to_target_updates": state.time_to_target_updates,
            "time_to_target_samples": state.time_to_target_samples,
            "stopped_early": self.stopping_early and state.update < plan.total_updates,
        }
        if self.data.held_out:  # a stream without a validation split: said in the card
            results[key("validation_held_out")] = self.data.held_out
        self.metrics_log.write({"step": state.update, "final": True, **final})
        best = self.best_model_path if state.best_update is not None else None
        return RunResult(check_results(results), self.output_dir, best, self.step.model)


def _size(split: object) -> int | str:
    """A split's size for the log; a stream that does not record it says so (its ``len`` is 0)."""
    return len(split) or ("unrecorded" if is_stream(split) else 0)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def fit(
    training: TrainingArguments,
    spec: ModelSpec,
    data: DataBundle,
    loaders: Loaders,
    accelerator: Accelerator,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> RunResult:
    """Train ``spec.model`` on ``loaders``, resuming when ``resume_from_checkpoint`` says so; return the final
    metrics (best model, test split). ``on_checkpoint(path)`` runs on the main process after each checkpoint."""
    trainer = Trainer(training, spec, data, loaders, accelerator, on_checkpoint)
    checkpoint = resolve_checkpoint(training, accelerator.print, accelerator)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    elif training.resume_from_checkpoint == "latest":
        accelerator.print(f"no checkpoint in {Path(training.output_dir) / 'checkpoints'} yet: starting from scratch")
        # a requeued or restarted run that never saved: what the stopped attempt logged is logged again
        if accelerator.is_main_process and trainer.metrics_log.path.is_file():
            truncate_metrics(trainer.metrics_log.path, after_step=0)
    return trainer.fit()
