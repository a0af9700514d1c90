"""Each arm and repeat as a clean run: its own ``accelerate launch recipes/train.py`` and its own output_dir.

Repeats are interleaved (repeat 1 of every arm, then repeat 2, ...) so that a machine whose load drifts during
the ablation slows every arm alike; each repeat's order is rotated (``common.order.rotation``) so that load
recurring at the period of one repeat does not fall on the same arm every time. A run's output goes to
``launch.log`` in its folder; the terminal gets one line per run, rewritten in place with the run's progress when
it is a terminal. Its recipe fields are the plan's, as a command line (``common.recipe.recipe_flags``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.bench.common.recipe import recipe_flags
from accel_recipes.reporting import read_metrics
from accel_recipes.results import RESULTS_FILE, key

DEFAULT_LAUNCH_ARGS = "--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
POLL_SECONDS = 1.0
EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)(:|$)")


@dataclass
class PlannedRun:
    arm: str
    repeat: int  # from 1
    output_dir: Path
    overrides: dict[str, Any]  # recipe fields passed on the command line (the recipe YAML gives the rest)


def accelerate_command() -> list[str]:
    script = Path(sys.executable).with_name("accelerate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


def launch_command(train_script: Path, launch_args: str, config: str | None, overrides: dict[str, Any]) -> list[str]:
    """``accelerate launch [launch_args] train_script --config config --field value ...``."""
    launch = shlex.split(launch_args or DEFAULT_LAUNCH_ARGS)
    return [*accelerate_command(), "launch", *launch, str(train_script), *recipe_flags(config, overrides)]


def launched_processes(launch_args: str) -> int:
    """The ``--num_processes`` of the launch arguments (1 when not given)."""
    tokens = shlex.split(launch_args or "")
    for index, token in enumerate(tokens):
        if token == "--num_processes" and index + 1 < len(tokens):
            return int(tokens[index + 1])
        if token.startswith("--num_processes="):
            return int(token.split("=", 1)[1])
    return 1


def cpu_threads(processes: int) -> int:
    """Threads per process on a CPU: OMP_NUM_THREADS when set, else the cores shared out (`accelerate launch`
    would otherwise give each process one thread)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // max(processes, 1))


def run_environment(threads: int | None) -> dict[str, str]:
    """The runs' environment. On a CPU (``threads`` given): that many OpenMP threads per process.

    OMP_WAIT_POLICY is left as the caller has it: OpenMP's default (threads spin a while before they sleep) is the
    fastest on a machine the ablation has to itself (ResNet-18 at 32x32 in bf16 trained at 0.65x the speed with
    PASSIVE on a 2-core CPU). On a machine shared with other jobs, ``OMP_WAIT_POLICY=PASSIVE`` keeps the spinning
    threads of two programs from stalling each other (BENCHMARKS.md, "Pitfalls")."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _last_error(log: Path) -> str:
    """The run's own message (``error: ...``), else its last exception line (not the launcher's own)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    messages = [line for line in lines if line.startswith("error:")]
    exceptions = [line for line in lines if EXCEPTION_LINE.match(line) and "CalledProcessError" not in line]
    return (messages or exceptions or lines or ["no output"])[-1][:300]


def _progress_text(output_dir: Path) -> str:
    records = read_metrics(output_dir / "metrics.jsonl")
    logged = [record for record in records if "images_per_second" in record]
    if not logged:
        return "starting"
    last = logged[-1]
    return f"update {last['step']}, {last['images_per_second']:,.1f} images/s"


class Progress:
    """One line per run: rewritten in place on a terminal, written once when it ends otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()

    def update(self, prefix: str, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K{prefix} {text}")
            self.stream.flush()

    def start(self, prefix: str) -> None:
        if self.live:
            self.update(prefix, "starting")
        else:
            self.stream.write(f"{prefix} ...")
            self.stream.flush()

    def end(self, prefix: str, text: str) -> None:
        self.stream.write(f"\r\033[K{prefix} {text}\n" if self.live else f" {text}\n")
        self.stream.flush()


def prune_weights(output_dir: Path) -> None:
    """Drop a finished run's weights (checkpoints, best model, exported safetensors): an ablation measures runs,
    it does not keep their models. ``model/config.json`` stays, to say what was trained."""
    for folder in ("checkpoints", "best_model"):
        shutil.rmtree(output_dir / folder, ignore_errors=True)
    for weights in (output_dir / "model").glob("*.safetensors"):
        weights.unlink()


def describe_result(record: RunRecord) -> str:
    if not record.ok:
        return f"FAILED (exit {record.returncode}): {record.error}; see {record.output_dir / 'launch.log'}"
    results = record.results
    accuracy = results.get(key("test_accuracy"), results.get(key("eval_accuracy")))
    parts = [
        f"{results[key('steady_samples_per_second')]:,.1f} images/s",
        f"train {results[key('train_runtime')]:.1f} s",
        f"peak {results[key('peak_memory_mb')]:,.0f} MB",
    ]
    if record.load_average is not None:
        parts.append(f"machine load {record.load_average:.1f}")
    if accuracy is not None:
        parts.append(f"accuracy {accuracy:.4f}")
    return f"done in {record.wall_seconds:.0f} s: " + ", ".join(parts)


def stop_group(process: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """SIGINT to the run's process group (as Ctrl-C in a terminal would), SIGKILL if it has not exited in time."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def execute(run: PlannedRun, command: list[str], env: dict[str, str], on_poll: Callable[[str], None]) -> RunRecord:
    """Run one launch to its end; its output goes to ``output_dir/launch.log``."""
    run.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = run.output_dir / "launch.log"
    started = time.perf_counter()
    with log_path.open("w") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        loads = []
        try:
            while process.poll() is None:
                time.sleep(POLL_SECONDS)
                loads.append(os.getloadavg()[0])
                on_poll(_progress_text(run.output_dir))
        except BaseException:  # Ctrl-C or SIGTERM: stop the launch and its workers (their own process group) too
            stop_group(process)
            raise
    record = finished_record(run, process.returncode, time.perf_counter() - started)
    record.load_average = sum(loads) / len(loads) if loads else None
    return record


def finished_record(run: PlannedRun, returncode: int, wall_seconds: float) -> RunRecord:
    """What a run left in its folder: its results and metrics when it exited 0 and wrote them, else its own error
    from ``launch.log``."""
    record = RunRecord(run.arm, run.repeat, run.output_dir, returncode, wall_seconds)
    results_path = run.output_dir / RESULTS_FILE
    if returncode == 0 and results_path.is_file():
        record.results = json.loads(results_path.read_text())
        record.metrics = read_metrics(run.output_dir / "metrics.jsonl")
    else:
        record.error = _last_error(run.output_dir / "launch.log")
    return record


def run_all(
    runs: list[PlannedRun],
    train_script: Path,
    launch_args: str,
    config: str | None,
    threads: int | None,
    progress: Progress | None = None,
    keep_weights: bool = False,
) -> list[RunRecord]:
    """Every planned run, in order, each in its own ``accelerate launch``; failures are recorded, not raised."""
    progress = progress or Progress()
    env = run_environment(threads)
    records = []
    width = len(str(len(runs)))
    for index, run in enumerate(runs, start=1):
        prefix = f"[{index:>{width}}/{len(runs)}] {run.arm} repeat {run.repeat}:"
        progress.start(prefix)
        command = launch_command(train_script, launch_args, config, run.overrides)
        record = execute(run, command, env, lambda text, prefix=prefix: progress.update(prefix, text))
        progress.end(prefix, describe_result(record))
        if record.ok and not keep_weights:
            prune_weights(run.output_dir)
        records.append(record)
    return records


def stop_launches_on_sigterm() -> None:
    """A benchmark's SIGTERM raises SystemExit(128 + 15): the stack unwinds, so the launch running then is stopped
    too (its process group is signalled on the way out), as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(number: int, frame: object) -> None:
    raise SystemExit(128 + number)
