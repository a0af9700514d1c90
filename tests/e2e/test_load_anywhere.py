"""A trained model folder loads with the one line its card shows, in a Python process that cannot import
accel_recipes, and predicts the same labels as recipes/predict.py: a standard timm model with timm, a
transformers model with pipeline. The small-image-stem ResNet, through transformers' custom code, is trained and
checked the same way by tests/e2e/test_wheel.py, from the installed wheel (one training for both proofs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datagen
import pytest
from conftest import ROOT, accelerate_command
from outside_loader import top1_of_predict, top1_outside

pytestmark = pytest.mark.slow

PREDICT = [sys.executable, str(ROOT / "recipes" / "predict.py")]


@pytest.fixture(scope="module")
def images(data_root) -> Path:
    return datagen.make_image_folder(data_root / "anywhere", num_classes=3, per_class=8)


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    """A tiny transformers ViT config folder (trained from scratch at 32 px, 4 px patches)."""
    from transformers import ViTConfig

    folder = tmp_path_factory.mktemp("vit")
    ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32
    ).save_pretrained(folder)
    return folder


def train(images: Path, model: str, output_dir: Path) -> Path:
    """One process, as the training module: ``accelerate launch -m accel_recipes.train`` (the console entry
    point's module) for the timm model, ``python recipes/train.py`` otherwise (no launcher: faster)."""
    command = [*accelerate_command(), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision"]
    command += ["no", "--dynamo_backend", "no", "-m", "accel_recipes.train"]
    if model != "test_efficientnet":
        command = [sys.executable, str(ROOT / "recipes" / "train.py")]
    command += [
        "--output_dir", str(output_dir), "--dataset_name", str(images), "--model_name_or_path", model,
        "--per_device_train_batch_size", "8", "--learning_rate", "0.05", "--max_steps", "4",
        "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, cwd=output_dir.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    return output_dir / "model"


@pytest.mark.parametrize(
    ("model", "snippet_has"),
    [
        ("test_efficientnet", 'timm.create_model("local-dir:{folder}", pretrained=True)'),
        ("vit", 'pipeline("image-classification", model="{folder}")'),
    ],
)
def test_the_cards_line_loads_the_model_without_accel_recipes_and_predicts_the_same(
    model, snippet_has, images, vit, tmp_path
):
    folder = train(images, str(vit) if model == "vit" else model, tmp_path / "run")
    test_images = sorted((images / "test").rglob("*.png"))
    snippet, outside = top1_outside(folder / "README.md", folder, test_images, tmp_path)
    assert snippet_has.format(folder=folder) in snippet
    assert outside == top1_of_predict(PREDICT, folder, test_images, tmp_path)
