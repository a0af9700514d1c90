"""``aa_layer``: a timm ResNet with anti-aliased downsampling is built as timm's own resnetblur* / resnetaa*
architecture (the same network as ``aa_layer=<class>``), recorded by that name in the exported folder, and rebuilt
from it by timm, transformers' TimmWrapper and the small-image-stem custom code with the same logits."""

from __future__ import annotations

import copy

import pytest
import timm
import tiny_models
import torch
from timm.layers import BlurPool2d
from torch import nn
from transformers import AutoModelForImageClassification

from accel_recipes.errors import ConfigError
from accel_recipes.models import logits_of
from accel_recipes.models.folder import load_model_folder, save_model_folder

LABELS = ["a", "b", "c"]


def trained(model: nn.Module) -> nn.Module:
    """A copy with weights and BatchNorm statistics no initialiser gives."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        model.train()
        model(torch.randn(4, 3, 32, 32, generator=generator))
    return model.eval()


IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("stem", ["false", "true"])
def test_blur_is_timms_resnetblur_the_same_network_as_timms_class_argument(stem):
    spec = tiny_models.build("resnet18", labels=LABELS, aa_layer="blur", small_image_stem=stem)
    assert spec.architecture == "resnetblur18" and spec.small_image_stem == (stem == "true")
    assert sum(isinstance(module, BlurPool2d) for module in spec.model.modules()) == 3 + (stem == "false")
    if stem == "false":  # same parameters, same outputs with the same weights
        model = trained(spec.model)
        reference = timm.create_model("resnet18", aa_layer=BlurPool2d, num_classes=len(LABELS))
        reference.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert torch.equal(reference.eval()(IMAGES), model(IMAGES))


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["false", "true"])
def test_every_loader_rebuilds_the_exported_folder_with_the_same_logits(tmp_path, stem):
    spec = tiny_models.build("resnet18", labels=LABELS, aa_layer="blur", small_image_stem=stem)
    model = trained(spec.model)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)
    with torch.no_grad():
        expected = model(IMAGES)
        loaded, info = load_model_folder(folder)
        assert info["architecture"] == "resnetblur18" and torch.equal(loaded(IMAGES), expected)
        wrapped = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=stem == "true").eval()
        assert (logits_of(wrapped(IMAGES)) - expected).abs().max() < 1e-5
        if stem == "false":  # timm's own loader cannot express the small-image stem (test_folder.py)
            rebuilt = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
            assert torch.equal(rebuilt(IMAGES), expected)


def test_avg_is_timms_resnetaa():
    spec = tiny_models.build("resnet50d", labels=LABELS, aa_layer="avg")
    assert spec.architecture == "resnetaa50d"


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("resnet18", {"aa_layer": "avg"}, "'resnet18' has no anti-aliased variant with aa_layer avg; .*resnetaa50d"),
        ("test_vit", {"aa_layer": "blur"}, "'test_vit' is not a timm ResNet; .*resnetblur18"),
        ("resnet18", {"aa_layer": "blurpc"}, "aa_layer blurpc cannot build a timm ResNet.* use aa_layer blur"),
        ("resnet18", {"aa_layer": "blur", "pretrained": True}, "is loaded with pretrained weights trained without"),
        ("resnet18", {"aa_layer": "blur", "model_library": "transformers"}, "is a transformers backbone"),
        ("resnet18", {"aa_layer": "blurry"}, r"'aa_layer' must be one of \['blur', 'avg', 'blurpc'\]"),
        ("resnet18", {"aa_layer": "blur", "image_size": 16, "small_image_stem": "false"}, "cannot take 16 px inputs"),
    ],
)
def test_what_cannot_be_built_or_exported_is_a_config_error(name, fields, message):
    with pytest.raises(ConfigError, match=message):
        tiny_models.build(name, labels=LABELS, **fields)
