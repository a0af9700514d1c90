"""The runner: each run's environment, and a failed run described by its own error."""

from __future__ import annotations

import json

from accel_recipes.bench.ablate.runner import PlannedRun, _last_error, finished_record, run_environment


def test_cpu_runs_get_the_thread_count_and_the_callers_openmp_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = run_environment(threads=2)
    assert env["OMP_NUM_THREADS"] == "2" and "OMP_WAIT_POLICY" not in env  # OpenMP's default: fastest alone
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert run_environment(threads=2)["OMP_WAIT_POLICY"] == "PASSIVE"  # the user's choice is kept
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" in run_environment(threads=None)  # on a GPU machine nothing is changed


def test_a_failed_run_is_described_by_its_own_error(tmp_path):
    log = tmp_path / "launch.log"
    log.write_text(
        "Traceback (most recent call last):\n  File x\nValueError: bad value\n"
        "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1.\n"
    )
    assert _last_error(log) == "ValueError: bad value"
    log.write_text("error: output_dir 'x' already holds a run\nTraceback\nsubprocess.CalledProcessError: 1\n")
    assert _last_error(log) == "error: output_dir 'x' already holds a run"


def test_a_finished_run_is_read_from_its_folder(tmp_path):
    run = PlannedRun("amp", 2, tmp_path / "amp" / "run-2", {})
    run.output_dir.mkdir(parents=True)
    (run.output_dir / "launch.log").write_text("RuntimeError: the run's own failure\n")
    (run.output_dir / "all_results.json").write_text(json.dumps({"test_accuracy": 0.5}))
    (run.output_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    record = finished_record(run, 0, 12.5)
    assert record.ok and (record.arm, record.repeat, record.wall_seconds) == ("amp", 2, 12.5)
    assert record.results == {"test_accuracy": 0.5} and record.metrics == [{"step": 1, "loss": 2.0}]
    failed = finished_record(run, 1, 3.0)  # results left by an earlier run do not count
    assert not failed.ok and failed.results is None and failed.error == "RuntimeError: the run's own failure"
