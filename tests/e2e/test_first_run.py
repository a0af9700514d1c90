"""`make train` and `make demo` as a new user first meets them: a user error is our one line and a non-zero
exit, not the launcher's defaults block and a CalledProcessError traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
]

VENV = Path(sys.executable).parent.parent  # the environment running the tests stands in for make's .venv


def make(target: str, *variables: str) -> subprocess.CompletedProcess:
    # -o: take the venv as set up (no pip install); the rest is the target exactly as a user runs it
    command = ["make", "-s", "-o", f"{VENV}/.installed", target, f"VENV={VENV}", *variables]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_one_clear_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr
    assert "were not passed to `accelerate launch`" not in result.stdout + result.stderr


def test_make_train_with_a_mistyped_field_prints_one_line(tmp_path):
    result = make("train", "ARGS=--learning_rat 0.1")
    assert_one_clear_error(result, "unknown key 'learning_rat'")


def test_make_demo_without_the_data_prints_one_line(tmp_path):
    (tmp_path / "fashion-mnist").mkdir()
    result = make("demo", f"FASHION_MNIST={tmp_path / 'fashion-mnist'}", f"ARGS=--output_dir {tmp_path / 'run'}")
    assert_one_clear_error(result, str(tmp_path / "fashion-mnist"))
