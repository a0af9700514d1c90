"""Shared fixtures: the repository root, training in process (``train``) or through ``accelerate launch``
(``launch``), the tiny data sets the end-to-end tests train on (built once per session), and one finished run
that the tests which only read a run's outputs share (``finished_run``)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/datagen.py importable as `datagen`

# trackio reads TRACKIO_DIR once, when it is first imported: set before any test module can import it, so no test
# ever writes into the user's ~/.cache (the trackers test reads the shared run's project from here)
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="accel-recipes-trackio-"))


# ---- training in a subprocess: only where the process boundary is what a test is about ------------------------
def accelerate_command() -> list[str]:
    script = Path(sys.executable).with_name("accelerate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


def launch_command(
    args: list[str], *, processes: int = 1, module: bool = False, port: int | None = None, script: Path | None = None
) -> list[str]:
    """The ``accelerate launch`` command line for ``recipes/train.py ARGS`` (``-m accel_recipes.train ARGS``, the
    console entry point's module, when ``module``; ``script ARGS`` when given)."""
    topology = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    command = [*accelerate_command(), "launch", *topology, "--num_machines", "1", "--dynamo_backend", "no"]
    if port is not None:
        command += ["--main_process_port", str(port)]
    entry = ["-m", "accel_recipes.train"] if module else [str(script or ROOT / "recipes" / "train.py")]
    return [*command, *entry, *args]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_env(processes: int = 1) -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1" if processes > 1 else "2"}


def launch(
    args: list[str],
    *,
    processes: int = 1,
    timeout: int = 900,
    check: bool = True,
    module: bool = False,
    script: Path | None = None,
    **popen,
) -> subprocess.CompletedProcess:
    """`accelerate launch [--multi_gpu --num_processes N] recipes/train.py ARGS`, as a user runs it; ``popen`` goes
    to ``subprocess.run`` (e.g. a ``preexec_fn``).

    On a machine without GPUs, `--multi_gpu --num_processes 2` starts two CPU processes talking over gloo
    (`--cpu --num_processes 2` would start only one)."""
    port = free_port() if processes > 1 else None  # not the default 29500, which a concurrent run may hold
    command = launch_command(args, processes=processes, module=module, port=port, script=script)
    result = subprocess.run(command, cwd=ROOT, env=launch_env(processes), capture_output=True, text=True,
                            timeout=timeout, **popen)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"training failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


SUBPROCESS_THREADS = 1  # torch threads of ``start_training``'s run; ``train(threads=...)`` matches it


def start_training(args: list[str], **popen) -> subprocess.Popen:
    """``python recipes/train.py ARGS`` started in the background, for the tests that kill or signal it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(SUBPROCESS_THREADS)}
    command = [sys.executable, str(ROOT / "recipes" / "train.py"), *args]
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(command, cwd=ROOT, env=env, **options)


def wait_for_update(output_dir: Path, update: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until metrics.jsonl logs ``update`` (the run logs every update); fails at once if the process died."""
    metrics = output_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the run ended ({process.returncode}) before update {update}:\n{stderr[-3000:]}")
        if metrics.exists() and any(record.get("step", 0) >= update for record in read_jsonl(metrics)):
            return
        time.sleep(0.02)
    raise TimeoutError(f"update {update} not reached")


# ---- training in process: what a run of recipes/train.py does, without starting Python again ------------------
@dataclass
class Finished:
    """What ``recipes/train.py ARGS`` would have given: its exit code and what it printed (warnings included)."""

    exit_code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def fresh_process() -> Iterator[None]:
    """Run the block as if in a new process, and leave this one as it was: Accelerate's process singletons are
    reset before and after (a second Accelerator with another mixed precision is refused otherwise), and what a
    run changes globally is put back (RNGs, torch threads, signal handlers, logging handlers, environment, cwd)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    def reset_accelerate() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()
        GradientState._reset_state()

    rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    threads, grad_enabled = torch.get_num_threads(), torch.is_grad_enabled()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    environment, cwd = dict(os.environ), os.getcwd()
    reset_accelerate()
    try:
        yield
    finally:
        reset_accelerate()
        torch._dynamo.reset()  # compiled graphs hold the run's model; a later run compiles its own
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad_enabled)
        for number, handler in handlers.items():
            signal.signal(number, handler)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(cwd)


@pytest.fixture
def in_fresh_process() -> Iterator[None]:
    """For tests that call ``run.train`` / ``run.main`` themselves: see ``fresh_process``."""
    with fresh_process():
        yield


def train(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, threads: int | None = None
) -> Finished:
    """``recipes/train.py ARGS`` in this process: the same ``main`` the script calls, with ``env`` added to the
    environment, ``cwd`` as the working directory and ``threads`` torch threads (a run compared bitwise with one in a
    subprocess must use as many as ``start_training`` gives it: float sums split over threads round differently).
    Warnings logged during the run land in ``stderr``, as Python prints them in a script that configures none."""
    from accel_recipes import run

    stdout, stderr = io.StringIO(), io.StringIO()
    warnings = logging.StreamHandler(stderr)
    warnings.setLevel(logging.WARNING)
    with fresh_process():
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        if threads is not None:
            torch.set_num_threads(threads)
        logging.getLogger().addHandler(warnings)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            exit_code = run.main([str(arg) for arg in args])
    return Finished(exit_code, stdout.getvalue(), stderr.getvalue())


def train_ok(args: list[str], **options) -> Finished:
    """``train``, failing the test with the run's output unless it finished (exit code 0)."""
    finished = train(args, **options)
    assert finished.exit_code == 0, f"training failed ({finished.exit_code}):\n{finished.stderr[-6000:]}"
    return finished


# ---- reading a run's outputs ------------------------------------------------------------------------------------
def read_results(output_dir: Path) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


RESULT_KEYS = {
    "train_runtime",
    "train_samples_per_second",
    "eval_loss",
    "eval_accuracy",
    "eval_f1",
    "test_loss",
    "test_accuracy",
    "test_f1",
    "skipped_updates",
}


def assert_complete_run(output_dir: Path) -> dict:
    """The files of a finished run, finite results, safetensors only, a loss and an evaluation logged."""
    for name in ("config.yaml", "metrics.jsonl", "all_results.json", "learning_curves.png"):
        assert (output_dir / name).is_file(), name
    results = read_results(output_dir)
    assert set(results) >= RESULT_KEYS
    assert all(math.isfinite(results[key]) for key in RESULT_KEYS)
    assert results["train_runtime"] > 0 and results["train_samples_per_second"] > 0
    model_dir = output_dir / "model"
    assert list(model_dir.glob("*.safetensors")), "the model is saved as safetensors"
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pt"))
    records = read_jsonl(output_dir / "metrics.jsonl")
    assert any("loss" in record for record in records) and any("eval_accuracy" in record for record in records)
    return results


def same_weights(first: Path, second: Path) -> bool:
    """Whether two safetensors (or torch.save'd) state dicts hold the same keys and bitwise equal tensors."""
    from safetensors.torch import load_file

    a, b = (load_file(path) if path.suffix == ".safetensors" else torch.load(path) for path in (first, second))
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# ---- tiny data sets, each built once per session (tests that change one copy it first) ---------------------------
@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def cifar10_hub(data_root) -> Path:
    """uoft-cs/cifar10's schema, 10 classes: 120 training images (12 held out for validation), 50 test images."""
    import datagen

    return datagen.make_cifar_hub_dataset(data_root / "cifar10", num_classes=10, train_per_class=12)


@pytest.fixture(scope="session")
def cifar4_hub(data_root) -> Path:
    """cifar10's schema with 4 classes: 80 training images (8 held out), 20 test images; the reliability runs'."""
    import datagen

    return datagen.make_cifar_hub_dataset(data_root / "cifar4", num_classes=4, train_per_class=20)


@pytest.fixture(scope="session")
def cifar3_hub(data_root) -> Path:
    """cifar10's schema with 3 classes (a class count other than ``cifar4_hub``'s)."""
    import datagen

    return datagen.make_cifar_hub_dataset(data_root / "cifar3", num_classes=3, train_per_class=20)


@pytest.fixture(scope="session")
def cifar100_python(data_root) -> Path:
    """The CIFAR-100 python batches as the official tarball unpacks, one training and one test image per class."""
    import datagen

    return datagen.make_cifar_python(data_root / "cifar100-python", "cifar100", per_class_train=1, per_class_test=1)


@pytest.fixture(scope="session")
def image_folder(data_root) -> Path:
    """train/, validation/ and test/ folders of 16 px PNGs, 2 classes: 16 training, 8 validation, 8 test images."""
    import datagen

    return datagen.make_image_folder(data_root / "folder", num_classes=2, per_class=8, size=16, with_validation=True)


@pytest.fixture(scope="session")
def image_folder_odd(data_root) -> Path:
    """train/ and test/ folders, 3 classes of 15: 45 training images, so a 20% validation split holds 9 (odd)."""
    import datagen

    return datagen.make_image_folder(data_root / "folder-odd", num_classes=3, per_class=15)


@pytest.fixture(scope="session")
def one_class_folder(data_root) -> Path:
    import datagen

    return datagen.make_image_folder(data_root / "one-class", num_classes=1, per_class=8, size=16, with_test=False)


# ---- one finished run, read by every test that only reads a run's outputs ----------------------------------------
FINISHED_RUN_ARGS = [
    "--model_name_or_path", "test_efficientnet",  # a standard timm model: loads with timm alone (test_load_anywhere)
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "8",
    "--learning_rate", "0.05",
    "--num_train_epochs", "2",  # 16 images, batches of 8: 4 updates
    "--save_total_limit", "3",
    "--logging_steps", "1",
    "--run_name", "tiny",
    "--report_to", "tensorboard,trackio,wandb",
    "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="session")
def finished_run(image_folder, tmp_path_factory) -> Path:
    """The output_dir of one tiny finished run on ``image_folder`` (2 epochs of 2 updates, a checkpoint each epoch)
    reporting to TensorBoard, trackio and wandb (offline). Read only: a test that needs to change it copies it.
    It trains with a working directory of its own (``finished_run.parent / "cwd"``), which must stay empty."""
    root = tmp_path_factory.mktemp("finished")
    (root / "cwd").mkdir()
    output_dir = root / "run"
    # WANDB_CONSOLE off: wandb would otherwise wrap sys.stdout / sys.stderr for the rest of the session
    env = {"WANDB_MODE": "offline", "WANDB_CONSOLE": "off", "WANDB_SILENT": "true"}
    train_ok(["--dataset_name", image_folder, "--output_dir", output_dir, *FINISHED_RUN_ARGS], env=env,
             cwd=root / "cwd")  # fmt: skip
    return output_dir


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Local folders holding only a transformers config.json, as users point at for training from scratch (the
    tests of ``accel_recipes.models``). Here, not in a tests/models/conftest.py: a second module named ``conftest``
    would shadow this one for the tests that import ROOT or launch from it."""
    from tiny_models import tiny_configs  # tests/models/, on sys.path once one of its test modules is collected

    root = tmp_path_factory.mktemp("hf-configs")
    folders = {}
    for kind, config in tiny_configs().items():
        config.save_pretrained(root / kind)
        folders[kind] = root / kind
    return folders
