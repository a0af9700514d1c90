"""Stop requests: a trainer under a launcher is told when the launcher dies; one started from a shell is not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from accel_recipes.signals import LAUNCHER_VARIABLES, launched_by_a_launcher

ORPHAN = """
import os, signal, subprocess, sys, time
from accel_recipes.signals import stop_with_launcher
if sys.argv[1] == "launcher":  # starts the trainer, then dies without a word, as a killed launcher does
    subprocess.Popen([sys.executable, "-c", sys.argv[2], "trainer", sys.argv[3]])
    while not os.path.exists(sys.argv[3] + ".ready"):  # the trainer has set itself up
        time.sleep(0.05)
    os._exit(0)
received = []
signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
set_up = stop_with_launcher()
open(sys.argv[2] + ".ready", "w").close()
deadline = time.monotonic() + 4  # the kernel signals at once; from a shell, nothing comes
while not received and time.monotonic() < deadline:
    time.sleep(0.05)
open(sys.argv[2], "w").write(f"{set_up} {bool(received)}")
"""


def test_launched_by_a_launcher_reads_the_launchers_variables(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_a_launcher()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert launched_by_a_launcher()


@pytest.mark.slow  # two Python processes each importing torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("under_a_launcher", [True, False])
def test_a_trainer_gets_sigterm_when_its_launcher_dies(tmp_path, under_a_launcher):
    report = tmp_path / "report"
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    if under_a_launcher:
        env["ACCELERATE_USE_CPU"] = "False"  # what `accelerate launch` sets
    subprocess.run([sys.executable, "-c", ORPHAN, "launcher", ORPHAN, str(report)], env=env, timeout=60, check=True)
    deadline = time.monotonic() + 30
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    expected = "True True" if under_a_launcher else "False False"
    assert report.read_text() == expected
