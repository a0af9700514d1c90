"""Checkpoints: the run's counters round-trip, only complete checkpoints count, rotation keeps the newest, and
``resume_from_checkpoint`` resolves to a complete one or says what to pass."""

from __future__ import annotations

import json

import pytest

from accel_recipes.checkpoints import STATE_FILE, RunState, list_checkpoints, resolve_checkpoint, rotate_checkpoints
from accel_recipes.config import make_args
from accel_recipes.errors import CheckpointError, TrainingError


def make_checkpoint(directory, update: int, complete: bool = True):
    folder = directory / f"checkpoint-{update}"
    folder.mkdir(parents=True)
    if complete:
        (folder / STATE_FILE).write_text(RunState(update=update, num_classes=3).to_json())
    return folder


def test_counters_round_trip_and_ignore_unknown_keys(tmp_path):
    state = RunState(update=7, epoch=1, micro_in_epoch=3, train_seconds=2.5, train_samples=448, best_metric=0.5)
    path = tmp_path / STATE_FILE
    path.write_text(state.to_json().replace('"update": 7', '"update": 7, "from_a_newer_version": 1'))
    assert RunState.from_file(path) == state


def test_steady_throughput_leaves_out_the_warm_up():
    state = RunState(train_seconds=10.0, train_samples=1000, steady_seconds_offset=2.0, steady_samples_offset=100)
    assert state.steady_samples_per_second() == pytest.approx(900 / 8)
    assert RunState(train_seconds=4.0, train_samples=100).steady_samples_per_second() == 25.0


def test_only_complete_checkpoints_count_oldest_first(tmp_path):
    for update in (10, 2, 30):
        make_checkpoint(tmp_path, update)
    make_checkpoint(tmp_path, 40, complete=False)  # a save cut short: no counters
    (tmp_path / ".checkpoint-50.tmp").mkdir()
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]


def test_rotation_keeps_the_newest(tmp_path):
    for update in (1, 2, 3, 4):
        make_checkpoint(tmp_path, update)
    rotate_checkpoints(tmp_path, limit=2)
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    rotate_checkpoints(tmp_path, limit=None)
    assert len(list_checkpoints(tmp_path)) == 2


def test_resume_latest_and_explicit(tmp_path):
    training = make_args({"output_dir": str(tmp_path), "resume_from_checkpoint": "latest"}).training
    assert resolve_checkpoint(training) is None  # nothing saved yet: start fresh
    make_checkpoint(tmp_path / "checkpoints", 5)
    newest = make_checkpoint(tmp_path / "checkpoints", 9)
    assert resolve_checkpoint(training) == newest
    training.resume_from_checkpoint = str(tmp_path / "checkpoints" / "checkpoint-5")
    assert resolve_checkpoint(training).name == "checkpoint-5"
    training.resume_from_checkpoint = str(tmp_path)
    with pytest.raises(TrainingError, match="is not a checkpoint folder.*pass 'latest'"):
        resolve_checkpoint(training)


def saved_run(tmp_path, updates=(3, 6)):
    """Real checkpoints of a prepared model and optimizer, as the trainer writes them."""
    import torch
    from accelerate import Accelerator

    from accel_recipes.checkpoints import save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    directory = tmp_path / "checkpoints"
    return [save_checkpoint(accelerator, directory, RunState(update=u, num_classes=3), None) for u in updates]


def latest(tmp_path):
    return make_args({"output_dir": str(tmp_path), "resume_from_checkpoint": "latest"}).training


def test_a_saved_checkpoint_lists_its_files_and_is_whole(tmp_path):
    from accel_recipes.checkpoints import checkpoint_damage

    older, newest = saved_run(tmp_path)
    files = json.loads((newest / STATE_FILE).read_text())["files"]
    assert "model.safetensors" in files and "optimizer.bin" in files and STATE_FILE not in files
    assert checkpoint_damage(newest) is None
    assert RunState.from_file(newest / STATE_FILE).update == 6


def test_a_truncated_newest_checkpoint_is_skipped_for_the_older_one_and_kept(tmp_path):
    older, newest = saved_run(tmp_path)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    messages = []
    assert resolve_checkpoint(latest(tmp_path), messages.append) == older
    assert len(messages) == 1 and str(newest) in messages[0] and "model.safetensors" in messages[0]
    assert weights.exists(), "nothing is deleted"
    training = latest(tmp_path)
    training.resume_from_checkpoint = str(newest)
    with pytest.raises(CheckpointError, match=r"checkpoint-6' is damaged: model.safetensors has 40 bytes"):
        resolve_checkpoint(training)


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"update": 6, "unknown": 1, "epoch": "x"', ""])
def test_a_garbage_training_state_is_skipped_for_the_older_one(tmp_path, garbage):
    older, newest = saved_run(tmp_path)
    (newest / STATE_FILE).write_text(garbage)
    messages = []
    assert resolve_checkpoint(latest(tmp_path), messages.append) == older
    assert STATE_FILE in messages[0] and "checkpoint-6" in messages[0]


def test_a_missing_file_or_unreadable_header_is_named(tmp_path):
    from accel_recipes.checkpoints import checkpoint_damage

    (newest,) = saved_run(tmp_path, updates=(2,))
    (newest / "optimizer.bin").unlink()
    assert checkpoint_damage(newest) == "optimizer.bin is missing"
    record = json.loads((newest / STATE_FILE).read_text())
    del record["files"]  # a checkpoint written before the file list: headers are still checked
    (newest / STATE_FILE).write_text(json.dumps(record))
    weights = newest / "model.safetensors"
    weights.write_bytes(b"\xff" * weights.stat().st_size)
    assert "model.safetensors cannot be read" in checkpoint_damage(newest)
    messages = []
    assert resolve_checkpoint(latest(tmp_path), messages.append) is None and len(messages) == 1


@pytest.mark.slow
def test_a_model_sharded_by_fsdp2_exports_and_reloads_whole_weights(tmp_path):
    """Two CPU processes over gloo shard a timm model with fully_shard (tests/fsdp_worker.py); the exported folder
    and the best-model file hold the whole tensors, timm loads them, and the logits are the sharded model's."""
    import os
    import subprocess
    import sys

    import timm
    import torch
    from conftest import ROOT
    from safetensors.torch import load_file

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(29500 + os.getpid() % 400), str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    shards = [json.loads((tmp_path / f"shard_shapes_{rank}.json").read_text()) for rank in (0, 1)]
    exported = load_file(tmp_path / "model" / "model.safetensors")
    assert exported.keys() == shards[0].keys()
    for name, tensor in exported.items():  # each process held a slice of dim 0; the file holds them joined
        assert shards[0][name][0] + shards[1][name][0] == tensor.shape[0], name
        assert shards[0][name][1:] == list(tensor.shape[1:]), name
    assert any(shards[0][name] != list(tensor.shape) for name, tensor in exported.items()), "really sharded"
    best = load_file(tmp_path / "best.safetensors")
    assert best.keys() == exported.keys() and all(torch.equal(best[key], exported[key]) for key in best)

    model = timm.create_model(f"local-dir:{tmp_path / 'model'}", pretrained=True).eval()
    saved = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        torch.testing.assert_close(model(saved["images"]), saved["logits"])
    # the best weights loaded back into the sharded model (over zeroed weights) give the same logits again
    torch.testing.assert_close(torch.load(tmp_path / "reloaded_logits.pt"), saved["logits"])


def test_latest_on_several_nodes_is_the_newest_checkpoint_whole_on_every_node(tmp_path, monkeypatch):
    """With a folder per node, a node killed during a save lacks the newest checkpoint the others have: they all
    resume from the newest they share. The other node's answer to the collective is given here; the choice is real."""
    from types import SimpleNamespace

    from accel_recipes import checkpoints

    for update in (2, 4, 6):
        make_checkpoint(tmp_path / "checkpoints", update)
    training = make_args({"output_dir": str(tmp_path), "resume_from_checkpoint": "latest"}).training
    other_node = [4, 2]  # killed before its checkpoint-6 was renamed into place
    monkeypatch.setattr(checkpoints, "gather_object", lambda mine: [mine[0], other_node])
    two_processes = SimpleNamespace(num_processes=2)
    messages: list[str] = []
    assert resolve_checkpoint(training, messages.append, two_processes).name == "checkpoint-4"
    newest_shared = tmp_path / "checkpoints" / "checkpoint-4"
    assert messages == [f"checkpoint-6 is not whole on every node: resuming from {newest_shared}"]
    other_node.clear()
    assert resolve_checkpoint(training, messages.append, two_processes) is None
    assert messages[-1] == "no checkpoint is whole on every node: starting from scratch"


def test_rotation_keeps_the_checkpoint_just_saved_over_later_numbered_ones_of_an_earlier_run(tmp_path):
    """A run resumed from checkpoint-500 of a run that went on to 1000: its own checkpoint-600 is the newest, and
    the earlier run's later one counts as older than any of its own. Rotation is the real save's."""
    import torch
    from accelerate import Accelerator

    from accel_recipes.checkpoints import save_checkpoint

    directory = tmp_path / "checkpoints"
    for update in (500, 1000):
        make_checkpoint(directory, update)
    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2))
    saved = save_checkpoint(accelerator, directory, RunState(update=600, num_classes=3), limit=1)
    assert [path.name for path in list_checkpoints(directory)] == [saved.name] == ["checkpoint-600"]

    for update in (500, 1000):
        make_checkpoint(directory, update)
    rotate_checkpoints(directory, limit=2, saved=saved)  # the earlier run's 1000 goes before this run's 500
    assert [path.name for path in list_checkpoints(directory)] == ["checkpoint-500", "checkpoint-600"]


def test_the_newest_checkpoint_named_after_a_failure_is_the_newest_whole_one(tmp_path):
    from accel_recipes.checkpoints import newest_checkpoint

    whole = make_checkpoint(tmp_path, 3)
    damaged = make_checkpoint(tmp_path, 6)
    (damaged / STATE_FILE).write_text(json.dumps({"update": 6, "files": {"model.safetensors": 40}}))
    assert newest_checkpoint(tmp_path) == whole


def test_a_fresh_start_over_an_earlier_run_removes_its_checkpoints_and_says_so(tmp_path):
    from accel_recipes.run import clear_others_checkpoints

    directory = tmp_path / "checkpoints"
    make_checkpoint(directory, 5000)
    (directory / ".checkpoint-6000.tmp").mkdir()
    training = make_args({"output_dir": str(tmp_path), "overwrite_output_dir": True}).training
    messages: list[str] = []
    clear_others_checkpoints(training, None, messages.append)
    assert not directory.exists()
    removed = f"overwrite_output_dir: removed the earlier run's checkpoints (checkpoint-5000) from {directory}"
    assert messages == [removed]
    # resuming (or an elastic restart, which resumes from latest) keeps them
    make_checkpoint(directory, 5000)
    training.resume_from_checkpoint = "latest"
    clear_others_checkpoints(training, directory / "checkpoint-5000", messages.append)
    assert [path.name for path in list_checkpoints(directory)] == ["checkpoint-5000"] and len(messages) == 1


def test_a_start_from_a_named_checkpoint_moves_the_later_ones_aside(tmp_path):
    """--resume_from_checkpoint out/checkpoints/checkpoint-500 while the earlier run's checkpoint-1000 is there:
    before the first save it goes to checkpoints/superseded-<time>/, so nothing resumes or rotates it."""
    from accel_recipes.run import clear_others_checkpoints

    directory = tmp_path / "checkpoints"
    for update in (300, 500, 1000):
        make_checkpoint(directory, update)
    start = directory / "checkpoint-500"
    training = make_args({"output_dir": str(tmp_path), "resume_from_checkpoint": str(start)}).training
    messages: list[str] = []
    clear_others_checkpoints(training, start, messages.append)
    assert [path.name for path in list_checkpoints(directory)] == ["checkpoint-300", "checkpoint-500"]
    (aside,) = directory.glob("superseded-*")
    assert [path.name for path in aside.iterdir()] == ["checkpoint-1000"]
    assert messages == [
        f"starting from checkpoint-500: the later checkpoints checkpoint-1000 are not this run's; moved to {aside} "
        "(not resumed, not rotated)"
    ]
    training.resume_from_checkpoint = "latest"
    assert resolve_checkpoint(training) == start
