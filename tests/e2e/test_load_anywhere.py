"""A trained model folder loads with the one line its card shows, in a Python process that cannot import
accel_recipes, and predicts the same labels as recipes/predict.py: a standard timm model with timm (the session's
finished run, conftest ``finished_run``), a transformers model with pipeline. The small-image-stem ResNet, through
transformers' custom code, is trained and checked the same way by tests/e2e/test_wheel.py, from the installed
wheel (one training for both proofs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import train_ok
from outside_loader import top1_of_predict_in_process, top1_outside

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vit_run(image_folder, tmp_path_factory) -> Path:
    """The output_dir of a tiny transformers ViT (a config folder: trained from scratch at 32 px, 4 px patches)."""
    from transformers import ViTConfig

    root = tmp_path_factory.mktemp("vit")
    ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32
    ).save_pretrained(root / "config")
    train_ok([
        "--output_dir", root / "run", "--dataset_name", image_folder, "--model_name_or_path", root / "config",
        "--per_device_train_batch_size", "8", "--learning_rate", "0.05", "--max_steps", "4",
        "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true",
    ])  # fmt: skip
    return root / "run"


@pytest.mark.parametrize(
    ("run", "snippet_has"),
    [
        ("finished_run", 'timm.create_model("local-dir:{folder}", pretrained=True)'),
        ("vit_run", 'pipeline("image-classification", model="{folder}")'),
    ],
)
def test_the_cards_line_loads_the_model_without_accel_recipes_and_predicts_the_same(
    run, snippet_has, image_folder, request, tmp_path
):
    folder = request.getfixturevalue(run) / "model"
    test_images = sorted((image_folder / "test").rglob("*.png"))
    # the outside process is the point: it cannot import accel_recipes; predict needs no process of its own
    snippet, outside = top1_outside(folder / "README.md", folder, test_images, tmp_path)
    assert snippet_has.format(folder=folder) in snippet
    assert outside == top1_of_predict_in_process(folder, test_images)
