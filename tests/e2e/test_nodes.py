"""Two machines on one host and elastic restarts, run as a user runs them: `accelerate launch --num_machines 2
--machine_rank 0|1` (gloo on the CPU), with output_dir one folder both nodes see or a folder of each node's own
(``save_on_each_node``); a node killed with kill -9 and a worker killed under `--max_restarts`. Each ends as the same
global batch trained by two processes on one machine: bit for bit with two processes in all, within float summation
order with four. The launchers' output goes to pipes read at the end: about a kilobyte a machine, far below a pipe's
buffer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import (
    ROOT,
    accelerate_command,
    free_port,
    launch,
    launch_env,
    read_jsonl,
    read_results,
    same_weights,
    wait_for_update,
)

from accel_recipes.checkpoints import checkpoint_damage

pytestmark = pytest.mark.slow

TRAIN_SCRIPT = str(ROOT / "recipes" / "train.py")
UPDATES = 8  # 2 epochs of 4 updates: 72 training images, a global batch of 16


def run_args(dataset: Path, output_dir: str | Path, per_device: int, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset), "--output_dir", str(output_dir), "--model_name_or_path", "test_vit",
        "--per_device_train_batch_size", str(per_device), "--per_device_eval_batch_size", "16",
        "--learning_rate", "0.05", "--num_train_epochs", "2", "--logging_steps", "1", "--save_strategy", "steps",
        "--save_steps", "2", "--save_total_limit", "2", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def one_machine(cifar4_hub, tmp_path_factory) -> Path:
    """Two processes on one machine, a micro-batch of 8 each: the run every other one here must end equal to."""
    output_dir = tmp_path_factory.mktemp("one-machine") / "run"
    launch(run_args(cifar4_hub, output_dir, 8), processes=2)
    return output_dir


def start_node(rank: int, port: int, per_node: int, args: list[str], cwd: Path) -> subprocess.Popen:
    """One machine of two: `accelerate launch --num_machines 2 --machine_rank RANK ...` in ``cwd``."""
    command = [
        *accelerate_command(), "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--num_processes", str(2 * per_node),
        "--dynamo_backend", "no", TRAIN_SCRIPT, *args,
    ]  # fmt: skip
    env = {**launch_env(2), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_nodes(args: list[str], per_node: int, cwds: list[Path], timeout: float = 300) -> list[str]:
    """Both machines to the end; their output (stdout and stderr), failing unless both exit 0."""
    port = free_port()
    nodes = [start_node(rank, port, per_node, args, cwd) for rank, cwd in enumerate(cwds)]
    outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    for rank, (node, output) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank} failed ({node.returncode}):\n{output[-6000:]}"
    return outputs


def kill_9(launcher: subprocess.Popen) -> None:
    """kill -9 of a whole machine: its launcher and every process under it at once."""
    tree = [*psutil.Process(launcher.pid).children(recursive=True), psutil.Process(launcher.pid)]
    for process in tree:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)


@pytest.mark.parametrize(
    ("layout", "per_node"),
    # one output_dir both nodes mount; the same relative output_dir on each node's own disk (here: each node's own
    # working directory), where node 1's local main (process 1) writes checkpoints and the main process does not.
    # One process per node keeps the suite's time; two per node share their node's checkpoints as any two processes
    # of one machine do (the two-process tests)
    [("shared", 1), ("node-local", 1)],
)
def test_two_machines_survive_a_killed_node_and_end_as_one_machine(cifar4_hub, one_machine, tmp_path, layout, per_node):
    if layout == "shared":
        cwds = [ROOT, ROOT]
        output_dir, folders = str(tmp_path / "run"), [tmp_path / "run"] * 2
        extra: list[str] = []
    else:
        cwds = [tmp_path / "node0", tmp_path / "node1"]
        for cwd in cwds:
            cwd.mkdir()
        output_dir, folders = "run", [cwd / "run" for cwd in cwds]
        extra = ["--save_on_each_node", "true"]
    args = run_args(cifar4_hub, output_dir, 16 // (2 * per_node), *extra, "--resume_from_checkpoint", "latest")

    port = free_port()
    nodes = [start_node(rank, port, per_node, args, cwd) for rank, cwd in enumerate(cwds)]
    wait_for_update(folders[0], 5, nodes[0])  # checkpoint-4 is whole on both nodes
    kill_9(nodes[1])
    output = nodes[0].communicate(timeout=180)[0]
    assert nodes[0].returncode != 0, "the main node stops when the other one is gone"
    assert not (folders[0] / "all_results.json").exists(), output[-3000:]
    processes = range(2 * per_node)
    for rank, folder in enumerate(folders):  # each node holds what it resumes from: the weights, its RNG states
        checkpoint = folder / "checkpoints" / "checkpoint-4"
        assert checkpoint_damage(checkpoint) is None
        assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "optimizer.bin").is_file()
        own = processes if layout == "shared" else processes[rank * per_node : (rank + 1) * per_node]
        assert {path.name for path in checkpoint.glob("random_states_*")} == {f"random_states_{i}.pkl" for i in own}

    outputs = run_nodes(args, per_node, cwds)
    assert "resumed from" in outputs[0], outputs[0][-3000:]
    ours, theirs = read_results(folders[0]), read_results(one_machine)
    assert ours["num_processes"] == 2 * per_node
    for key in ("train_updates", "global_batch_size", "best_update"):
        assert ours[key] == theirs[key], key
    if per_node == 1:  # the same two processes' sums: bit for bit
        assert same_weights(folders[0] / "model" / "model.safetensors", one_machine / "model" / "model.safetensors")
        assert ours["eval_loss"] == theirs["eval_loss"] and ours["test_accuracy"] == theirs["test_accuracy"]
    else:  # the same samples in every update; only the order of float sums differs (4 x 4 images against 2 x 8)
        assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-3)
    # what only the main process of the whole run writes is written once: one line per update, and nothing of it
    # in the other node's own folder
    steps = [record["step"] for record in read_jsonl(folders[0] / "metrics.jsonl") if "loss" in record]
    assert steps == list(range(1, UPDATES + 1))
    if layout == "node-local":
        assert sorted(path.name for path in folders[1].iterdir()) == ["checkpoints"]


def test_folders_of_their_own_without_save_on_each_node_are_refused_before_training(cifar4_hub, tmp_path):
    """The layout check needs no launcher: each trainer gets the variables torchrun gives one process per machine."""
    port = free_port()
    trainers = []
    for rank in range(2):
        cwd = tmp_path / f"node{rank}"
        cwd.mkdir()
        torchrun = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                    "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": str(rank)}  # fmt: skip
        env = {**launch_env(2), "OMP_NUM_THREADS": "1", **torchrun}
        command = [sys.executable, TRAIN_SCRIPT, *run_args(cifar4_hub, "run", 8)]
        options = {"cwd": cwd, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        trainers.append(subprocess.Popen(command, **options))
    outputs = [trainer.communicate(timeout=180)[0] for trainer in trainers]
    assert [trainer.returncode for trainer in trainers] == [2, 2], outputs[0][-3000:]
    assert "error: output_dir 'run' is not one folder shared by the 2 nodes: process(es) 1 do not see" in outputs[0]
    assert "--save_on_each_node true" in outputs[1]
    assert not (tmp_path / "node0" / "run" / "checkpoints").exists()


def test_an_elastic_restart_resumes_from_the_newest_checkpoint_by_itself(cifar4_hub, one_machine, tmp_path):
    output_dir = tmp_path / "run"
    port = free_port()
    command = [
        *accelerate_command(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--max_restarts", "1", "--rdzv_backend", "c10d", "--dynamo_backend", "no", TRAIN_SCRIPT,
        *run_args(cifar4_hub, output_dir, 8),
    ]  # fmt: skip
    # PET_RDZV_ENDPOINT: torchrun's own variable for --rdzv-endpoint (the default, port 29400, may be taken here)
    env = {**launch_env(2), "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
           "PET_RDZV_ENDPOINT": f"127.0.0.1:{port}"}  # fmt: skip
    launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_update(output_dir, 5, launcher)
    workers = [child for child in psutil.Process(launcher.pid).children(recursive=True)
               if any(part.endswith("train.py") for part in child.cmdline())]  # fmt: skip
    assert len(workers) == 2
    workers[1].send_signal(signal.SIGKILL)
    output = launcher.communicate(timeout=300)[0]
    assert launcher.returncode == 0, output[-6000:]
    assert "restarted by the elastic agent (TORCHELASTIC_RESTART_COUNT=1)" in output
    assert f"resumed from {output_dir / 'checkpoints'}" in output
    assert same_weights(output_dir / "model" / "model.safetensors", one_machine / "model" / "model.safetensors")
    steps = [record["step"] for record in read_jsonl(output_dir / "metrics.jsonl") if "loss" in record]
    assert steps == list(range(1, UPDATES + 1)), "the updates after the checkpoint are logged once"
