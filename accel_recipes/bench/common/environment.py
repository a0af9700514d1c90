"""What a benchmark ran on and when: the device, the CPU, the software and the date that every report starts with."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import torch


def default_device() -> torch.device:
    """The device a one-process run trains on: the accelerator when there is one, else the CPU."""
    if torch.accelerator.is_available():
        return torch.device(torch.accelerator.current_accelerator().type, 0)
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """A GPU's model name; the device type for any other device."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def software_versions() -> str:
    import accelerate
    import timm

    return (
        f"torch {torch.__version__}, accelerate {accelerate.__version__}, timm {timm.__version__}, "
        f"Python {platform.python_version()}"
    )


def describe_device(device: str, processes: int, cpu_threads: str) -> str:
    """``device`` (a GPU's name or a device type) and the process count; on a CPU, the CPU's model and
    ``cpu_threads``, how many threads the processes use (``2 thread(s)``)."""
    if device == "cpu":
        device = f"CPU: {cpu_name()}, {cpu_threads}"
    return f"{device}; {processes} process(es)"


def environment_facts(
    command: str, device: str, processes: int, cpu_threads: str, started: str | None = None
) -> dict[str, str]:
    """The first facts of a report: the command, the date (from ``started`` to now when given), the device
    (``describe_device``) and the software."""
    return {
        "command": command,
        "date": f"{started} to {utc_now()}" if started else utc_now(),
        "device": describe_device(device, processes, cpu_threads),
        "software": software_versions(),
    }
