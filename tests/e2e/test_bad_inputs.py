"""Bad input never crashes, never corrupts, never leaks: each case is a command, its exit code, a phrase of its one-line
error and, where a finished run was already there, that run's files unchanged byte for byte afterwards.

The commands run in-process (``recipes/train.py``'s and ``recipes/predict.py``'s ``main``) on tiny generated data,
so the whole table takes seconds per case rather than a subprocess start each."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_ok
from PIL import Image
from safetensors.torch import load_file

from accel_recipes import predict, run
from accel_recipes.checkpoints import list_checkpoints
from accel_recipes.errors import EXIT_OK, EXIT_USER_ERROR

pytestmark = pytest.mark.slow


def base_args(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir),
        "--model_name_or_path", "test_resnet",
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "8",
        "--learning_rate", "0.05",
        "--num_train_epochs", "1",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def huge_png(path: Path, side: int = 14000) -> Path:
    """A PNG whose header says side x side pixels (far over PIL's limit) without the bytes of such an image."""
    Image.new("RGB", (16, 16), (90, 120, 150)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), width (4), height (4), ...
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(autouse=True)
def fresh(in_fresh_process):
    """Every case calls ``main`` in this process: each starts from a fresh Accelerate state (conftest)."""


@pytest.fixture(scope="module")
def world(image_folder, one_class_folder, finished_run, tmp_path_factory) -> dict[str, Path]:
    """The session's tiny datasets and its finished run (2 epochs of 2 updates), which the cases may find in their
    way, plus what the cases need broken: a dataset with an image over PIL's pixel limit, a damaged model folder."""
    root = tmp_path_factory.mktemp("bad-inputs")
    huge = root / "huge"
    shutil.copytree(image_folder, huge)
    huge_png(huge / "train" / "airplane" / "huge.png")
    (root / "empty.yaml").write_text("# nothing but a comment\n")
    (root / "a-file").write_text("not a folder\n")
    damaged = root / "damaged-model"
    shutil.copytree(finished_run / "model", damaged)
    truncate(damaged / "model.safetensors")
    return {"root": root, "data": image_folder, "one_class": one_class_folder, "huge": huge,
            "finished": finished_run, "damaged": damaged}  # fmt: skip


@dataclass
class Case:
    name: str
    argv: Callable[[dict[str, Path], Path], list[str]]  # (world, output_dir) -> arguments
    exit_code: int
    phrase: str
    existing_run: bool = False  # the finished run is copied to output_dir first and must come out unchanged
    command: Callable[[list[str]], int] = field(default=run.main)


def unwritable(world: dict[str, Path]) -> Path:
    """A folder no one can create: under /proc for root (who may write anywhere else), else a read-only folder."""
    if os.geteuid() == 0:
        return Path("/proc/accel-recipes-run")
    folder = world["root"] / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder / "run"


CASES = [
    Case("nan learning rate", lambda w, o: base_args(w["data"], o, "--learning_rate", "nan"), 2,
         "'learning_rate' must be a finite number"),
    Case("nan epochs", lambda w, o: base_args(w["data"], o, "--num_train_epochs", "nan"), 2,
         "'num_train_epochs' must be a finite number"),
    Case("infinite weight decay", lambda w, o: base_args(w["data"], o, "--weight_decay", "inf"), 2,
         "'weight_decay' must be a finite number"),
    Case("momentum out of range", lambda w, o: base_args(w["data"], o, "--momentum", "1.5"), 2,
         "'momentum' must be in [0, 1)"),
    Case("empty recipe", lambda w, o: ["--config", str(w["root"] / "empty.yaml"), *base_args(w["data"], o)], 2,
         "empty.yaml' is empty"),
    Case("output_dir is a file", lambda w, o: base_args(w["data"], w["root"] / "a-file"), 2,
         "is a file, not a folder"),
    Case("output_dir under a file", lambda w, o: base_args(w["data"], w["root"] / "a-file" / "run"), 2,
         "which is a file"),
    Case("output_dir not writable", lambda w, o: base_args(w["data"], unwritable(w)), 2, "cannot be written"),
    Case("image over the pixel limit", lambda w, o: base_args(w["huge"], o), 2, "over PIL's limit"),
    Case("image over the pixel limit, skipped",
         lambda w, o: base_args(w["huge"], o, "--skip_corrupt_images", "true"), 0, "skipped 1 undecodable"),
    Case("one class", lambda w, o: base_args(w["one_class"], o), 2, "a classifier needs at least two classes"),
    Case("one class, label column named", lambda w, o: base_args(w["one_class"], o, "--label_column_name", "label"),
         2, "a classifier needs at least two classes"),
    Case("fine-tune from a damaged model folder",
         lambda w, o: base_args(w["data"], o, "--model_name_or_path", str(w["damaged"]), "--pretrained", "true"), 2,
         "damaged-model/model.safetensors' is damaged"),
    Case("predict with damaged weights", lambda w, o: ["--model", str(w["damaged"]), str(w["data"] / "validation")], 2,
         "damaged-model/model.safetensors' is damaged", command=predict.main),
    # an existing run comes out of every failure exactly as it was
    Case("new run into a finished one", lambda w, o: base_args(w["data"], o), 2, "already holds a run",
         existing_run=True),
    Case("overwrite, then the data fails",
         lambda w, o: base_args(w["root"] / "missing", o, "--overwrite_output_dir", "true"), 2, "does not exist",
         existing_run=True),
    Case("overwrite, then the model fails",
         lambda w, o: base_args(w["data"], o, "--overwrite_output_dir", "true", "--model_name_or_path",
                                str(w["damaged"]), "--pretrained", "true"), 2, "is damaged", existing_run=True),
    Case("overwrite with one class", lambda w, o: base_args(w["one_class"], o, "--overwrite_output_dir", "true"), 2,
         "at least two classes", existing_run=True),
    Case("resume from a folder that is no checkpoint",
         lambda w, o: base_args(w["data"], o, "--resume_from_checkpoint", str(w["root"])), 2,
         "is not a checkpoint folder", existing_run=True),
    Case("resume with a bad value", lambda w, o: base_args(w["data"], o, "--resume_from_checkpoint", "latest",
                                                            "--max_grad_norm", "nan"), 2,
         "'max_grad_norm' must be a finite number", existing_run=True),
    Case("resume with model_ema switched on",
         lambda w, o: base_args(w["data"], o, "--resume_from_checkpoint", "latest", "--model_ema", "true"), 2,
         "holds no EMA of the weights, but this run has model_ema true", existing_run=True),
    Case("resume with fewer epochs than the checkpoint's update",
         lambda w, o: base_args(w["data"], o, "--resume_from_checkpoint", "latest"), 2,
         "is at update 4, past the end of this run (num_train_epochs 1, 2 updates); pass --max_steps 4 or more",
         existing_run=True),
    Case("resume on a one-class dataset",
         lambda w, o: base_args(w["one_class"], o, "--resume_from_checkpoint", "latest"), 2, "at least two classes",
         existing_run=True),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_line_and_loses_nothing(case: Case, world, tmp_path, capsys):
    output_dir = tmp_path / "run"
    before = None
    if case.existing_run:
        shutil.copytree(world["finished"], output_dir)
        before = snapshot(output_dir)
    code = case.command(case.argv(world, output_dir))
    captured = capsys.readouterr()
    assert code == case.exit_code, captured.err[-3000:]
    assert case.phrase in (captured.err if code else captured.out), captured.err[-3000:]
    if code == EXIT_USER_ERROR:
        assert "Traceback" not in captured.err
        assert captured.err.strip().splitlines()[-1].startswith("error: ")
    if before is not None:
        assert snapshot(output_dir) == before, "the existing run changed"
    elif code:
        assert not (output_dir / "model").exists(), "a failed run wrote a model folder"


def test_a_diverging_run_exports_no_non_finite_weights(world, tmp_path, capsys):
    """The streak is never reached (max_nonfinite_steps 1000), yet the weights go non-finite: no model folder, no
    non-finite checkpoint or best model, and the error names the last good checkpoint."""
    output_dir = tmp_path / "run"
    argv = base_args(world["data"], output_dir, "--learning_rate", "1e30", "--max_nonfinite_steps", "1000",
                     "--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "1",
                     "--save_total_limit", "10")  # fmt: skip
    code = run.main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert "weights are not finite" in err and "no model folder was written" in err
    assert not (output_dir / "model").exists() and not (output_dir / "all_results.json").exists()
    checkpoints = list_checkpoints(output_dir / "checkpoints")
    assert (f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was saved") in err
    saved = [checkpoint / "model.safetensors" for checkpoint in checkpoints]
    saved += [output_dir / "best_model" / "model.safetensors"] * (output_dir / "best_model").exists()
    for weights in saved:
        assert all(torch.isfinite(tensor).all() for tensor in load_file(weights).values()), weights


def test_the_model_folder_is_as_readable_as_the_umask_says(world):
    model = world["finished"] / "model"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(model.stat().st_mode) == 0o777 & ~mask
    for file in model.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~mask, file.name


def test_what_is_shared_names_no_local_path_and_claims_no_pretrained_weights(world):
    model = world["finished"] / "model"
    card, config = (model / "README.md").read_text(), (model / "config.json").read_text()
    dataset = world["data"]
    for text in (card, config):
        assert str(dataset) not in text and str(dataset.parent) not in text
    assert f"Dataset: `{dataset.name}`" in card
    assert '"tag"' not in config and "paper_ids" not in config and "hf_hub_id" not in config
    assert "Steady-state throughput" in card and "not measured: the run had 4 update(s), within the warm-up" in card


def test_resuming_from_an_epoch_end_checkpoint_writes_each_evaluation_once(world, tmp_path):
    output_dir = tmp_path / "run"
    argv = base_args(world["data"], output_dir, "--num_train_epochs", "2", "--save_strategy", "steps",
                     "--save_steps", "2", "--save_total_limit", "5")  # fmt: skip
    train_ok(argv)
    first_epoch_end = output_dir / "checkpoints" / "checkpoint-2"
    train_ok([*argv, "--resume_from_checkpoint", str(first_epoch_end)])
    records = [line for line in (output_dir / "metrics.jsonl").read_text().splitlines() if '"eval_loss"' in line]
    evaluations = [line for line in records if '"final"' not in line]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in evaluations]
    assert steps == [2, 4]


def test_sixteen_bit_images_train_and_predict_as_their_8_bit_originals(world, tmp_path, capsys):
    """The validation images as 16-bit PNGs (each 8-bit gray value times 257): predict gives exactly the answers of
    the 8-bit gray originals, where clipping would have made them white."""
    model = str(world["finished"] / "model")
    answers = {}
    for kind in ("gray", "wide"):
        folder = tmp_path / kind
        shutil.copytree(world["data"] / "validation", folder)
        for path in folder.rglob("*.png"):
            gray = Image.open(path).convert("L")
            if kind == "wide":
                Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257).save(path)
                assert Image.open(path).mode == "I;16"
            else:
                gray.save(path)
        assert predict.main(["--model", model, str(folder), "--top_k", "2"]) == EXIT_OK
        answers[kind] = capsys.readouterr().out.replace(str(folder), "<folder>")
    assert answers["wide"] == answers["gray"] and answers["gray"].count("<folder>") == 8


def test_sixteen_bit_images_train_on_the_data_path_with_their_8_bit_statistics(world, tmp_path):
    """The training images' normalisation statistics, measured through the shared decoder, are the 8-bit ones."""
    from accel_recipes.config import make_args
    from accel_recipes.data import build_data

    folders = {}
    for kind in ("gray", "wide"):
        folder = folders[kind] = tmp_path / kind
        shutil.copytree(world["data"], folder)
        for path in folder.rglob("*.png"):
            gray = np.asarray(Image.open(path).convert("L"), dtype=np.uint16)
            Image.fromarray(gray * 257 if kind == "wide" else gray.astype(np.uint8)).save(path)
    means = {kind: build_data(make_args({"dataset_name": str(folder)}).data, seed=0).mean for kind, folder in
             folders.items()}  # fmt: skip
    assert means["wide"] == pytest.approx(means["gray"], abs=1e-9)
    assert max(means["wide"]) < 0.9  # clipped, almost every pixel would be white
