"""Training on Accelerate: the Accelerator (``accelerator``), the step (``step``), what follows each update
(``monitor``) and the loop (``trainer``)."""

from accel_recipes.engine.accelerator import create_accelerator
from accel_recipes.engine.step import TrainingStep
from accel_recipes.engine.trainer import RunResult, Trainer, fit

__all__ = ["RunResult", "Trainer", "TrainingStep", "create_accelerator", "fit"]
