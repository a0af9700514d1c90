"""Exported model folders read by other people's transformers and timm, of the versions a reader may have.

Each reader is a set of versions pinned in requirements/readers/*.txt (installed by ``make readers`` into
``<venv>/readers/<name>``, ahead of the venv on the path), plus the lock's own versions (the newest, the venv
itself). Each reads every kind of folder (timm and transformers backbones, standard and small-image stem) from
the folder on disk and, by its repo id, from a Hub cache, in a process where importing accel_recipes fails,
and must give the pixels, label names and logits of accel_recipes' own predict path, and the same top-1 label
through ``pipeline``. A new transformers or timm release is met here when the lock or a reader's pins move.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
from conftest import ROOT
from outside_loader import BLOCK_ACCEL_RECIPES
from PIL import Image

from accel_recipes.models import logits_of
from accel_recipes.models.folder import save_model_folder
from accel_recipes.predict import Predictor

pytestmark = pytest.mark.slow

READER_PINS = ROOT / "requirements" / "readers"
READERS_DIR = Path(sys.prefix) / "readers"  # make readers installs each reader here, inside the test venv
LOCK_READER = "lock"  # the venv's own transformers and timm: requirements/lock.txt, the newest tested
LABELS = ["airplane", "automobile", "bird", "cat", "deer"]
# transformers 5 resizes uint8 tensors with torchvision where predict resizes with PIL: a few pixels land one
# uint8 level apart (measured: at most 1/255/std, with every reader version). Any other size, mean, std or
# resample moves pixels by far more; the logits of these tiny models then move by at most 7e-4 (measured).
PIXEL_TOLERANCE = 1.001 / 255 / min(tiny_models.DATASET_STD)
LOGIT_TOLERANCE = 5e-3

READ = """
import json
import sys

import timm
import timm.data
import torch
import transformers
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

expected = torch.load(sys.argv[1])
images = [Image.open(path).convert("RGB") for path in expected["images"]]


def compare(pixels, logits, labels, top1, case):
    if pixels.shape != case["pixels"].shape:  # another input size than training's
        return {"pixels": float("inf"), "logits": float("inf"), "shape": list(pixels.shape), "labels": [], "top1": []}
    return {
        "pixels": (pixels.float() - case["pixels"]).abs().max().item(),
        "logits": (logits.float() - case["logits"]).abs().max().item(),
        "labels": list(labels),
        "top1": top1,
    }


def read_with_transformers(source, case):
    processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True)
    model = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=True).eval()
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixels).logits
    labels = [model.config.id2label[index] for index in range(len(case["labels"]))]
    classifier = pipeline("image-classification", model=source, trust_remote_code=True)  # the card's line
    top1 = [classifier(image, top_k=1)[0]["label"] for image in images]
    return compare(pixels, logits, labels, top1, case)


def read_with_timm(repo_id, case):  # the card's timm snippet
    model = timm.create_model("hf-hub:" + repo_id, pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    pixels = torch.stack([transform(image) for image in images])
    with torch.no_grad():
        logits = model(pixels)
    labels = model.pretrained_cfg["label_names"]
    top1 = [labels[int(index)] for index in logits.argmax(dim=-1)]
    return compare(pixels, logits, labels, top1, case)


found = {"versions": {"transformers": transformers.__version__, "timm": timm.__version__}, "reads": {}}
for name, case in expected["cases"].items():
    reads = {
        f"{name} / transformers from the folder": lambda: read_with_transformers(case["folder"], case),
        f"{name} / transformers from the hub": lambda: read_with_transformers(case["repo_id"], case),
    }
    if case["timm_loads"]:
        reads[f"{name} / timm from the hub"] = lambda: read_with_timm(case["repo_id"], case)
    for read, run in reads.items():
        try:
            found["reads"][read] = run()
        except Exception as error:  # reported with the others by the test
            found["reads"][read] = {"error": f"{type(error).__name__}: {error}"}
print("FOUND " + json.dumps(found))
"""


def reader_pins(reader: str) -> dict[str, str]:
    """The exact versions a reader file pins: {package: version}."""
    lines = (READER_PINS / f"{reader}.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines]
    return {name.lower().replace("_", "-"): version for name, version in (pin.split("==") for pin in pins if pin)}


def readers() -> list[str]:
    return sorted(path.stem for path in READER_PINS.glob("*.txt")) + [LOCK_READER]


def reader_path(reader: str) -> str | None:
    """The folder put ahead of the venv for ``reader``, which ``make readers`` must have installed."""
    if reader == LOCK_READER:
        return None
    folder = READERS_DIR / reader
    installed = dict(path.name.removesuffix(".dist-info").split("-") for path in folder.glob("*.dist-info"))
    installed = {name.lower().replace("_", "-"): version for name, version in installed.items()}
    if installed != reader_pins(reader):
        pytest.fail(
            f"reader '{reader}' at {folder} holds {installed or 'nothing'}, not the pins of "
            f"requirements/readers/{reader}.txt; run 'make readers'"
        )
    return str(folder)


def perturbed(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """The model with weights and BatchNorm statistics no initialiser would give: a stand-in for training."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        model.train()
        model(torch.randn(8, 3, size, size, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def expected(tmp_path_factory, hf_folders) -> Path:
    """Every kind of folder, exported, copied into a Hub cache, and what accel_recipes' predict makes of two
    images (one square, one not, neither at the training size)."""
    root = tmp_path_factory.mktemp("readers")
    generator = np.random.default_rng(0)
    images = []
    for index, (width, height) in enumerate([(48, 48), (53, 41)]):
        images.append(root / f"image{index}.png")
        Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(images[-1])
    kinds = {
        "timm resnet": ("test_resnet", {"small_image_stem": "false"}),
        "timm resnet, small stem": ("test_resnet", {}),
        "transformers resnet": (hf_folders["resnet"], {"small_image_stem": "false"}),
        "transformers resnet, small stem": (hf_folders["resnet"], {}),
        "transformers vit": (hf_folders["vit"], {}),
        # trained at one size, evaluated and exported at another (eval_image_size: run.py exports at it)
        "timm resnet, eval size": ("test_resnet", {"small_image_stem": "false"}),
        "transformers resnet, eval size": (hf_folders["resnet"], {"small_image_stem": "false"}),
    }
    cases = {}
    for index, (name, (model_name, fields)) in enumerate(kinds.items()):
        spec = tiny_models.build(model_name, labels=LABELS, **fields)
        assert spec.small_image_stem == ("small stem" in name), name
        model = perturbed(spec.model, spec.input_size)
        exported = replace(spec, input_size=spec.input_size + 8) if "eval size" in name else spec
        folder = save_model_folder(exported, model, root / f"model{index}", LABELS)
        repo_id = f"readers/model{index}"
        shutil.copytree(folder, tiny_models.fake_hub_cache(root / "hub", repo_id), dirs_exist_ok=True)
        predictor = Predictor(folder, device="cpu")
        with torch.no_grad():
            batch = torch.stack([predictor.transform(Image.open(image).convert("RGB")) for image in images])
            pixels = predictor.normalizer(batch)
            logits = logits_of(predictor.model(pixels)).float()
        cases[name] = {
            "folder": str(folder),
            "repo_id": repo_id,
            "labels": predictor.labels,
            "pixels": pixels,
            "logits": logits,
            "top1": [LABELS[int(index)] for index in logits.argmax(dim=-1)],
            "timm_loads": spec.library == "timm" and not spec.small_image_stem,  # timm cannot express the stem
        }
    torch.save({"images": [str(image) for image in images], "cases": cases}, root / "expected.pt")
    return root / "expected.pt"


@pytest.mark.parametrize("reader", readers())
def test_every_folder_reads_the_same_in_each_reader_version(reader, expected, tmp_path):
    path = reader_path(reader)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(expected.parent / "hub"),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "TOKENIZERS_PARALLELISM": "false",
        **({"PYTHONPATH": path} if path else {}),
    }
    command = [sys.executable, "-c", BLOCK_ACCEL_RECIPES + READ, str(expected)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    found = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("FOUND "))[6:])
    if path:
        pins = reader_pins(reader)
        assert {name: pins[name] for name in found["versions"] if name in pins} == {
            name: version for name, version in found["versions"].items() if name in pins
        }, "the reader imported other versions than its pins"
    cases = torch.load(expected)["cases"]
    wrong = []
    for read, got in found["reads"].items():
        case = cases[read.split(" / ")[0]]
        if "error" in got:
            wrong.append(f"{read}: {got['error'][:500]}")
            continue
        if got["labels"] != case["labels"] or got["top1"] != case["top1"]:
            wrong.append(f"{read}: labels {got['labels']} top-1 {got['top1']}, expected {case['top1']}")
        if got["pixels"] > PIXEL_TOLERANCE or got["logits"] > LOGIT_TOLERANCE:
            shape = f" (input shape {got['shape']})" if "shape" in got else ""
            wrong.append(f"{read}: pixels differ by {got['pixels']:.3g}, logits by {got['logits']:.3g}{shape}")
    assert not wrong, f"{reader} ({found['versions']}):\n" + "\n".join(wrong)
    assert len(found["reads"]) == 2 * len(cases) + sum(case["timm_loads"] for case in cases.values())
