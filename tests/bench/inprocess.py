"""The ablation's runs in the test's own process: the real ``recipes/train.py`` code through conftest's ``train``,
without the seconds each ``accelerate launch`` spends starting two Python processes and importing torch, timm,
transformers and datasets. For the tests where the process boundary is not what is tested; the test of
``python recipes/ablate.py`` itself launches every run (``tests/e2e/test_ablate.py``)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from conftest import train

from accel_recipes.bench.ablate.runner import PlannedRun, finished_record
from accel_recipes.bench.ablate.summary import RunRecord


def train_arguments(command: list[str]) -> list[str]:
    """The ``recipes/train.py`` arguments of an ``accelerate launch ... recipes/train.py ARGS`` command."""
    script = next(index for index, token in enumerate(command) if Path(token).name == "train.py")
    return command[script + 1 :]


def execute_in_process(
    run: PlannedRun, command: list[str], env: dict[str, str], on_poll: Callable[[str], None]
) -> RunRecord:
    """A stand-in for ``runner.execute``: the launch's own train.py arguments trained here, its output in
    ``launch.log`` as a launched run's would be, its record read by the runner's own ``finished_record``."""
    started = time.perf_counter()
    finished = train(train_arguments(command))
    run.output_dir.mkdir(parents=True, exist_ok=True)
    (run.output_dir / "launch.log").write_text(f"{shlex.join(command)}\n\n{finished.stdout}{finished.stderr}")
    return finished_record(run, finished.exit_code, time.perf_counter() - started)
