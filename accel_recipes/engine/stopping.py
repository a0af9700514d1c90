"""When training stops before its planned length: at the first evaluation that reaches ``target_metric_value``
(Composer's threshold stopper), or after ``early_stopping_patience`` evaluations without an improvement larger than
``early_stopping_threshold`` (transformers' ``EarlyStoppingCallback``).

Written here because neither Accelerate nor timm has it, and transformers' callback needs transformers' Trainer and
its ``TrainerState``. The decision reads only the evaluation's metrics, which every process computes from the same
gathered predictions, and the counters in ``RunState``, which checkpoints carry: every process decides the same, and
a resumed run decides as the uninterrupted one did.
"""

from __future__ import annotations

import math

from accel_recipes.checkpoints import RunState
from accel_recipes.config import TrainingArguments


class EarlyStopping:
    """Reads each evaluation's ``metric_for_best_model`` (``observe``) and says whether training should stop now."""

    def __init__(self, training: TrainingArguments) -> None:
        self.target = training.target_metric_value
        self.patience = training.early_stopping_patience
        self.threshold = training.early_stopping_threshold
        self.lower_is_better = training.metric_for_best_model.endswith("loss")

    def observe(self, state: RunState, value: float) -> None:
        """Count the evaluation of ``value`` made at ``state.update`` (``state.train_seconds`` of training)."""
        if self.target is not None and state.time_to_target_updates is None and self._reaches_target(value):
            state.time_to_target_seconds = state.train_seconds
            state.time_to_target_updates = state.update
            state.time_to_target_samples = state.train_samples
            state.time_to_target_value = self.target
        if self.patience is None:
            return
        # transformers' rule: compared with the best before this evaluation, which moves with any improvement
        best = state.early_stopping_best
        improved = math.isfinite(value) and (best is None or self._better(value, best))
        if best is None or (improved and abs(value - best) > self.threshold):
            state.evaluations_without_improvement = 0
        else:
            state.evaluations_without_improvement += 1
        if improved:
            state.early_stopping_best = value

    def forget_another_target(self, state: RunState) -> str | None:
        """On resume: a time to target measured for another ``target_metric_value`` than this run's is not this
        run's (a run stopped at 0.89, resumed with 0.93, goes on); cleared, and the sentence that says so returned."""
        recorded = state.time_to_target_value
        if state.time_to_target_updates is None or recorded is None or recorded == self.target:
            return None  # a checkpoint written before the value was recorded keeps its time
        state.time_to_target_seconds = state.time_to_target_updates = state.time_to_target_samples = None
        state.time_to_target_value = None
        return f"the checkpoint reached target_metric_value {recorded:g}; this run's is {self.target}: training goes on"

    def reason(self, state: RunState) -> str | None:
        """Why training stops now, or None to go on."""
        if self.target is not None and state.time_to_target_updates is not None:
            return f"reached target_metric_value {self.target:g} at update {state.time_to_target_updates}"
        if self.patience is not None and state.evaluations_without_improvement >= self.patience:
            return (
                f"{state.evaluations_without_improvement} evaluations without an improvement larger than "
                f"{self.threshold:g} (early_stopping_patience {self.patience})"
            )
        return None

    def _reaches_target(self, value: float) -> bool:
        return value <= self.target if self.lower_is_better else value >= self.target

    def _better(self, value: float, best: float) -> bool:
        return value < best if self.lower_is_better else value > best
