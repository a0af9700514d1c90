"""A full disk during training, for real: the file-size limit (``tests/file_limits.py``) makes the kernel refuse a
write of the real run's checkpoint or best model with EFBIG, through safetensors' writer or torch's. The run stops
with one ``WriteError`` naming what it could not write, the error and the last whole checkpoint; nothing half
written is left; with room again, the run resumes from that checkpoint and ends as if nothing had happened."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from file_limits import file_size_limit
from loop_harness import (  # tests/engine is on the path (rootdir import mode)
    TinyData,
    fresh_accelerator,
    make_data,
    make_trainer,
    raised_by,
    run_fit,
    same_weights,
    tiny_model,
    tiny_run_environment,
    training_args,
    weights,
)

from accel_recipes.checkpoints import checkpoint_damage, save_weights
from accel_recipes.errors import WriteError
from accel_recipes.write_failures import written_together

# The tiny run's checkpoint files: model.safetensors ~2 kB, optimizer.bin (SGD with momentum) ~4 kB, RNG states
# ~14 kB. A 1 kB limit refuses the first (safetensors' writer), a 3 kB limit the optimizer (torch's writer).
SAFETENSORS_LIMIT, TORCH_LIMIT = 1024, 3000


@pytest.fixture(scope="module", autouse=True)
def environment() -> Iterator[None]:
    with tiny_run_environment():
        yield


@pytest.fixture(scope="module")
def data() -> TinyData:
    return make_data(5)


@pytest.mark.parametrize(
    ("limit", "writer_says"),
    [
        (SAFETENSORS_LIMIT, "I/O error: File too large (os error 27)"),
        (TORCH_LIMIT, "torch's file writer failed ("),
    ],
    ids=["safetensors", "torch"],
)
def test_a_checkpoint_the_disk_refuses_stops_the_run_and_the_last_whole_one_resumes(data, tmp_path, limit, writer_says):
    """The disk fills after checkpoint-1: saving checkpoint-2 fails inside accelerator.save_state. The error names
    checkpoint-2, the writer's own words and checkpoint-1; the temporary folder is gone, checkpoint-1 is whole, and
    once there is room the run resumes from it and ends with the weights of a run the disk never stopped."""
    output_dir = tmp_path / "run"
    fields: dict[str, Any] = {"max_steps": 4, "save_strategy": "steps", "save_steps": 1, "momentum": 0.9}
    fields["logging_steps"] = 100  # metrics.jsonl stays under the limit until the failing save

    with contextlib.ExitStack() as full_disk:

        def fill_the_disk(epoch: int, index: int, batch: Any) -> None:
            if (epoch, index) == (0, 1):  # update 1 and its checkpoint are done
                full_disk.enter_context(file_size_limit(limit))

        trainer = make_trainer(training_args(output_dir, **fields), data, on_batch=fill_the_disk)
        message = str(raised_by(WriteError, trainer.fit))

    checkpoints = output_dir / "checkpoints"
    assert message.startswith(f"could not write the checkpoint '{checkpoints / 'checkpoint-2'}': {writer_says}")
    assert f"(its partial copy '{checkpoints / '.checkpoint-2.tmp'}' was removed)" in message
    assert f"the last whole checkpoint is '{checkpoints / 'checkpoint-1'}'" in message
    assert message.endswith("--resume_from_checkpoint latest")
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-1"]
    assert checkpoint_damage(checkpoints / "checkpoint-1") is None

    resumed = run_fit(training_args(output_dir, resume_from_checkpoint="latest", **fields), data)
    never_stopped = run_fit(training_args(tmp_path / "never-stopped", **fields), data)
    assert same_weights(weights(resumed.model), weights(never_stopped.model))


def test_a_best_model_the_disk_refuses_leaves_the_previous_one(tmp_path):
    """save_weights (the best model so far) over a previous best, refused by the disk: an error naming the file and
    the error, the previous best untouched, no temporary file beside it."""
    accelerator = fresh_accelerator(training_args(tmp_path))
    path = tmp_path / "best_model" / "model.safetensors"
    model = tiny_model()
    save_weights(accelerator, model, path)
    previous = path.read_bytes()
    with torch.no_grad():
        model[1].weight.add_(1.0)
    with file_size_limit(SAFETENSORS_LIMIT):
        error = raised_by(WriteError, lambda: save_weights(accelerator, model, path, tmp_path / "checkpoints"))
    assert str(error).startswith(f"could not write '{path}': I/O error: File too large (os error 27)")
    assert "no checkpoint was saved yet: make room, then start again with --resume_from_checkpoint latest" in str(error)
    assert path.read_bytes() == previous
    assert [entry.name for entry in path.parent.iterdir()] == ["model.safetensors"]


def test_an_error_that_is_not_a_refused_write_is_raised_as_it_was_and_the_partial_folder_removed(tmp_path):
    """A bug while writing keeps its own type and traceback (it is no user error); what it half wrote still goes."""
    accelerator = fresh_accelerator(training_args(tmp_path))
    partial = tmp_path / "checkpoints" / ".checkpoint-1.tmp"
    partial.mkdir(parents=True)

    def write_with_a_bug() -> None:
        with written_together(accelerator, "the checkpoint", None, partial=partial):
            raise ValueError("a bug, not the disk")

    assert str(raised_by(ValueError, write_with_a_bug)) == "a bug, not the disk"
    assert not partial.exists()


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "make room"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "make room"),
        (PermissionError(errno.EACCES, "Permission denied"), "let this user write there"),
        (PermissionError(errno.EPERM, "Operation not permitted"), "let this user write there"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), "fix what the error says"),
    ],
    ids=["ENOSPC", "EDQUOT", "EACCES", "EPERM", "ENOENT"],
)
def test_the_advice_after_a_refused_write_follows_the_error_number(tmp_path, error, advice):
    """Every refused write stops the run cleanly; only a full disk, a quota or a file-size limit is told to make
    room."""
    accelerator = fresh_accelerator(training_args(tmp_path))
    last = tmp_path / "checkpoints" / "checkpoint-1"

    def refused() -> None:
        with written_together(accelerator, "the checkpoint", last):
            raise error

    message = str(raised_by(WriteError, refused))
    assert message.startswith(f"could not write the checkpoint: {error}")
    assert f"the last whole checkpoint is '{last}': {advice}, then carry on from it with" in message
    assert advice == "make room" or "make room" not in message


def test_with_save_on_each_node_each_node_removes_its_own_partial_folder(tmp_path, monkeypatch):
    """save_on_each_node: the second node's local main created its own temporary folder, and removes it when a
    write failed (here on the first node; its answer to the collective is given, the clean-up is real)."""
    from types import SimpleNamespace

    from accel_recipes import write_failures

    partial = tmp_path / "node-1" / "checkpoints" / ".checkpoint-2.tmp"
    partial.mkdir(parents=True)
    monkeypatch.setattr(write_failures, "gather_object", lambda mine: [("refused", "No space", "make room"), mine[0]])
    second_node = SimpleNamespace(
        num_processes=2,
        is_main_process=False,
        is_local_main_process=True,
        project_configuration=SimpleNamespace(save_on_each_node=True),
    )

    def write() -> None:
        with written_together(second_node, "the checkpoint", None, partial=partial):
            pass

    assert f"(its partial copy '{partial}' was removed)" in str(raised_by(WriteError, write))
    assert not partial.exists()


def test_a_refused_best_model_names_the_newest_whole_checkpoint(tmp_path):
    """A damaged newer checkpoint (one that latest would skip) is not named as the way on."""
    from test_checkpoints import make_checkpoint

    accelerator = fresh_accelerator(training_args(tmp_path))
    checkpoints = tmp_path / "checkpoints"
    whole = make_checkpoint(checkpoints, 1)
    damaged = make_checkpoint(checkpoints, 2)
    (damaged / "training_state.json").write_text('{"update": 2, "files": {"model.safetensors": 40}}')
    path = tmp_path / "best_model" / "model.safetensors"
    with file_size_limit(SAFETENSORS_LIMIT):
        error = raised_by(WriteError, lambda: save_weights(accelerator, tiny_model(), path, checkpoints))
    assert f"the last whole checkpoint is '{whole}': make room" in str(error)
