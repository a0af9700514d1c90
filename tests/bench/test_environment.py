"""The machine, software and date every benchmark report starts with."""

from __future__ import annotations

import re

import torch

from accel_recipes.bench.common import environment
from accel_recipes.bench.common.environment import describe_device, device_name, environment_facts


def test_a_cpu_is_named_with_its_threads_and_a_gpu_by_its_name(monkeypatch):
    monkeypatch.setattr(environment, "cpu_name", lambda: "Test CPU 9000")
    assert describe_device("cpu", 1, "4 thread(s)") == "CPU: Test CPU 9000, 4 thread(s); 1 process(es)"
    assert describe_device("NVIDIA H200", 2, "unused") == "NVIDIA H200; 2 process(es)"
    assert device_name(torch.device("cpu")) == "cpu"


def test_facts_start_with_the_command_date_device_and_software(monkeypatch):
    monkeypatch.setattr(environment, "cpu_name", lambda: "Test CPU")
    facts = environment_facts("python recipes/x.py --a 1", "cpu", 1, "2 thread(s)")
    assert list(facts) == ["command", "date", "device", "software"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", facts["date"])
    assert facts["device"] == "CPU: Test CPU, 2 thread(s); 1 process(es)"
    assert facts["software"].startswith(f"torch {torch.__version__}, accelerate ") and "Python 3." in facts["software"]
    dated = environment_facts("c", "mps", 1, "", started="2026-01-01 10:00 UTC")["date"]
    assert dated.startswith("2026-01-01 10:00 UTC to ")
