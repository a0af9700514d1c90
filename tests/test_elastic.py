"""Restarts by torchrun's elastic agent: a restarted group resumes from the newest checkpoint by itself, and
``--max_restarts`` under a launcher whose restarted group could not connect is refused before training.
(`tests/e2e/test_nodes.py` kills a worker under the real agent.)"""

from __future__ import annotations

import json

import pytest
from conftest import read_jsonl, train_ok
from test_checkpoints import make_checkpoint

from accel_recipes.config import make_args
from accel_recipes.elastic import check_restartable, resume_after_restart
from accel_recipes.errors import ConfigError


def test_max_restarts_under_a_shared_rendezvous_store_is_refused(monkeypatch):
    check_restartable()  # no agent
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # what torchrun sets under --rdzv_backend static
    with pytest.raises(ConfigError, match="--rdzv_backend c10d --max_restarts N"):
        check_restartable()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # c10d with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    check_restartable()
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # static without restarts: nothing to refuse
    check_restartable()


def test_a_restarted_group_resumes_from_latest_and_says_so(monkeypatch, tmp_path):
    messages: list[str] = []
    training = make_args({"output_dir": str(tmp_path / "run")}).training
    resume_after_restart(training, messages.append)
    assert training.resume_from_checkpoint is None and not messages  # the first start

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    resume_after_restart(training, messages.append)
    assert training.resume_from_checkpoint == "latest"
    assert "restarted by the elastic agent (TORCHELASTIC_RESTART_COUNT=1)" in messages[-1]

    # a checkpoint named on the command line: the start again until the run has saved one of its own
    elsewhere = make_checkpoint(tmp_path / "other" / "checkpoints", 4)
    training.resume_from_checkpoint = str(elsewhere)
    resume_after_restart(training, messages.append)
    assert training.resume_from_checkpoint == str(elsewhere) and "again" in messages[-1]
    make_checkpoint(tmp_path / "run" / "checkpoints", 6)
    resume_after_restart(training, messages.append)
    assert training.resume_from_checkpoint == "latest"


def test_a_group_restarted_before_its_first_checkpoint_starts_over_and_logs_each_update_once(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    # what the dead group logged before it could save
    stale = [json.dumps({"step": step, "loss": 9.0}) + "\n" for step in (1, 2)]
    (output_dir / "metrics.jsonl").write_text("".join(stale))
    args = [
        "--dataset_name",
        image_folder,
        "--output_dir",
        output_dir,
        "--model_name_or_path",
        "test_vit",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
    ]
    finished = train_ok(args, env={"TORCHELASTIC_RESTART_COUNT": "1"})  # fmt: skip
    assert "restarted by the elastic agent (TORCHELASTIC_RESTART_COUNT=1)" in finished.stdout
    assert "yet: starting from scratch" in finished.stdout
    losses = [record for record in read_jsonl(output_dir / "metrics.jsonl") if "loss" in record]
    assert [record["step"] for record in losses] == [1, 2] and all(record["loss"] != 9.0 for record in losses)


def test_a_named_checkpoint_stays_the_start_until_the_run_saved_one_above_it(monkeypatch, tmp_path):
    """--resume_from_checkpoint run/checkpoints/checkpoint-500 while an earlier run's checkpoint-1000 (and a 300) is
    there: the first start moves 1000 aside before its first save, and a restarted group starts from 500 again until
    the run has saved a whole checkpoint above 500; then it resumes from that one."""
    from accel_recipes.checkpoints import STATE_FILE, resolve_checkpoint
    from accel_recipes.run import clear_others_checkpoints

    directory = tmp_path / "run" / "checkpoints"
    for update in (300, 500, 1000):
        make_checkpoint(directory, update)
    start = str(directory / "checkpoint-500")
    training = make_args({"output_dir": str(tmp_path / "run"), "resume_from_checkpoint": start}).training
    messages: list[str] = []
    clear_others_checkpoints(training, directory / "checkpoint-500", messages.append)  # the first start

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    resume_after_restart(training, messages.append)  # 300 and 500 are no checkpoints of this run
    assert training.resume_from_checkpoint == start and "resuming from" in messages[-1] and "again" in messages[-1]
    damaged = make_checkpoint(directory, 600)
    (damaged / STATE_FILE).write_text('{"update": 600, "files": {"model.safetensors": 40}}')
    resume_after_restart(training, messages.append)
    assert training.resume_from_checkpoint == start
    own = make_checkpoint(directory, 700)
    resume_after_restart(training, messages.append)
    assert training.resume_from_checkpoint == "latest" and resolve_checkpoint(training, messages.append) == own


def test_a_restart_does_not_switch_to_lower_checkpoints_of_another_run(monkeypatch, tmp_path):
    """The named checkpoint lies in another run's folder and output_dir holds an older checkpoint-300: a restart
    before this run saved anything starts from the named one again, not from 300."""
    elsewhere = str(make_checkpoint(tmp_path / "other" / "checkpoints", 500))
    make_checkpoint(tmp_path / "run" / "checkpoints", 300)
    training = make_args({"output_dir": str(tmp_path / "run"), "resume_from_checkpoint": elsewhere}).training
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    resume_after_restart(training, lambda message: None)
    assert training.resume_from_checkpoint == elsewhere
