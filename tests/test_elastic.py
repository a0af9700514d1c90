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
