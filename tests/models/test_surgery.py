"""surgery: the small-image stem, small ViT patches from scratch, and a pretrained ViT's position embeddings
resampled (through timm's resampler) to another input size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import LABELS, build, first_conv_and_pool, tiny_configs, vit_folder
from torch import nn
from transformers import DeiTConfig, DeiTForImageClassification, ViTForImageClassification

from accel_recipes.models import ModelError, logits_of
from accel_recipes.models.surgery import resize_position_embeddings

# ---- the small-image stem ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "resnet"])
def test_resnets_from_scratch_at_32px_get_the_small_image_stem(name, hf_folders):
    spec = build(hf_folders.get(name, name))
    conv, pool = first_conv_and_pool(spec.model)
    assert spec.small_image_stem and "small-image stem" in spec.describe()
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.bias is None
    assert isinstance(pool, nn.Identity)
    features = spec.model.forward_features if hasattr(spec.model, "forward_features") else None
    if features is not None:  # timm: a 32 px image keeps 4x4 of its resolution at the end, not 1x1
        assert features(torch.randn(1, 3, 32, 32)).shape[-1] == 4


@pytest.mark.parametrize("name", ["test_resnet", "resnet"])
@pytest.mark.parametrize("case", [{"small_image_stem": "false"}, {"native_size": 224}])
def test_resnets_keep_their_stem_when_told_or_at_imagenet_size(name, case, hf_folders):
    spec = build(hf_folders.get(name, name), **case)
    conv, pool = first_conv_and_pool(spec.model)
    assert not spec.small_image_stem
    assert conv.stride == (2, 2) and isinstance(pool, nn.MaxPool2d)


def test_forcing_the_stem_at_224px():
    spec = build("test_resnet", native_size=224, small_image_stem="true")
    conv, pool = first_conv_and_pool(spec.model)
    assert spec.small_image_stem and conv.stride == (1, 1) and isinstance(pool, nn.Identity)


@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet", "vit"])
def test_forcing_the_stem_on_a_non_resnet_is_an_error(name, hf_folders):
    with pytest.raises(ModelError, match="small_image_stem true is for ResNets"):
        build(hf_folders.get(name, name), small_image_stem="true")


# ---- ViT patch size ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_vit", "vit"])
def test_vits_from_scratch_use_small_patches_on_small_images(name, hf_folders):
    source = hf_folders.get(name, name)
    at_32 = build(source)
    assert at_32.patch_size == 4 and "patch 4" in at_32.describe()
    at_64 = build(source, native_size=64)
    assert at_64.patch_size == 8
    assert logits_of(at_64.model(torch.randn(1, 3, 64, 64))).shape == (1, len(LABELS))
    explicit = build(source, patch_size=2)
    assert explicit.patch_size == 2


def test_patch_size_errors_name_the_problem():
    with pytest.raises(ModelError, match="patch_size is for ViTs"):
        build("test_resnet", patch_size=4)
    with pytest.raises(ModelError, match="not a multiple of patch_size 5"):
        build("test_vit", patch_size=5)


# ---- position embeddings at another size ------------------------------------------------------------------------


def test_pretrained_transformers_vit_at_another_size_resizes_its_position_embeddings(tmp_path):
    source = build(vit_folder(tmp_path / "src"), labels=["a", "b"]).model.eval()
    source.save_pretrained(tmp_path / "trained")

    spec = build(tmp_path / "trained", pretrained=True, image_size=64)
    model = spec.model.eval()
    assert spec.input_size == 64 and model.config.image_size == 64
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source.vit(images, interpolate_pos_encoding=True).last_hidden_state
        assert torch.allclose(model.vit(images).last_hidden_state, expected, atol=1e-5)
        assert logits_of(model(images)).shape == (2, len(LABELS))


def tiny_vit(patch_size: int = 4) -> ViTForImageClassification:
    config = tiny_configs()["vit"]  # 32 px
    config.patch_size = patch_size
    torch.manual_seed(0)
    return ViTForImageClassification(config)


def interpolated_grid(position: torch.Tensor, prefix: int, old: int, new: int, antialias: bool) -> torch.Tensor:
    """What resizing must give: the grid part as an image, resized bicubically; the prefix tokens as they were."""
    grid = position[:, prefix:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False, antialias=antialias)
    return torch.cat([position[:, :prefix], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)


@pytest.mark.parametrize("size", [64, 48, 16])  # up and down: 8x8 patches to 16x16, 12x12, 4x4
def test_position_embeddings_resample_to_the_new_grid(size):
    model = tiny_vit()
    before = model.vit.embeddings.position_embeddings.detach().clone()
    resize_position_embeddings(model, size, "tiny-vit")

    after = model.vit.embeddings.position_embeddings
    grid = size // 4
    assert isinstance(after, nn.Parameter) and after.requires_grad
    assert after.shape == (1, 1 + grid * grid, 32)
    assert torch.equal(after[:, :1], before[:, :1])  # the class token is not part of the grid
    assert torch.allclose(after, interpolated_grid(before, 1, 8, grid, antialias=False), atol=1e-6)
    assert model.config.image_size == size
    assert model.vit.embeddings.patch_embeddings.num_patches == grid * grid
    assert model.vit.embeddings.patch_embeddings.image_size == (size, size)
    with torch.no_grad():
        assert logits_of(model(torch.randn(1, 3, size, size))).shape == (1, 2)


def test_downsizing_does_not_antialias():
    """As before timm's resampler and as transformers' interpolate_pos_encoding: no antialiasing filter."""
    model = tiny_vit()
    before = model.vit.embeddings.position_embeddings.detach().clone()
    resize_position_embeddings(model, 16, "tiny-vit")
    after = model.vit.embeddings.position_embeddings.detach()
    assert not torch.allclose(after, interpolated_grid(before, 1, 8, 4, antialias=True), atol=1e-4)


def test_class_and_distillation_tokens_are_kept():
    config = DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.image_size, config.patch_size = 32, 4
    model = DeiTForImageClassification(config)
    before = model.deit.embeddings.position_embeddings.detach().clone()
    resize_position_embeddings(model, 64, "tiny-deit")
    after = model.deit.embeddings.position_embeddings
    assert after.shape == (1, 2 + 16 * 16, 32)
    assert torch.allclose(after, interpolated_grid(before, 2, 8, 16, antialias=False), atol=1e-6)


def test_resizing_checks_the_patch_size_and_leaves_an_unchanged_size_alone():
    model = tiny_vit()
    with pytest.raises(ModelError, match="image_size 30 is not a multiple of the patch size 4 of 'tiny-vit'"):
        resize_position_embeddings(model, 30, "tiny-vit")
    position = model.vit.embeddings.position_embeddings
    resize_position_embeddings(model, 32, "tiny-vit")
    assert model.vit.embeddings.position_embeddings is position
