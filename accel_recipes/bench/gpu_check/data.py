"""The GPU check's own data, written into its output folder, so it runs with no network: CIFAR-10 and CIFAR-100
"python version" batches of generated images, the Fashion-MNIST IDX files copied from Debian's
dataset-fashion-mnist package, and transformers ViT-B/16 config folders standing in for the Hub checkpoints."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np

from accel_recipes.io import atomic_file

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _pickle(path: Path, obj: dict) -> None:
    with atomic_file(path) as temporary, temporary.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _rows(count: int, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """(count, 3072) uint8 rows in CIFAR's plane order; each class has its own mean colour, so a model learns."""
    labels = rng.integers(0, num_classes, size=count)
    base = rng.integers(0, 256, size=(num_classes, 3, 1), dtype=np.int64)
    noise = rng.integers(-60, 61, size=(count, 3, 1024), dtype=np.int64)
    rows = np.clip(base[labels] + noise, 0, 255).astype(np.uint8).reshape(count, 3072)
    return rows, labels.tolist()


def write_cifar(root: Path, variant: str, train: int, test: int, seed: int = 0) -> Path:
    """``cifar-10-batches-py/`` or ``cifar-100-python/`` under ``root`` as the official archives unpack (one
    training batch), with ``train`` and ``test`` generated images; returns that folder."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if variant == "cifar10" else 100
    names = [f"class_{index}".encode() for index in range(num_classes)]
    train_rows, train_labels = _rows(train, num_classes, rng)
    test_rows, test_labels = _rows(test, num_classes, rng)
    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        _pickle(folder / "data_batch_1", {b"labels": train_labels, b"data": train_rows})
        _pickle(folder / "test_batch", {b"labels": test_labels, b"data": test_rows})
        _pickle(folder / "batches.meta", {b"label_names": names})
        return folder
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    _pickle(folder / "train", {b"fine_labels": train_labels, b"data": train_rows})
    _pickle(folder / "test", {b"fine_labels": test_labels, b"data": test_rows})
    _pickle(folder / "meta", {b"fine_label_names": names})
    return folder


def copy_fashion_mnist(root: Path, source: Path = FASHION_MNIST) -> Path | None:
    """The four IDX files (``.gz`` or not) copied into ``root/fashion-mnist``; None when ``source`` lacks them."""
    target = root / "fashion-mnist"
    found = []
    for name in IDX_NAMES:
        candidates = [source / name, source / f"{name}.gz"]
        present = [path for path in candidates if path.is_file()]
        if not present:
            return None
        found.append(present[0])
    target.mkdir(parents=True, exist_ok=True)
    for path in found:
        if not (target / path.name).is_file():
            shutil.copyfile(path, target / path.name)
    return target


def write_vit_config(folder: Path, tiny: bool) -> Path:
    """A transformers ViT config folder: ViT-B/16 at 224 px (``google/vit-base-patch16-224-in21k``'s architecture,
    from random weights since the Hub cannot be reached), or a tiny one for the smoke mode."""
    from transformers import ViTConfig

    if tiny:
        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    else:
        config = ViTConfig()  # hidden 768, 12 layers, 12 heads, patch 16, 224 px: ViT-B/16
    config.save_pretrained(folder)
    return folder
