"""recipes/predict.py: top-k labels with the preprocessing of evaluation, from a model folder or a Hub id; the same
top-1 as timm's and transformers' own loaders; unreadable files reported by name and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import timm
import torch
import transformers
from PIL import Image
from test_card import LABELS, make_run_folder

from accel_recipes import predict
from accel_recipes.predict import PredictError, Predictor, image_files, main, predict_files, resolve_model


def write_images(folder: Path, count: int = 4, size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        side = size + 8 * index
        colour = rng.integers(0, 256, size=3)  # a different colour each, with noise: images a model tells apart
        noise = rng.integers(-40, 41, size=(side, side, 3))
        pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
        path = folder / f"image-{index}.{'png' if index % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {kind: make_run_folder(root / kind, kind) for kind in ("test_vit", "test_resnet", "transformers-vit")}


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    write_images(folder)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored in folders")
    return folder


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- the command ------------------------------------------------------------------------------------------------


def test_a_folder_with_a_corrupt_image_reports_it_and_predicts_the_rest(runs, images, capsys):
    code, out, err = run_main(capsys, "--model", str(runs["test_vit"] / "model"), str(images), "--top_k", "3", "--json")
    assert code == 0
    results = json.loads(out)
    assert [Path(entry["file"]).name for entry in results] == [
        f"image-{i}.{'png' if i % 2 else 'jpg'}" for i in (0, 1, 2, 3)
    ]
    for entry in results:
        assert len(entry["predictions"]) == 3 and {p["label"] for p in entry["predictions"]} <= set(LABELS)
        scores = [p["score"] for p in entry["predictions"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert f"skipped {images / 'corrupt.png'}: not a readable image" in err
    assert "notes.txt" not in err


def test_table_output_lists_file_rank_label_score(runs, images, capsys):
    code, out, _ = run_main(
        capsys, "--model", str(runs["test_vit"] / "model"), str(images / "image-0.jpg"), "--top_k", "2"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["file", "rank", "label", "score"]
    assert lines[1].split()[0] == str(images / "image-0.jpg") and lines[1].split()[1] == "1"
    assert lines[2].split()[0] == "2" and len(lines) == 3


def test_exit_status_is_1_when_no_image_could_be_predicted(runs, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("plain text")
    code, out, err = run_main(
        capsys, "--model", str(runs["test_vit"] / "model"), str(bad), str(tmp_path / "missing.png")
    )
    assert code == 1 and out == ""
    assert f"skipped {bad}: not a readable image" in err and f"skipped {tmp_path / 'missing.png'}: no such file" in err


def test_top_k_larger_than_the_classes_gives_every_class(runs, images, capsys):
    _, out, _ = run_main(
        capsys, "--model", str(runs["test_vit"] / "model"), str(images / "image-1.png"), "--top_k", "50", "--json"
    )
    assert sorted(p["label"] for p in json.loads(out)[0]["predictions"]) == sorted(LABELS)


def test_a_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_main(capsys, "--model", str(tmp_path / "nothing" / "model"), str(tmp_path))
    assert code == 2 and "neither a model folder nor a Hub id" in err


# ---- predict == eval, and == the libraries' own loaders ---------------------------------------------------------


def test_predictions_are_the_evaluation_forward_pass(runs, tmp_path):
    """The engine's eval: make_transform(train=False) -> uint8 batch -> Normalizer -> model."""
    from accel_recipes.data import make_transform
    from accel_recipes.models.folder import load_model_folder
    from accel_recipes.models.preprocess import Normalizer

    paths = write_images(tmp_path / "images", count=3)
    model, info = load_model_folder(runs["test_resnet"] / "model")
    transform = make_transform(False, "crop_flip", info["input_size"], 32, 4, info["interpolation"])
    batch = torch.stack([transform(Image.open(path)) for path in paths])
    with torch.no_grad():
        expected = model(Normalizer(info["mean"], info["std"])(batch)).softmax(-1)
    predictor = Predictor(runs["test_resnet"] / "model", device="cpu")
    predictions, failed = predict_files(predictor, paths, k=1)
    assert not failed
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction.top[0] == (LABELS[int(row.argmax())], pytest.approx(float(row.max()), abs=1e-5))


def test_timm_loads_the_folder_and_agrees_with_predict(runs, tmp_path):
    folder = runs["test_vit"] / "model"
    paths = write_images(tmp_path / "images", count=4)  # 32, 40, 48, 56 px: resized like evaluation resizes
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**config)
    with torch.no_grad():
        probabilities = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])).softmax(-1)
    predictions, _ = predict_files(Predictor(folder, device="cpu"), paths, k=1)
    assert len({prediction.top[0][0] for prediction in predictions}) > 1, "the test needs images that differ"
    for prediction, row in zip(predictions, probabilities, strict=True):
        assert prediction.top[0][0] == model.pretrained_cfg["label_names"][int(row.argmax())]
        assert prediction.top[0][1] == pytest.approx(float(row.max()), abs=2e-3)


def test_transformers_pipeline_loads_the_folder_and_agrees_with_predict(runs, tmp_path):
    folder = runs["transformers-vit"] / "model"
    paths = write_images(tmp_path / "images", count=4)
    classifier = transformers.pipeline("image-classification", model=str(folder))
    predictions, _ = predict_files(Predictor(folder, device="cpu"), paths, k=1)
    for prediction, path in zip(predictions, paths, strict=True):
        [top] = classifier(Image.open(path), top_k=1)
        assert prediction.top[0][0] == top["label"]
        # at the training size no resize happens and the numbers match; other sizes go through the processor's
        # own resize kernel, which rounds differently from PIL's by a few parts in a thousand
        tolerance = 1e-4 if Image.open(path).size == (32, 32) else 2e-2
        assert prediction.top[0][1] == pytest.approx(top["score"], abs=tolerance)


def test_a_small_stem_resnet_predicts_through_load_model_folder(runs, images, capsys):
    code, out, _ = run_main(capsys, "--model", str(runs["test_resnet"] / "model"), str(images), "--json")
    assert code == 0 and len(json.loads(out)) == 4


# ---- Hub ids ----------------------------------------------------------------------------------------------------


def test_a_hub_id_is_downloaded_as_json_and_safetensors_only(runs, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(runs["test_vit"] / "model")

    monkeypatch.setattr(predict, "hub_offline", lambda: False)
    monkeypatch.setattr(predict, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model("me/cifar10-vit") == runs["test_vit"] / "model"
    [(repo_id, kwargs)] = calls
    assert repo_id == "me/cifar10-vit" and kwargs["local_files_only"] is False
    assert kwargs["allow_patterns"] == ["*.json", "*.safetensors"]  # never a pickle


def test_a_hub_id_without_network_fails_fast_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(predict, "hub_offline", lambda: False)
    monkeypatch.setattr(predict, "hub_reachable", lambda: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, _, err = run_main(capsys, "--model", "me/cifar10-vit", str(tmp_path), "--cache_dir", str(tmp_path / "cache"))
    assert code == 2
    assert "cannot download 'me/cifar10-vit': the Hugging Face Hub is unreachable (no network connection)" in err
    assert "pass --model with a local model folder" in err


def test_names_that_are_neither_folders_nor_hub_ids_are_refused(tmp_path):
    for name in ("./runs/x/model", "a/b/c", str(tmp_path / "file.txt")):
        with pytest.raises(PredictError, match="neither a model folder nor a Hub id"):
            resolve_model(name)


def test_image_files_expands_folders_and_reports_missing_paths(tmp_path):
    paths = write_images(tmp_path / "a" / "b", count=2)
    (tmp_path / "empty").mkdir()
    files, problems = image_files([tmp_path / "a", tmp_path / "nope.png", tmp_path / "empty"])
    assert files == sorted(paths)
    assert problems[0] == (str(tmp_path / "nope.png"), "no such file or folder")
    assert problems[1][0] == str(tmp_path / "empty") and problems[1][1].startswith("no image files")
