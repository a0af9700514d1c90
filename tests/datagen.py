"""Small, learnable image-classification datasets written in the real on-disk formats.

Every generator is seeded and fast (well under a second at the default sizes) and returns the path to pass as
``--dataset_name``. Each class has its own colour (or grey level) and stripe pattern, plus noise, so a tiny model
beats chance within a few optimizer steps: tests of whole training runs can assert that it learned something.
"""

from __future__ import annotations

import colorsys
import gzip
import pickle
import struct
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# fmt: off
CIFAR100_FINE_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
]
CIFAR100_COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]
FASHION_MNIST_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# fmt: on


def class_names(num_classes: int, names: list[str] = CIFAR10_NAMES) -> list[str]:
    """The first ``num_classes`` of ``names``, or ``class_0``, ``class_1``... when there are not enough."""
    return names[:num_classes] if num_classes <= len(names) else [f"class_{i}" for i in range(num_classes)]


def make_images(labels: np.ndarray, num_classes: int, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 images (N, size, size, channels), or (N, size, size) for one channel, one look per class.

    Class c gets a colour spread around the hue circle (a grey level when single-channel) and stripes whose angle
    and period depend on c; Gaussian noise (sigma 20/255) keeps every image different.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((len(labels), size, size, channels), dtype=np.float32)
    for c in range(num_classes):
        where = labels == c
        if not where.any():
            continue
        angle = np.pi * (c % 4) / 4
        period = 4 + 2 * ((c // 4) % 4)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
        if channels == 1:
            colour = np.array([0.2 + 0.7 * c / max(num_classes - 1, 1)])
        else:
            colour = np.array(colorsys.hsv_to_rgb(c / num_classes, 0.8, 0.95))
            if channels == 4:
                colour = np.append(colour, 1.0)
        pattern = 255 * colour[None, None, :] * (0.7 + 0.3 * stripes[:, :, None])
        noise = rng.normal(0, 20, size=(int(where.sum()), size, size, channels))
        images[where] = pattern[None] + noise
    images = np.clip(images, 0, 255).astype(np.uint8)
    if channels == 4:
        images[..., 3] = 255
    return images[..., 0] if channels == 1 else images


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """``per_class`` labels of each class, in a seeded random order (as real datasets are rarely sorted)."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def _hub_split(num_classes: int, per_class: int, size: int, seed: int, fine: bool, features: datasets.Features):
    labels = balanced_labels(num_classes, per_class, seed)
    images = make_images(labels, num_classes, size, 3, seed + 1)
    columns = {"img": list(images)}
    if fine:
        columns["fine_label"] = labels.tolist()
        columns["coarse_label"] = (labels // 5 % 20).tolist()
    else:
        columns["label"] = labels.tolist()
    return datasets.Dataset.from_dict(columns, features=features)


def make_cifar_hub_dataset(
    root: Path,
    num_classes: int = 10,
    train_per_class: int = 20,
    test_per_class: int = 5,
    size: int = 32,
    fine: bool = False,
    seed: int = 0,
) -> Path:
    """A ``save_to_disk`` DatasetDict (splits train and test) with the schema of uoft-cs/cifar10, or of
    uoft-cs/cifar100 when ``fine`` (columns ``img``, ``fine_label``, ``coarse_label``)."""
    if fine:
        features = datasets.Features(
            {
                "img": datasets.Image(),
                "fine_label": datasets.ClassLabel(names=class_names(num_classes, CIFAR100_FINE_NAMES)),
                "coarse_label": datasets.ClassLabel(names=CIFAR100_COARSE_NAMES),
            }
        )
    else:
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=class_names(num_classes))}
        )
    splits = datasets.DatasetDict(
        train=_hub_split(num_classes, train_per_class, size, seed, fine, features),
        test=_hub_split(num_classes, test_per_class, size, seed + 100, fine, features),
    )
    path = Path(root) / ("cifar100-hub" if fine else "cifar10-hub")
    splits.save_to_disk(str(path))
    return path


def _cifar_rows(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """(N, 3072) uint8 rows: the red plane, then green, then blue, each row-major, as in the CIFAR batches."""
    images = make_images(labels, num_classes, 32, 3, seed)
    return images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar_python(
    root: Path,
    variant: str = "cifar10",
    per_class_train: int = 10,
    per_class_test: int = 4,
    seed: int = 0,
) -> Path:
    """CIFAR "python version" batches exactly as the official tarballs unpack: ``cifar-10-batches-py/`` (data_batch_1
    to 5, test_batch, batches.meta) or ``cifar-100-python/`` (train, test, meta). Returns that folder."""
    if variant not in ("cifar10", "cifar100"):
        raise ValueError(f"variant must be 'cifar10' or 'cifar100', got {variant!r}")
    num_classes = 10 if variant == "cifar10" else 100
    train_labels = balanced_labels(num_classes, per_class_train, seed)
    test_labels = balanced_labels(num_classes, per_class_test, seed + 100)
    train_rows = _cifar_rows(train_labels, num_classes, seed + 1)
    test_rows = _cifar_rows(test_labels, num_classes, seed + 101)
    if variant == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
            _pickle(
                folder / f"data_batch_{i}",
                {
                    b"batch_label": f"training batch {i} of 5".encode(),
                    b"labels": train_labels[part].tolist(),
                    b"data": train_rows[part],
                    b"filenames": [f"img_{j}.png".encode() for j in part],
                },
            )
        _pickle(
            folder / "test_batch",
            {
                b"batch_label": b"testing batch 1 of 1",
                b"labels": test_labels.tolist(),
                b"data": test_rows,
                b"filenames": [f"test_{j}.png".encode() for j in range(len(test_labels))],
            },
        )
        meta = {b"label_names": [name.encode() for name in CIFAR10_NAMES], b"num_cases_per_batch": 10000}
        _pickle(folder / "batches.meta", {**meta, b"num_vis": 3072})
        return folder
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels, rows in (("train", train_labels, train_rows), ("test", test_labels, test_rows)):
        _pickle(
            folder / name,
            {
                b"filenames": [f"{name}_{j}.png".encode() for j in range(len(labels))],
                b"batch_label": f"{name}ing batch 1 of 1".encode(),
                b"fine_labels": labels.tolist(),
                b"coarse_labels": (labels // 5).tolist(),
                b"data": rows,
            },
        )
    _pickle(
        folder / "meta",
        {
            b"fine_label_names": [name.encode() for name in CIFAR100_FINE_NAMES],
            b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_NAMES],
        },
    )
    return folder


def make_image_folder(
    root: Path,
    num_classes: int = 3,
    per_class: int = 8,
    with_test: bool = True,
    with_validation: bool = False,
    mode: str = "RGB",
    size: int = 32,
    flat: bool = False,
    seed: int = 0,
) -> Path:
    """An image folder: ``train/<class>/*.png`` (plus ``validation/`` and ``test/`` when asked), or
    ``<class>/*.png`` directly when ``flat``. ``mode`` "L" or "RGBA" writes grayscale or RGBA PNGs."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    names = class_names(num_classes)
    path = Path(root) / f"imagefolder-{mode.lower()}"
    splits = [""] if flat else ["train"] + ["validation"] * with_validation + ["test"] * with_test
    for k, split in enumerate(splits):
        count = per_class if split in ("", "train") else max(2, per_class // 2)
        labels = np.repeat(np.arange(num_classes), count)
        images = make_images(labels, num_classes, size, channels, seed + k)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = path / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode=mode).save(folder / f"{i:05d}.png")
    return path


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    # IDX: two zero bytes, the dtype code (0x08 = ubyte), the number of dimensions, then big-endian int32 sizes.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb", compresslevel=1) as f:
            f.write(data)
    else:
        Path(path).write_bytes(data)


def make_idx_folder(
    root: Path,
    num_classes: int = 10,
    n_train: int = 200,
    n_test: int = 50,
    gz: bool = True,
    size: int = 28,
    name: str = "mnist-like",
    seed: int = 0,
) -> Path:
    """The four MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-*), gzipped when ``gz``,
    grayscale ``size`` x ``size``. Name the folder with "fashion" in it to get the Fashion-MNIST class names."""
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    for prefix, count, offset in (("train", n_train, 0), ("t10k", n_test, 100)):
        labels = np.random.default_rng(seed + offset).integers(0, num_classes, size=count).astype(np.uint8)
        images = make_images(labels, num_classes, size, 1, seed + offset + 1)
        _write_idx(path / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(path / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return path


def make_parquet(
    root: Path,
    num_classes: int = 3,
    per_class: int = 8,
    splits: tuple[str, ...] = ("train", "test"),
    layout: str = "hub",
    image_column: str = "image",
    label_column: str = "label",
    string_labels: bool = False,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Parquet files written by ``datasets`` (so the Image feature is kept in the schema metadata).

    layout "hub": ``<root>/parquet/data/<split>-00000-of-00001.parquet`` as on the Hub; "flat":
    ``<root>/parquet/<split>.parquet``; "file": one file ``<root>/images.parquet`` (the first split only).
    ``string_labels`` stores class names as plain strings instead of a ClassLabel.
    """
    names = class_names(num_classes)
    label_feature = datasets.Value("string") if string_labels else datasets.ClassLabel(names=names)
    features = datasets.Features(
        {image_column: datasets.Image(), label_column: label_feature, "id": datasets.Value("int64")}
    )
    written = []
    for k, split in enumerate(splits if layout != "file" else splits[:1]):
        count = per_class if split == "train" else max(2, per_class // 2)
        labels = balanced_labels(num_classes, count, seed + k)
        images = make_images(labels, num_classes, size, 3, seed + k + 1)
        values = [names[i] for i in labels] if string_labels else labels.tolist()
        data = {image_column: list(images), label_column: values, "id": list(range(len(labels)))}
        dataset = datasets.Dataset.from_dict(data, features=features)
        target = {
            "hub": Path(root) / "parquet" / "data" / f"{split}-00000-of-00001.parquet",
            "flat": Path(root) / "parquet" / f"{split}.parquet",
            "file": Path(root) / "images.parquet",
        }[layout]
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(target))
        written.append(target)
    return written[0] if layout == "file" else Path(root) / "parquet"


def make_parquet_shards(
    root: Path,
    shard_sizes: dict[str, list[int]],
    num_classes: int = 3,
    size: int = 16,
    seed: int = 0,
    learnable: bool = True,
) -> Path:
    """Hub-style parquet shards written by ``datasets``: ``<root>/data/<split>-0000i-of-0000n.parquet``, shard i of a
    split holding ``shard_sizes[split][i]`` images (sizes may differ: uneven shards). Every row has a unique
    ``id`` across the splits, so a test can tell which rows a run read. ``learnable=False`` draws the labels apart
    from the images, so the loss stays high and every batch moves the weights (for bitwise comparisons of order)."""
    names = class_names(num_classes)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "id": datasets.Value("int64")}
    )
    next_id = 0
    for k, (split, sizes) in enumerate(shard_sizes.items()):
        for i, count in enumerate(sizes):
            looks = np.arange(next_id, next_id + count) % num_classes
            images = make_images(looks, num_classes, size, 3, seed + 31 * k + i)
            labels = looks if learnable else np.random.default_rng(seed + next_id).integers(0, num_classes, count)
            data = {"image": list(images), "label": labels.tolist(), "id": list(range(next_id, next_id + count))}
            target = Path(root) / "data" / f"{split}-{i:05d}-of-{len(sizes):05d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(data, features=features).to_parquet(str(target))
            next_id += count
    return Path(root)


def make_webdataset_shards(
    root: Path, shard_sizes: dict[str, list[int]], num_classes: int = 3, size: int = 16, seed: int = 0
) -> Path:
    """webdataset ``.tar`` shards ``<root>/<split>-00000i.tar``: per image a ``<key>.png`` and a ``<key>.cls`` (the
    class index as text), as webdataset writers store them."""
    import io
    import tarfile

    next_id = 0
    Path(root).mkdir(parents=True, exist_ok=True)
    for k, (split, sizes) in enumerate(shard_sizes.items()):
        for i, count in enumerate(sizes):
            labels = np.arange(next_id, next_id + count) % num_classes
            images = make_images(labels, num_classes, size, 3, seed + 31 * k + i)
            with tarfile.open(Path(root) / f"{split}-{i:06d}.tar", "w") as tar:
                for image, label in zip(images, labels, strict=True):
                    encoded = io.BytesIO()
                    Image.fromarray(image).save(encoded, format="PNG")
                    for extension, payload in (("png", encoded.getvalue()), ("cls", str(int(label)).encode())):
                        member = tarfile.TarInfo(f"{next_id:08d}.{extension}")
                        member.size = len(payload)
                        tar.addfile(member, io.BytesIO(payload))
                    next_id += 1
    return Path(root)
