"""build_model: the head, the input size and the normalisation, whichever library builds the model, and
logits_of on either library's output."""

from __future__ import annotations

import pytest
import torch
from tiny_models import DATASET_MEAN, DATASET_STD, LABELS, build

from accel_recipes.config import ModelArguments
from accel_recipes.models import ModelError, build_model, logits_of


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_efficientnet", "vit", "resnet", "efficientnet"])
def test_build_from_scratch_gives_the_head_the_dataset_stats_and_native_size(name, hf_folders):
    source = hf_folders.get(name, name)
    spec = build(source)
    logits = logits_of(spec.model(torch.randn(2, 3, 32, 32)))
    assert logits.shape == (2, len(LABELS))
    assert spec.library == ("timm" if name.startswith("test_") else "transformers")
    assert spec.input_size == 32
    assert spec.mean == DATASET_MEAN and spec.std == DATASET_STD
    assert spec.interpolation == "bilinear" and not spec.pretrained
    assert spec.num_parameters == sum(p.numel() for p in spec.model.parameters())
    assert spec.architecture in spec.describe() and "from scratch" in spec.describe()


def test_build_model_takes_the_model_group_alone():
    spec = build_model(ModelArguments(model_name_or_path="test_resnet"), ("a", "b"), DATASET_MEAN, DATASET_STD, 32)
    assert spec.library == "timm" and spec.model.fc.out_features == 2


def test_image_size_wins_over_the_native_size():
    spec = build("test_efficientnet", image_size=48)
    assert spec.input_size == 48
    assert logits_of(spec.model(torch.randn(1, 3, 48, 48))).shape == (1, len(LABELS))


def test_labels_and_image_size_are_checked_first():
    with pytest.raises(ModelError, match="no labels"):
        build("test_resnet", labels=[])
    with pytest.raises(ModelError, match="image_size must be positive, got 0"):
        build_model(ModelArguments(model_name_or_path="test_resnet", image_size=0), LABELS, (0.5,), (0.5,), 32)


def test_logits_of_accepts_tensors_and_model_outputs():
    logits = torch.randn(2, 3)

    class Output:
        pass

    output = Output()
    output.logits = logits
    assert logits_of(logits) is logits and logits_of(output) is logits
    with pytest.raises(TypeError, match="neither a Tensor"):
        logits_of({"scores": logits})
