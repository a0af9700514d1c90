"""The runner: each run's environment, and a failed run described by its own error."""

from __future__ import annotations

from accel_recipes.bench.ablate.runner import _last_error, run_environment


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
