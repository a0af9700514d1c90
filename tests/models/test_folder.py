"""folder: save_model_folder / load_model_folder give safetensors folders that timm, transformers and pipeline()
load back to the same logits, written atomically; the facts the card reads from a folder's config.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import tiny_models
import torch
import transformers
from PIL import Image
from torch import nn
from transformers import AutoModelForImageClassification, ResNetConfig, ViTConfig

from accel_recipes.models import ExportError, ModelSpec, logits_of
from accel_recipes.models import folder as model_folder
from accel_recipes.models.folder import load_model_folder, recorded_facts, save_model_folder

LABELS = ["airplane", "automobile", "bird", "cat", "deer"]
MEAN = tiny_models.DATASET_MEAN
STD = tiny_models.DATASET_STD


def build(name: str | Path, labels: list[str] = LABELS, **fields) -> ModelSpec:
    return tiny_models.build(name, labels=labels, **fields)


def trained_copy(spec: ModelSpec) -> nn.Module:
    """A different object than spec.model, with weights and BatchNorm statistics no initialiser would give."""
    model = copy.deepcopy(spec.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        model.train()
        model(torch.randn(8, 3, spec.input_size, spec.input_size, generator=generator))
    return model.eval()


def fixed_images(size: int = 32) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))


def assert_safetensors_only(folder: Path) -> None:
    assert list(folder.glob("*.safetensors"))
    assert not [*folder.glob("*.bin"), *folder.glob("*.pt"), *folder.glob("*.pth")]


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Overrides conftest's: the ViT config at its default 224 px (building from scratch at 32 px resizes it)."""
    root = tmp_path_factory.mktemp("hf-configs")
    ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(
        root / "vit"
    )
    ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic").save_pretrained(
        root / "resnet"
    )
    return {"vit": root / "vit", "resnet": root / "resnet"}


# ---- timm -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_vit", "test_resnet", "test_efficientnet"])
def test_timm_round_trip_gives_identical_logits(name, tmp_path):
    spec = build(name)
    model = trained_copy(spec)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)
    assert folder == tmp_path / "model"
    assert_safetensors_only(folder)

    loaded, info = load_model_folder(folder)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(fixed_images()), model(fixed_images()))
    assert info == {
        "library": "timm",
        "architecture": name,
        "small_image_stem": name == "test_resnet",
        "input_size": 32,
        "mean": MEAN,
        "std": STD,
        "interpolation": "bilinear",
        "label_names": LABELS,
    }


def test_timm_config_follows_timms_hub_layout(tmp_path):
    spec = build("test_vit")
    folder = save_model_folder(spec, trained_copy(spec), tmp_path / "model", LABELS)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_vit" and config["num_classes"] == len(LABELS)
    assert config["label_names"] == LABELS and config["num_features"] == 64
    assert config["model_args"]["patch_size"] == 4 and list(config["model_args"]["img_size"]) == [32, 32]
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 1.0 and cfg["num_classes"] == len(LABELS)
    assert tuple(cfg["mean"]) == MEAN and tuple(cfg["std"]) == STD and cfg["interpolation"] == "bilinear"
    assert config["accel_recipes"]["preprocessing"] == {
        "input_size": 32,
        "mean": list(MEAN),
        "std": list(STD),
        "interpolation": "bilinear",
    }


@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet"])
def test_timm_itself_loads_the_folder(name, tmp_path):
    spec = build(name)
    model = trained_copy(spec)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)
    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(fixed_images()), model(fixed_images()))
    data_config = timm.data.resolve_data_config(model=reloaded)
    assert tuple(data_config["input_size"]) == (3, 32, 32) and tuple(data_config["mean"]) == MEAN
    assert reloaded.pretrained_cfg["label_names"] == LABELS


def test_channels_last_weights_export(tmp_path):
    spec = build("test_resnet")
    model = trained_copy(spec).to(memory_format=torch.channels_last)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)
    loaded, _ = load_model_folder(folder)
    with torch.no_grad():
        assert torch.allclose(loaded(fixed_images()), model(fixed_images()), atol=1e-5)


def test_small_image_stem_is_recorded_and_rebuilt(tmp_path):
    spec = build("test_resnet")
    assert spec.small_image_stem
    model = trained_copy(spec)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)
    assert json.loads((folder / "config.json").read_text())["accel_recipes"]["small_image_stem"] is True

    loaded, info = load_model_folder(folder)
    assert info["small_image_stem"] and isinstance(loaded.maxpool, nn.Identity)
    assert loaded.conv1[0].stride == (1, 1)


@pytest.mark.parametrize("name", ["test_resnet", "resnet"])
def test_fine_tuning_from_an_exported_small_stem_folder_keeps_stem_and_weights(name, tmp_path, hf_folders):
    spec = build(hf_folders.get(name, name))
    model = trained_copy(spec)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)

    new_labels = ["a", "b", "c"]
    tuned = build(folder, labels=new_labels, pretrained=True)
    assert tuned.small_image_stem and tuned.pretrained and tuned.input_size == 32 and tuned.mean == MEAN
    trained_state, tuned_state = model.state_dict(), tuned.model.state_dict()
    body = [key for key in trained_state if not key.startswith(("fc.", "classifier."))]
    assert body and all(torch.equal(trained_state[key], tuned_state[key]) for key in body)
    assert logits_of(tuned.model(fixed_images())).shape == (3, len(new_labels))


# ---- transformers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_transformers_round_trip_gives_identical_logits(kind, tmp_path, hf_folders):
    spec = build(hf_folders[kind])
    model = trained_copy(spec)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)
    assert_safetensors_only(folder)
    assert (folder / "preprocessor_config.json").is_file()

    loaded, info = load_model_folder(folder)
    with torch.no_grad():
        assert torch.equal(logits_of(loaded(fixed_images())), logits_of(model(fixed_images())))
    assert info["library"] == "transformers" and info["label_names"] == LABELS
    assert info["input_size"] == 32 and info["mean"] == MEAN and info["small_image_stem"] == (kind == "resnet")


def test_transformers_and_pipeline_load_the_folder(tmp_path, hf_folders):
    spec = build(hf_folders["vit"])
    model = trained_copy(spec)
    folder = save_model_folder(spec, model, tmp_path / "model", LABELS)

    reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert reloaded.config.id2label == dict(enumerate(LABELS))
    with torch.no_grad():
        assert torch.equal(reloaded(fixed_images()).logits, model(fixed_images()).logits)

    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    normalised = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None]) / (
        torch.tensor(STD)[:, None, None]
    )
    with torch.no_grad():
        expected = model(normalised[None]).logits.softmax(-1)[0]
    classifier = transformers.pipeline("image-classification", model=str(folder))
    top = classifier(image, top_k=1)[0]
    assert top["label"] == LABELS[int(expected.argmax())]
    assert top["score"] == pytest.approx(float(expected.max()), abs=1e-4)


# ---- writing safely ---------------------------------------------------------------------------------------------


def test_saving_twice_replaces_the_folder_and_leaves_no_temporaries(tmp_path):
    spec = build("test_efficientnet")
    save_model_folder(spec, spec.model, tmp_path / "model", LABELS)
    second = trained_copy(spec)
    save_model_folder(spec, second, tmp_path / "model", LABELS)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    loaded, _ = load_model_folder(tmp_path / "model")
    with torch.no_grad():
        assert torch.equal(loaded(fixed_images()), second(fixed_images()))


def test_a_failed_save_keeps_the_previous_folder_intact(tmp_path, monkeypatch):
    spec = build("test_efficientnet")
    save_model_folder(spec, spec.model, tmp_path / "model", LABELS)
    before = (tmp_path / "model" / "model.safetensors").read_bytes()

    def fail_half_way(spec, model, folder, label_names, state_dict=None):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model_folder, "_write_timm", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_model_folder(spec, trained_copy(spec), tmp_path / "model", LABELS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before


def test_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path):
    spec = build("test_efficientnet")
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a model folder"):
        save_model_folder(spec, spec.model, target, LABELS)
    assert (target / "notes.txt").read_text() == "keep me"


def test_label_count_must_match_the_head(tmp_path):
    spec = build("test_efficientnet")
    with pytest.raises(ExportError, match="has 5 outputs but 2 label names"):
        save_model_folder(spec, spec.model, tmp_path / "model", ["a", "b"])
    assert not list(tmp_path.iterdir())


def test_loading_a_missing_folder_says_so(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        load_model_folder(tmp_path / "nothing")


def test_weights_that_do_not_fit_the_config_are_reported(tmp_path):
    spec = build("test_efficientnet")
    folder = save_model_folder(spec, spec.model, tmp_path / "model", LABELS)
    other = build("test_vit")
    save_model_folder(other, other.model, tmp_path / "other", LABELS)
    (tmp_path / "other" / "model.safetensors").replace(folder / "model.safetensors")
    with pytest.raises(ExportError, match="cannot load the model folder"):
        load_model_folder(folder)


# ---- what the card reads ----------------------------------------------------------------------------------------


def test_recorded_facts_are_the_accel_recipes_block(tmp_path):
    spec = build("test_resnet")
    folder = save_model_folder(spec, spec.model, tmp_path / "model", LABELS)
    facts = recorded_facts(json.loads((folder / "config.json").read_text()))
    assert facts == {
        "library": "timm",
        "architecture": "test_resnet",
        "small_image_stem": True,
        "label_names": LABELS,
        "preprocessing": {"input_size": 32, "mean": list(MEAN), "std": list(STD), "interpolation": "bilinear"},
    }


def test_recorded_facts_of_a_folder_the_libraries_wrote_are_empty():
    assert recorded_facts({"architecture": "resnet50", "num_classes": 3}) == {}
    assert recorded_facts({"model_type": "vit", "accel_recipes": "not a block"}) == {}
    assert recorded_facts({"accel_recipes": {"library": "timm", "unrelated": 1}}) == {"library": "timm"}


# ---- custom code for the small-image stem -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["timm", "transformers"])
def test_small_stem_folder_loads_through_transformers_custom_code_without_accel_recipes(kind, tmp_path, hf_folders):
    """In a process where importing accel_recipes fails: the trained weights, the label names, the same logits,
    and the image processor with the training size, mean and std."""
    import subprocess
    import sys

    from outside_loader import BLOCK_ACCEL_RECIPES

    spec = build("test_resnet" if kind == "timm" else hf_folders["resnet"])
    assert spec.small_image_stem
    trained = trained_copy(spec)
    folder = save_model_folder(spec, trained, tmp_path / "model", LABELS)
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForImageClassification"}
    for name in ("configuration_small_stem_resnet.py", "modeling_small_stem_resnet.py"):
        assert "accel_recipes" not in (folder / name).read_text().split('"""', 2)[-1]  # code, not docstrings
    images = fixed_images()
    torch.save({"images": images, "logits": logits_of(trained(images))}, tmp_path / "expected.pt")
    program = (
        BLOCK_ACCEL_RECIPES
        + f"""
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification
expected = torch.load({str(tmp_path / "expected.pt")!r})
model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
with torch.no_grad():
    difference = (model(expected["images"]).logits - expected["logits"]).abs().max().item()
assert difference < 1e-5, difference
assert [model.config.id2label[i] for i in range(5)] == {LABELS!r}
processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
assert processor.size == {{"height": 32, "width": 32}}, processor.size
assert tuple(processor.image_mean) == {MEAN!r} and tuple(processor.image_std) == {STD!r}
try:
    AutoModelForImageClassification.from_pretrained({str(folder)!r})
except Exception:
    print("REFUSED")
print("OK")
"""
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    # a 7x7 stem refuses the 3x3 weights; timm's 'deep' stem (test_resnet) keeps its first conv's shape, so
    # transformers' TimmWrapper silently builds the strided stem there: only trust_remote_code gives the right model
    assert result.stdout.split()[-2:] == (["REFUSED", "OK"] if kind == "transformers" else ["OK"])
