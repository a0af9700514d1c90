"""Pushing a run, exercised up to the HTTP boundary: ``huggingface_hub.HfApi`` is patched to record what would be
uploaded. The token never lands in a file, a log or a message; without a network or a token the push fails fast
with the retry command and leaves every file as it was; checkpoint pushes run on huggingface_hub's own futures
(``HfApi.run_as_future``), never block training, and each one is pushed or reported."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import RepoUrl
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file, save_file
from test_card import make_run_folder

from accel_recipes import hub, hub_access
from accel_recipes.hub import BackgroundPusher, HubError, push_main, push_run, upload_plan

TOKEN = "hf_SentinelTokenThatMustNeverBeWritten0123"


class FakeHub:
    """Stands in for the Hub: records create_repo, create_commit and upload_folder calls."""

    def __init__(self) -> None:
        self.repos: list[dict] = []
        self.commits: list[dict] = []  # {"repo_id", "files": {path_in_repo: bytes}, "message"}
        self.upload_delay = 0.0
        self.fail_with: Exception | None = None
        self.lock = threading.Lock()
        self.upload_threads: list[str] = []  # the thread each upload_folder call ran on
        self.futures: list = []  # what HfApi.run_as_future returned

    def install(self, monkeypatch) -> FakeHub:
        fake = self

        def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
            fake.repos.append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
            full = repo_id if "/" in repo_id else f"me/{repo_id}"
            return RepoUrl(f"https://huggingface.co/{full}")

        def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
            if fake.fail_with is not None:
                raise fake.fail_with
            files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
            fake.commits.append({"repo_id": repo_id, "files": files, "message": commit_message})

        def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
            fake.upload_threads.append(threading.current_thread().name)
            time.sleep(fake.upload_delay)
            if fake.fail_with is not None:
                raise fake.fail_with
            root = Path(folder_path)
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
            with fake.lock:
                fake.commits.append({"repo_id": repo_id, "files": files, "message": commit_message})

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        real_run_as_future = huggingface_hub.HfApi.run_as_future

        def run_as_future(self, fn, *args, **kwargs):  # huggingface_hub's own, recorded
            future = real_run_as_future(self, fn, *args, **kwargs)
            fake.futures.append(future)
            return future

        monkeypatch.setattr(huggingface_hub.HfApi, "run_as_future", run_as_future)
        return self


@pytest.fixture
def online(monkeypatch, tmp_path) -> FakeHub:
    """A logged-in user (HF_TOKEN) with a reachable (fake) Hub; the real HF home is never touched."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    return FakeHub().install(monkeypatch)


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run_folder(tmp_path, "test_vit", tensorboard=True)


def hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_token_nowhere(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# ---- push_run ---------------------------------------------------------------------------------------------------


def test_push_uploads_model_card_metrics_and_tensorboard_in_one_commit(online, run):
    url = push_run(run, "me/cifar10-vit", private=True)
    assert url == "https://huggingface.co/me/cifar10-vit"
    assert online.repos == [{"repo_id": "me/cifar10-vit", "private": True, "exist_ok": True}]
    [commit] = online.commits
    files = commit["files"]
    [events] = [name for name in files if name.startswith("runs/")]
    assert events.startswith("runs/run/events.out.tfevents.")
    assert set(files) == {
        "model.safetensors",
        "config.json",
        "README.md",
        "learning_curves.png",
        "config.yaml",
        "all_results.json",
        "metrics.jsonl",
        events,
    }
    assert files["model.safetensors"] == (run / "model" / "model.safetensors").read_bytes()
    assert files["metrics.jsonl"] == (run / "metrics.jsonl").read_bytes()
    assert b"hf-hub:me/cifar10-vit" in files["README.md"]  # the card was rendered for this repository


def test_a_name_without_namespace_gets_the_users_and_the_card_says_so(online, run):
    push_run(run, "cifar10-vit")
    assert online.commits[0]["repo_id"] == "me/cifar10-vit"
    assert b"hf-hub:me/cifar10-vit" in online.commits[0]["files"]["README.md"]


def test_the_token_is_written_nowhere(online, run, caplog, capsys):
    push_run(run, "me/cifar10-vit")
    assert_token_nowhere(run)
    for commit in online.commits:
        assert all(TOKEN.encode() not in content for content in commit["files"].values())
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err


def test_without_network_push_fails_fast_with_the_retry_command_and_changes_nothing(online, run, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    before = hashes(run)
    with pytest.raises(HubError) as raised:
        push_run(run, "me/cifar10-vit")
    message = str(raised.value)
    assert "no network connection to the Hugging Face Hub" in message
    assert f"python recipes/push.py {run} --hub_model_id me/cifar10-vit" in message
    assert hashes(run) == before
    assert online.repos == [] and online.commits == []


def test_without_a_token_push_says_how_to_log_in(online, run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    before = hashes(run)
    with pytest.raises(HubError, match="no Hugging Face token.*hf auth login") as raised:
        push_run(run, "me/x", private=True)
    assert raised.value.retry_command == f"python recipes/push.py {run} --hub_model_id me/x --private"
    assert hashes(run) == before and online.repos == []


def test_offline_mode_is_reported(online, run, monkeypatch):
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        push_run(run, "me/x")


@pytest.mark.parametrize("variable", ["HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_the_offline_message_names_the_variable_that_is_set(online, run, monkeypatch, variable):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_offline", hub_access.hub_offline)  # the real check, not the fixture's "online"
    monkeypatch.setenv(variable, "1")
    with pytest.raises(HubError, match=f"{variable} is set; unset it to push") as raised:
        push_run(run, "me/x")
    assert "HF_HUB_OFFLINE" not in str(raised.value)


def http_error(status: int, text: str) -> HfHubHTTPError:
    """The error huggingface_hub raises for an HTTP ``status``, with a response of the HTTP library it speaks
    (requests before 1.0, httpx in 1.x, httpx2 from 2.0)."""
    import importlib

    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])
    url = "https://huggingface.co/api/models/me/x/commit/main"
    if http.__name__ == "requests":
        response = http.Response()
        response.status_code, response.url = status, url
    else:
        response = http.Response(status, request=http.Request("POST", url))
    return HfHubHTTPError(text, response=response)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(403, "permission denied (HTTP 403)"), (401, "rejected the token (HTTP 401)"), (500, "answered HTTP 500")],
)
def test_http_errors_say_what_failed_without_the_token(online, run, status, expected):
    online.fail_with = http_error(status, f"refused for Bearer {TOKEN}")
    with pytest.raises(HubError) as raised:
        push_run(run, "me/x")
    assert expected in str(raised.value) and TOKEN not in str(raised.value)
    assert "python recipes/push.py" in str(raised.value)


def test_a_connection_lost_mid_upload_is_a_hub_error(online, run):
    online.fail_with = ConnectionResetError("connection reset by peer")
    with pytest.raises(HubError, match="ConnectionResetError.*check the network connection"):
        push_run(run, "me/x")


def test_upload_plan_leaves_out_checkpoints_and_temporaries(run):
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-5" / "events.out.tfevents.1.x").write_bytes(b"x")
    (run / "model" / ".README.md.tmp").write_text("half")
    plan = upload_plan(run)
    assert not [name for name in plan if "checkpoint" in name or name.endswith(".tmp")]
    assert plan["all_results.json"] == run / "all_results.json"


# ---- recipes/push.py --------------------------------------------------------------------------------------------


def test_push_script_pushes_a_finished_run(online, run, capsys):
    assert push_main([str(run), "--hub_model_id", "me/cifar10-vit"]) == 0
    assert "https://huggingface.co/me/cifar10-vit" in capsys.readouterr().out
    assert online.commits[0]["repo_id"] == "me/cifar10-vit"


def test_push_script_on_a_folder_that_is_not_a_run_says_what_is_missing(online, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert push_main([str(tmp_path), "--hub_model_id", "me/x"]) == 2
    assert "has no all_results.json, model/config.json" in capsys.readouterr().err
    assert online.repos == []


def test_push_script_without_network_exits_3_with_the_retry_command(online, run, monkeypatch, capsys):
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    assert push_main([str(run), "--hub_model_id", "me/x", "--private"]) == 3
    assert f"python recipes/push.py {run} --hub_model_id me/x --private" in capsys.readouterr().err


# ---- hub_strategy every_save ------------------------------------------------------------------------------------


def make_checkpoint(run: Path, update: int, prefix: str = "") -> Path:
    folder = run / "checkpoints" / f"checkpoint-{update}"
    folder.mkdir(parents=True)
    save_file({f"{prefix}head.weight": torch.full((2, 2), float(update))}, str(folder / "model.safetensors"))
    (folder / "optimizer.bin").write_bytes(b"pickled optimizer state: never pushed")
    (folder / "training_state.json").write_text(json.dumps({"update": update}))
    return folder


def test_checkpoint_push_does_not_block_training_and_close_waits(online, run):
    online.upload_delay = 0.6
    pusher = BackgroundPusher(run, "me/x")
    started = time.perf_counter()
    pusher.submit(make_checkpoint(run, 10))
    assert online.commits == []  # the training thread goes on while the upload runs
    pusher.close(wait=True)
    assert time.perf_counter() - started >= 0.6 and pusher.pushed == ["checkpoint-10"]
    [commit] = online.commits
    assert set(commit["files"]) >= {
        "last-checkpoint/model.safetensors",
        "last-checkpoint/training_state.json",
        "metrics.jsonl",
        "config.yaml",
    }
    assert not [name for name in commit["files"] if name.endswith((".bin", ".pkl", ".pt"))]
    assert commit["message"] == "Training in progress: checkpoint-10"
    assert not list(run.glob(".hub-push-*"))  # staging folders are cleaned up


def test_the_newest_checkpoint_wins_over_one_still_waiting(online, run):
    online.upload_delay = 0.4
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(make_checkpoint(run, 10))
    time.sleep(0.1)  # checkpoint-10 is uploading now
    pusher.submit(make_checkpoint(run, 20))
    pusher.submit(make_checkpoint(run, 30))  # replaces checkpoint-20, which never started
    pusher.close(wait=True)
    assert pusher.pushed == ["checkpoint-10", "checkpoint-30"]
    assert not list(run.glob(".hub-push-*"))


def test_a_rotated_away_checkpoint_is_still_pushed_and_its_keys_are_the_models(online, run):
    import shutil

    online.upload_delay = 0.3
    pusher = BackgroundPusher(run, "me/x")
    checkpoint = make_checkpoint(run, 10, prefix="module._orig_mod.")
    original = checkpoint.joinpath("model.safetensors").read_bytes()
    pusher.submit(checkpoint)
    shutil.rmtree(checkpoint)  # save_total_limit rotation while the upload waits
    pusher.close(wait=True)
    weights = online.commits[0]["files"]["last-checkpoint/model.safetensors"]
    staged = run / "weights.safetensors"
    staged.write_bytes(weights)
    assert list(load_file(str(staged))) == ["head.weight"]
    assert original != weights


def test_checkpoint_push_failures_are_logged_not_raised(online, run, caplog):
    online.fail_with = http_error(403, "forbidden")
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(make_checkpoint(run, 10))
    pusher.close(wait=True)
    assert pusher.failures == ["checkpoint-10"] and pusher.pushed == []
    assert "could not push checkpoint-10" in caplog.text and "permission denied" in caplog.text


def test_close_without_wait_drops_what_is_queued(online, run):
    online.upload_delay = 0.3
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(make_checkpoint(run, 10))
    time.sleep(0.05)
    pusher.submit(make_checkpoint(run, 20))
    assert pusher.close(wait=False) is False  # checkpoint-10 is still uploading
    assert pusher.dropped == ["checkpoint-20"]
    assert pusher.close(wait=True, timeout=2)  # the push under way finishes in the background
    assert pusher.pushed == ["checkpoint-10"]
    assert not list(run.glob(".hub-push-*"))


def test_each_checkpoint_push_is_a_future_of_huggingface_hubs_worker(online, run):
    online.upload_delay = 0.4
    checkpoints = [make_checkpoint(run, 10), make_checkpoint(run, 20)]
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(checkpoints[0])
    pusher.submit(checkpoints[1])  # queued behind checkpoint-10 on the same single worker
    [first, second] = online.futures
    assert not first.done() and not second.done()  # submit returned while both wait or run
    pusher.close(wait=True)
    assert first.done() and second.done() and first.exception() is None and second.exception() is None
    assert threading.current_thread().name not in online.upload_threads
    assert len(set(online.upload_threads)) == 1  # HfApi's one worker thread: pushes run in order
    assert pusher.pushed == ["checkpoint-10", "checkpoint-20"]
    assert len(online.repos) == 1  # the repository is created once, with the first push


def test_a_failed_future_is_reported_with_the_retry_command_and_its_staging_is_cleaned(online, run, caplog):
    online.upload_delay = 0.1
    online.fail_with = ConnectionResetError("connection reset by peer")
    checkpoint = make_checkpoint(run, 10)
    before = hashes(run)
    pusher = BackgroundPusher(run, "me/x", private=True)
    pusher.submit(checkpoint)  # never raises into training
    assert list(run.glob(".hub-push-*"))  # staged while the future runs
    pusher.close(wait=True)
    [future] = online.futures
    assert isinstance(future.exception(), HubError)  # the future failed; the pusher reported it
    assert pusher.failures == ["checkpoint-10"] and pusher.pushed == [] and pusher.dropped == []
    assert "could not push checkpoint-10" in caplog.text and "ConnectionResetError" in caplog.text
    assert f"python recipes/push.py {run} --hub_model_id me/x --private" in caplog.text
    assert not list(run.glob(".hub-push-*"))  # staging cleaned after the future completed
    assert hashes(run) == before  # nothing on disk lost or changed: the checkpoint is intact


def test_a_failure_outside_the_network_call_is_reported_too(online, run, monkeypatch, caplog):
    def broken(token=None):
        raise RuntimeError(f"probe failed for {TOKEN}")

    monkeypatch.setattr(hub, "push_problem", broken)
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(make_checkpoint(run, 10))
    pusher.close(wait=True)
    assert pusher.failures == ["checkpoint-10"]
    assert "RuntimeError: probe failed for <token>" in caplog.text and TOKEN not in caplog.text
    assert not list(run.glob(".hub-push-*"))


def test_close_waits_for_every_outstanding_upload(online, run):
    online.upload_delay = 0.4
    pusher = BackgroundPusher(run, "me/x")
    started = time.perf_counter()
    pusher.submit(make_checkpoint(run, 10))
    time.sleep(0.1)  # checkpoint-10 is uploading
    pusher.submit(make_checkpoint(run, 20))  # and checkpoint-20 waits for it
    assert pusher.close(wait=True) is True
    assert time.perf_counter() - started >= 0.8  # both uploads, one after the other
    assert all(future.done() for future in online.futures)
    assert pusher.pushed == ["checkpoint-10", "checkpoint-20"]
    assert [commit["message"] for commit in online.commits] == [
        "Training in progress: checkpoint-10",
        "Training in progress: checkpoint-20",
    ]
    assert not list(run.glob(".hub-push-*"))


def test_close_with_a_timeout_reports_what_is_unfinished_and_the_upload_goes_on(online, run, caplog):
    caplog.set_level(logging.INFO, logger="accel_recipes.hub")
    online.upload_delay = 0.6
    checkpoints = [make_checkpoint(run, 10), make_checkpoint(run, 20)]
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(checkpoints[0])
    time.sleep(0.1)
    pusher.submit(checkpoints[1])
    assert pusher.close(wait=True, timeout=0.1) is False
    assert online.commits == []  # the timeout holds: close returned while checkpoint-10 was still uploading
    assert pusher.dropped == ["checkpoint-20"]  # not started: dropped, and said so
    assert "did not push checkpoint-20" in caplog.text and "still pushing checkpoint-10" in caplog.text
    assert pusher.close(wait=True, timeout=2)
    assert pusher.pushed == ["checkpoint-10"] and not list(run.glob(".hub-push-*"))


def test_a_checkpoint_after_close_is_reported_not_pushed(online, run, caplog):
    pusher = BackgroundPusher(run, "me/x")
    pusher.close(wait=True)
    pusher.submit(make_checkpoint(run, 10))
    assert pusher.dropped == ["checkpoint-10"] and online.futures == [] and online.commits == []
    assert "did not push checkpoint-10" in caplog.text and not list(run.glob(".hub-push-*"))


def test_the_token_never_appears_in_any_written_file(online, run, tmp_path, caplog, capsys):
    """Checkpoint pushes that succeed and that fail with the token in the Hub's answer, then the final push: no file
    under tmp_path (the run, its checkpoints, staging, the HF home), no upload, no log line and no output has it."""
    caplog.set_level(logging.DEBUG)
    pusher = BackgroundPusher(run, "me/x")
    pusher.submit(make_checkpoint(run, 10))
    pusher.close(wait=True)
    online.fail_with = http_error(500, f"refused for Bearer {TOKEN}")
    failing = BackgroundPusher(run, "me/x")
    failing.submit(make_checkpoint(run, 20))
    failing.close(wait=True)
    assert pusher.pushed == ["checkpoint-10"] and failing.failures == ["checkpoint-20"]
    online.fail_with = None
    push_run(run, "me/x")
    assert_token_nowhere(tmp_path)
    assert not (tmp_path / "hf-home" / "token").exists()  # nothing logged in on the user's behalf
    for commit in online.commits:
        assert all(TOKEN.encode() not in content for content in commit["files"].values())
    captured = capsys.readouterr()
    assert "answered HTTP 500" in caplog.text
    assert TOKEN not in caplog.text + captured.out + captured.err


def test_checkpoint_pusher_gives_fit_a_callback_only_for_every_save(online, run):
    from accel_recipes.config import make_args

    end = make_args({"output_dir": str(run), "push_to_hub": True})
    with hub.checkpoint_pusher(end, True) as callback:
        assert callback is None
    every_save = make_args({"output_dir": str(run), "push_to_hub": True, "hub_strategy": "every_save"})
    with hub.checkpoint_pusher(every_save, False) as callback:
        assert callback is None  # only the main process pushes
    with hub.checkpoint_pusher(every_save, True) as callback:
        callback(make_checkpoint(run, 10))
    assert [commit["message"] for commit in online.commits] == ["Training in progress: checkpoint-10"]


def test_training_warns_at_once_when_the_push_cannot_work(online, run, monkeypatch, capsys):
    from accel_recipes.config import make_args

    monkeypatch.delenv("HF_TOKEN")
    with hub.checkpoint_pusher(make_args({"output_dir": str(run), "push_to_hub": True}), True):
        pass
    assert "warning: push_to_hub is set but pushing cannot work now: no Hugging Face token" in capsys.readouterr().err


# ---- a whole run ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_cannot_push_finishes_keeps_everything_and_exits_3(data_root, tmp_path):
    """``python recipes/train.py`` itself (``accelerate launch`` turns any failure of its child into status 1)."""
    import os
    import subprocess
    import sys

    import datagen
    from conftest import ROOT

    dataset = datagen.make_cifar_hub_dataset(data_root / "hub-push", num_classes=3, train_per_class=8)
    output_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN, "OMP_NUM_THREADS": "2"}
    command = [
        sys.executable, str(ROOT / "recipes" / "train.py"),
        "--output_dir", str(output_dir), "--dataset_name", str(dataset), "--model_name_or_path", "test_resnet",
        "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--disable_tqdm", "true",
        "--report_to", "tensorboard", "--push_to_hub", "true", "--hub_model_id", "me/tiny",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "HF_HUB_OFFLINE is set" in result.stderr
    assert f"python recipes/push.py {output_dir} --hub_model_id me/tiny" in result.stderr
    for name in ("config.yaml", "all_results.json", "metrics.jsonl", "model/README.md", "model/config.yaml"):
        assert (output_dir / name).is_file(), name
    assert list(output_dir.rglob("events.out.tfevents.*"))
    card = (output_dir / "model" / "README.md").read_text()
    # a small-stem ResNet: transformers' custom code, not timm's loader
    assert 'pipeline("image-classification", model="me/tiny", trust_remote_code=True)' in card
    assert_token_nowhere(output_dir)
    assert TOKEN not in result.stdout + result.stderr
