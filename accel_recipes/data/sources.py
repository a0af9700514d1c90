"""Load whatever ``--dataset_name`` points at into a ``datasets.DatasetDict``.

A Hub id goes through ``datasets.load_dataset``; a local path is recognised by what it holds: a ``save_to_disk``
folder, parquet file(s), CIFAR python batches, MNIST-family IDX files, or an image folder. Columns and splits are
left as the source has them; ``columns`` and ``splits`` make them standard.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import datasets
import numpy as np

from accel_recipes.errors import DataError

from ..hub_access import hub_offline, hub_reachable, offline_reason

logger = logging.getLogger(__name__)

LOCAL_FORMATS = (
    "a save_to_disk folder; parquet file(s); CIFAR python batches (cifar-10-batches-py or cifar-100-python); "
    "an MNIST-family IDX folder (train-images-idx3-ubyte[.gz], ...); an image folder (train/<class>/*.png "
    "or <class>/*.png)"
)
FASHION_MNIST_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLIT_WORDS = {"train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval"}


def load_source(
    name: str, config_name: str | None = None, cache_dir: str | None = None
) -> tuple[datasets.DatasetDict, str]:
    """The dataset behind ``name`` (a Hub id or a local path) and a description such as ``"idx:/data/mnist"``."""
    path = Path(name).expanduser()
    if path.exists():
        return _load_local(path, cache_dir)
    if _looks_like_path(name):
        raise DataError(f"dataset path '{name}' does not exist; pass --dataset_name with an existing path or a Hub id")
    return _load_hub(name, config_name, cache_dir), f"hub:{name}"


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "namespace/name"; anything else that does not exist is a mistyped path.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith(".parquet") or "\\" in name


# ---- Hub ---------------------------------------------------------------------------------------------------------


def _unreachable_error(name: str, reason: str, offline: bool) -> DataError:
    cache_tip = "" if offline else "; or, if the dataset is in your Hugging Face cache, set HF_HUB_OFFLINE=1"
    return DataError(
        f"could not reach the Hugging Face Hub for dataset '{name}' ({reason}). To go on, pass --dataset_name PATH "
        f"to a local copy, one of: {LOCAL_FORMATS}; or run `make demo` for the offline Fashion-MNIST recipe"
        f"{cache_tip}"
    )


def _load_hub(
    name: str, config_name: str | None, cache_dir: str | None, streaming: bool = False
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """The Hub dataset ``name``, downloaded whole, or with ``streaming`` opened as ``IterableDataset``s."""
    from datasets.exceptions import DatasetNotFoundError

    offline = hub_offline()
    # Offline mode goes straight to load_dataset, which then reads the local cache; online, probe first, because
    # load_dataset retries an unreachable Hub for about half a minute before it gives up.
    if not offline and not hub_reachable():
        raise _unreachable_error(name, "no network connection to the Hub", offline)
    try:
        loaded = datasets.load_dataset(name, config_name, cache_dir=cache_dir, streaming=streaming)
    except ConnectionError as error:
        reason = f"{offline_reason()} and it is not in the local cache" if offline else str(error)
        raise _unreachable_error(name, reason, offline) from error
    except DatasetNotFoundError as error:
        raise DataError(
            f"dataset '{name}' does not exist on the Hugging Face Hub or cannot be accessed ({error}); check the "
            f"spelling, log in with `hf auth login` for a gated or private dataset, or pass --dataset_name PATH to "
            f"a local copy, one of: {LOCAL_FORMATS}"
        ) from error
    except ValueError as error:  # e.g. a missing or unknown configuration name
        raise DataError(f"could not load dataset '{name}' from the Hub: {error}; see --dataset_config_name") from error
    return _as_dict(loaded)


def _as_dict(
    loaded: datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset | datasets.IterableDatasetDict,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """One split (a file, a streamed file) becomes ``train``."""
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict(train=loaded)
    if isinstance(loaded, datasets.IterableDataset):
        return datasets.IterableDatasetDict(train=loaded)
    return loaded


# ---- Local paths -------------------------------------------------------------------------------------------------


def _load_local(path: Path, cache_dir: str | None) -> tuple[datasets.DatasetDict, str]:
    if path.is_file():
        if path.suffix == ".parquet":
            return _load_parquet({"train": [path]}, cache_dir), f"parquet:{path}"
        raise DataError(
            f"dataset file '{path}' is not a .parquet file; pass --dataset_name with one of: {LOCAL_FORMATS}"
        )
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _as_dict(datasets.load_from_disk(str(path))), f"disk:{path}"
    cifar = _find_cifar(path)
    if cifar is not None:
        return load_cifar_python(cifar), f"cifar-python:{cifar}"
    idx = _find_idx(path)
    if idx is not None:
        return load_idx(idx), f"idx:{idx}"
    parquet_files = sorted(path.rglob("*.parquet"))
    if parquet_files:
        return _load_parquet(_parquet_splits(path, parquet_files), cache_dir), f"parquet:{path}"
    if _has_images(path):
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
        return _as_dict(loaded), f"imagefolder:{path}"
    found = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir())
    shown = found[:12] + (["..."] if len(found) > 12 else [])
    raise DataError(
        f"dataset folder '{path}' holds no dataset this recipe can read; found {shown or 'nothing'}; "
        f"pass --dataset_name with one of: {LOCAL_FORMATS}"
    )


def _has_images(path: Path, depth: int = 3) -> bool:
    for root, dirs, files in os.walk(path):
        if any(Path(file).suffix.lower() in IMAGE_EXTENSIONS for file in files):
            return True
        if len(Path(root).relative_to(path).parts) >= depth:
            dirs.clear()
    return False


def _parquet_splits(root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Split name from each file name: ``train-00000-of-00001.parquet`` and ``train.parquet`` -> train; a numbered
    file such as ``train/0000.parquet`` takes its folder's name. One group of unknown name becomes train."""
    groups: dict[str, list[Path]] = {}
    for file in files:
        word = re.split(r"[-_.]", file.stem)[0]
        if word.isdigit() or not word:
            word = file.parent.name if file.parent != root else "train"
        groups.setdefault(word, []).append(file)
    if len(groups) == 1 and next(iter(groups)) not in SPLIT_WORDS:
        return {"train": files}
    return groups


def _load_parquet(data_files: dict[str, list[Path]], cache_dir: str | None) -> datasets.DatasetDict:
    files = {split: [str(file) for file in group] for split, group in data_files.items()}
    return _as_dict(datasets.load_dataset("parquet", data_files=files, cache_dir=cache_dir))


# ---- Arrays -> Dataset -------------------------------------------------------------------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG file holding one uint8 image (H, W), (H, W, 3) or (H, W, 4).

    Written directly, rows with filter byte 0 in stored (level 0) deflate blocks: ~10x faster than going through
    PIL, which matters when 70,000 MNIST or 60,000 CIFAR images become a Dataset at every start (about 1 s instead
    of 8). The price is size: 1.7x the bytes of a compressed PNG for MNIST, nearly nothing for CIFAR photos.
    """
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 1:] = image.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
        + _png_chunk(b"IEND", b"")
    )


def arrays_to_dataset(images: np.ndarray, labels: np.ndarray, names: list[str]) -> datasets.Dataset:
    """An in-memory Dataset with columns ``image`` (Image, PNG bytes) and ``label`` (ClassLabel of ``names``)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    encoded = [png_bytes(image) for image in images]
    return datasets.Dataset.from_dict({"image": encoded, "label": labels.astype(np.int64).tolist()}, features=features)


# ---- CIFAR python batches ----------------------------------------------------------------------------------------


def _is_cifar10(path: Path) -> bool:
    return (path / "batches.meta").is_file() and (path / "data_batch_1").is_file()


def _is_cifar100(path: Path) -> bool:
    return all((path / name).is_file() for name in ("meta", "train", "test"))


def _find_cifar(path: Path) -> Path | None:
    if _is_cifar10(path) or _is_cifar100(path):
        return path
    children = [path / name for name in ("cifar-10-batches-py", "cifar-100-python")]
    found = [child for child in children if _is_cifar10(child) or _is_cifar100(child)]
    if len(found) > 1:
        raise DataError(f"folder '{path}' holds both {found[0].name} and {found[1].name}; pass one of them")
    return found[0] if found else None


def _unpickle(path: Path) -> dict:
    # The official CIFAR "python version" is a set of pickles; they are only ever read from local files the user
    # pointed --dataset_name at, never from a download this code makes.
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise DataError(f"CIFAR batch '{path}' could not be read ({error}); re-extract the CIFAR archive") from error


def _cifar_images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR batch '{path}' has data of shape {data.shape}, expected (N, 3072)")
    # Each row is the 1024 red values, then green, then blue, each plane row-major: (N, 3, 32, 32) -> NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _decode_names(values: list) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def load_cifar_python(path: Path) -> datasets.DatasetDict:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``; fine labels) batches."""
    if _is_cifar10(path):
        names = _decode_names(_unpickle(path / "batches.meta")[b"label_names"])
        train_files = sorted(path.glob("data_batch_*"), key=lambda file: int(file.name.rsplit("_", 1)[1]))
        files = {"train": train_files, "test": [path / "test_batch"]}
        label_key = b"labels"
    else:
        names = _decode_names(_unpickle(path / "meta")[b"fine_label_names"])
        files = {"train": [path / "train"], "test": [path / "test"]}
        label_key = b"fine_labels"
    splits = {}
    for split, split_files in files.items():
        if not all(file.is_file() for file in split_files):
            continue  # e.g. test_batch missing: the split is simply absent
        batches = [(_unpickle(file), file) for file in split_files]
        images = np.concatenate([_cifar_images(batch, file) for batch, file in batches])
        labels = np.concatenate([np.asarray(batch[label_key], dtype=np.int64) for batch, _ in batches])
        splits[split] = arrays_to_dataset(images, labels, names)
    return datasets.DatasetDict(splits)


# ---- IDX (MNIST family) ------------------------------------------------------------------------------------------


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    # The official names, with "-" or "." before idxN-ubyte (both spellings circulate), gzipped or not.
    for separator in ("-", "."):
        for suffix in ("", ".gz"):
            candidate = folder / f"{prefix}-{kind}{separator}idx{3 if kind == 'images' else 1}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _find_idx(path: Path) -> Path | None:
    for folder in (path, path / "raw"):  # torchvision keeps the files under <Name>/raw/
        if _idx_file(folder, "train", "images") and _idx_file(folder, "train", "labels"):
            return folder
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped when it ends in .gz) as a uint8 array of the shape its header gives."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"IDX file '{path}' does not start with the IDX magic number; is it a MNIST-format file?")
    if raw[2] != 0x08:
        raise DataError(f"IDX file '{path}' holds data type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"IDX file '{path}' is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def load_idx(path: Path) -> datasets.DatasetDict:
    """train-* and t10k-* IDX images and labels; Fashion-MNIST class names when the folder name says "fashion"."""
    folder = path.resolve()
    named = f"{folder.parent.name}/{folder.name}" if folder.name == "raw" else folder.name  # torchvision: <Name>/raw
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_file, labels_file = _idx_file(path, prefix, "images"), _idx_file(path, prefix, "labels")
        if images_file is None or labels_file is None:
            continue
        images, labels = read_idx(images_file), read_idx(labels_file).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise DataError(
                f"IDX files '{images_file.name}' and '{labels_file.name}' do not match: images {images.shape}, "
                f"labels {labels.shape}; expected (N, H, W) images and N labels"
            )
        splits[split] = (images, labels)
    num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
    if "fashion" in named.lower() and num_classes <= len(FASHION_MNIST_NAMES):
        names = FASHION_MNIST_NAMES
    else:
        names = [str(i) for i in range(max(num_classes, 10))]
    return datasets.DatasetDict({split: arrays_to_dataset(*arrays, names) for split, arrays in splits.items()})
