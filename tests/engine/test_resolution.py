"""``ResolutionPhases``, the loop's side of the resolution schedule: what each micro-batch becomes, and one record
per progressive phase with the training time and samples between its first and its last update."""

from __future__ import annotations

import torch

from accel_recipes.checkpoints import RunState
from accel_recipes.data.size_schedule import SizeSchedule
from accel_recipes.engine.resolution import ResolutionPhases
from accel_recipes.reporting import MetricsLog, read_metrics


class Clock:
    """The monitor's timing as the loop drives it: seconds advance only while a segment is open."""

    def __init__(self, state: RunState) -> None:
        self.state, self.open = state, False

    def start_timing(self) -> None:
        self.open = True

    def stop_timing(self) -> None:
        assert self.open, "a phase boundary must close a running segment"
        self.state.train_seconds += 1.0


class Printer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, line: str) -> None:
        self.lines.append(line)


def test_each_update_trains_at_its_size_and_each_phase_is_reported_once(tmp_path):
    state = RunState()
    clock, printer = Clock(state), Printer()
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    phases = ResolutionPhases(SizeSchedule((8, 16), "progressive", total_updates=4), clock, log, printer)
    clock.start_timing()
    shapes = []
    for update in range(4):
        state.update = update
        for _ in range(2):  # two micro-batches of 4 images per update: both at the update's size
            images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
            shapes.append(tuple(phases(images, state).shape[-2:]))
            state.train_samples += 4
    state.update = 4
    phases.report(state)

    assert shapes == [(8, 8)] * 4 + [(16, 16)] * 4
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["train_image_size"], r["phase_first_step"], r["step"], r["phase_samples"]) for r in records] == [
        (8, 1, 2, 16),
        (16, 3, 4, 16),
    ]
    assert printer.lines[0] == "resolution phase 1/2: 8 px, updates 1-2, 16.0 images/s"


def test_a_resumed_run_reports_its_phase_from_the_resume_on():
    state = RunState(update=3, train_samples=24, train_seconds=10.0)  # resumed inside the last of 3 phases
    printer = Printer()
    phases = ResolutionPhases(
        SizeSchedule((8, 12, 16), "progressive", 6), Clock(state), MetricsLog(None, False), printer
    )
    phases.monitor.start_timing()
    assert phases(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), state).shape[-1] == 12
    assert printer.lines == []  # nothing ran of a phase before the resume in this process
    state.update, state.train_samples = 4, 32
    assert phases(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), state).shape[-1] == 16
    assert printer.lines == ["resolution phase 2/3: 12 px, updates 4-4, 8.0 images/s"]
