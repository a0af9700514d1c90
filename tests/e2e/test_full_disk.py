"""A full disk as a user meets it, for real: the file-size limit (``tests/file_limits.py``) makes the kernel refuse
the run's big writes with EFBIG while the small ones (dataset cache, config, metrics) still fit. On two processes
every process stops with the same one-line error (none left waiting for the one that failed); when the model
folder cannot be written, the error names the last whole checkpoint, from which the run then finishes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import launch, train, train_ok
from file_limits import file_size_limit, file_size_limit_for_children

from accel_recipes import run
from accel_recipes.errors import EXIT_USER_ERROR

pytestmark = pytest.mark.slow

# test_efficientnet's weights are ~400 kB (its optimizer state twice that); the dataset cache, config.yaml and
# metrics.jsonl of these runs, and each process's RNG states (~15 kB), stay well under 100 kB
LIMIT = 100_000


def run_args(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir),
        "--model_name_or_path", "test_efficientnet",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8",
        "--max_steps", "2",
        "--save_strategy", "steps",
        "--save_steps", "1",
        "--logging_steps", "1",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def test_two_processes_both_stop_with_one_line_when_the_checkpoint_cannot_be_written(image_folder, tmp_path):
    """The main process's part of checkpoint-1 is refused; the other process wrote its part. Both exit with the same
    error (not torch's traceback), in seconds rather than at the collective timeout, and the half-written temporary
    folder is removed."""
    output_dir = tmp_path / "run"
    result = launch(run_args(image_folder, output_dir), processes=2, check=False, timeout=300,
                    preexec_fn=file_size_limit_for_children(LIMIT))  # fmt: skip
    checkpoint = output_dir / "checkpoints" / "checkpoint-1"
    line = (
        f"error: could not write the checkpoint '{checkpoint}': I/O error: File too large (os error 27) (its partial "
        f"copy '{checkpoint.with_name('.checkpoint-1.tmp')}' was removed); no checkpoint was saved yet: make room, "
        "then start again with --resume_from_checkpoint latest"
    )
    assert result.returncode != 0
    assert result.stderr.count(line) == 2, result.stderr[-6000:]  # one from each process
    assert "inline_container" not in result.stderr and "SafetensorError" not in result.stderr
    assert list((output_dir / "checkpoints").iterdir()) == []


def test_a_model_folder_the_disk_refuses_names_the_last_checkpoint_and_the_run_finishes_from_it(
    image_folder, tmp_path, monkeypatch
):
    """Training and its checkpoints fit; the disk fills while the model folder is written. recipes/train.py exits
    with the training-error code and one line naming the folder, the error and checkpoint-2; no model folder, whole
    or partial, is left; with room again, --resume_from_checkpoint latest writes it."""
    output_dir = tmp_path / "run"
    save_model_folder = run.save_model_folder

    def on_a_full_disk(*args, **kwargs):
        with file_size_limit(LIMIT):
            return save_model_folder(*args, **kwargs)

    monkeypatch.setattr(run, "save_model_folder", on_a_full_disk)
    finished = train(run_args(image_folder, output_dir))
    assert finished.exit_code == EXIT_USER_ERROR, finished.stderr[-4000:]
    assert finished.stderr.strip().splitlines()[-1] == (
        f"error: could not write the results and model folder in '{output_dir}': I/O error: File too large (os error "
        f"27); the last whole checkpoint is '{output_dir / 'checkpoints' / 'checkpoint-2'}': make room, then carry "
        "on from it with --resume_from_checkpoint latest"
    )
    assert "Traceback" not in finished.stderr
    assert not (output_dir / "model").exists() and not (output_dir / ".model.tmp").exists()

    monkeypatch.setattr(run, "save_model_folder", save_model_folder)
    train_ok(run_args(image_folder, output_dir, "--resume_from_checkpoint", "latest"))
    assert (output_dir / "model" / "model.safetensors").is_file()
