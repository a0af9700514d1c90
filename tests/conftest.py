"""Shared fixtures: the repository root and a runner of `accelerate launch recipes/train.py` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/datagen.py importable as `datagen`


def accelerate_command() -> list[str]:
    script = Path(sys.executable).with_name("accelerate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


def launch(
    args: list[str], *, processes: int = 1, timeout: int = 900, check: bool = True
) -> subprocess.CompletedProcess:
    """`accelerate launch [--multi_gpu --num_processes N] recipes/train.py ARGS`, as a user runs it.

    On a machine without GPUs, `--multi_gpu --num_processes 2` starts two CPU processes talking over gloo
    (`--cpu --num_processes 2` would start only one)."""
    topology = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    command = [*accelerate_command(), "launch", *topology, "--num_machines", "1", "--dynamo_backend", "no"]
    command += [str(ROOT / "recipes" / "train.py"), *args]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1" if processes > 1 else "2"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"training failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def read_results(output_dir: Path) -> dict:
    return json.loads((output_dir / "all_results.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


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
