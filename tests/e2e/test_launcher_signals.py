"""Stop signals sent to the launcher (one and two processes) or to the whole process group, as container runtimes
and schedulers send them: every trainer checkpoints at the signal, none is left running, and a resume finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, free_port, launch_command, launch_env, read_results, train_ok, wait_for_update

from accel_recipes.checkpoints import checkpoint_damage, list_checkpoints

pytestmark = pytest.mark.slow

MAX_STEPS = 24


def arguments(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset), "--output_dir", str(output_dir), "--model_name_or_path", "test_vit",
        "--per_device_train_batch_size", "4", "--max_steps", str(MAX_STEPS), "--logging_steps", "1",
        "--save_strategy", "no", "--eval_strategy", "no", "--augmentation", "none", "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def start_launcher(dataset: Path, output_dir: Path, processes: int) -> subprocess.Popen:
    command = launch_command(arguments(dataset, output_dir), processes=processes, port=free_port())
    env = {**launch_env(processes), "OMP_NUM_THREADS": "1"}
    # a session of its own: the process group can be signalled without signalling pytest
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def trainers_of(launcher: subprocess.Popen, count: int, timeout: float = 120) -> list[psutil.Process]:
    """The trainer processes under the launcher (python processes running recipes/train.py), once all started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.communicate()[1].decode()[-3000:]
        found = []
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if any(part.endswith("train.py") for part in child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        if len(found) == count:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"{count} trainer process(es) did not start")


@pytest.mark.parametrize(
    ("processes", "signal_name", "target"),
    # one process: Accelerate's launcher dies at the signal, the trainer is told by the kernel (stop_with_launcher);
    # two: torchrun dies at SIGUSR1, which it does not forward; a group signal reaches every process at once
    [(1, "SIGTERM", "launcher"), (2, "SIGUSR1", "launcher"), (2, "SIGTERM", "group")],
)
def test_a_signal_to_the_launcher_or_its_group_checkpoints_every_trainer(
    cifar4_hub, tmp_path, processes, signal_name, target
):
    dataset = cifar4_hub
    output_dir = tmp_path / "run"
    launcher = start_launcher(dataset, output_dir, processes)
    trainers = trainers_of(launcher, processes)
    wait_for_update(output_dir, 2, launcher)
    number = getattr(signal, signal_name)
    if target == "group":
        os.killpg(launcher.pid, number)
    else:
        launcher.send_signal(number)
    _, stderr = launcher.communicate(timeout=180)
    gone, alive = psutil.wait_procs(trainers, timeout=120)
    assert not alive, f"trainers left running after the launcher exited: {alive}"
    # the trainers are not this test's children, so their exit codes cannot be read here; each one says it
    # stopped after the checkpoint (the line that comes with exit code 75)
    assert stderr.decode().count("stopped: received SIGTERM: saved") == processes, stderr.decode()[-3000:]
    checkpoints = list_checkpoints(output_dir / "checkpoints")
    assert len(checkpoints) == 1, "one collective checkpoint at the signal"
    assert checkpoint_damage(checkpoints[0]) is None
    assert 2 <= int(checkpoints[0].name.split("-")[1]) < MAX_STEPS
    assert not (output_dir / "all_results.json").exists()

    # the resume is no matter of processes: it trains in this one
    resumed = train_ok([*arguments(dataset, output_dir), "--resume_from_checkpoint", "latest"])
    assert f"resumed from {checkpoints[0]}" in resumed.stdout
    assert read_results(output_dir)["train_updates"] == MAX_STEPS
