"""Every kind of source ``--dataset_name`` accepts loads into standard ``image``/``label`` splits."""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pytest
from datagen import (
    CIFAR10_NAMES,
    CIFAR100_FINE_NAMES,
    FASHION_MNIST_NAMES,
    make_cifar_hub_dataset,
    make_cifar_python,
    make_idx_folder,
    make_image_folder,
    make_parquet,
)
from PIL import Image

from accel_recipes import hub_access
from accel_recipes.config import RecipeArguments, make_args
from accel_recipes.data import DataBundle, DataError, build_data, sources
from accel_recipes.data.sources import load_source, png_bytes

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def data_args(tmp_path: Path, dataset: Path | str, **overrides) -> RecipeArguments:
    return make_args({"dataset_name": str(dataset), "cache_dir": str(tmp_path / "hf-cache"), **overrides})


def load(args: RecipeArguments) -> DataBundle:
    """``build_data`` called as training calls it."""
    return build_data(args.data, args.training.seed, args.model.cache_dir)


def assert_standard(bundle: DataBundle) -> None:
    splits = [bundle.train, bundle.validation] + ([bundle.test] if bundle.test is not None else [])
    for split in splits:
        assert split.column_names == ["image", "label"]
        assert isinstance(split.features["image"], datasets.Image)
        assert split.features["label"].names == bundle.label_names
        assert isinstance(split[0]["image"], Image.Image)
    assert len(bundle.mean) == len(bundle.std) == 3
    assert all(0 < value < 1 for value in bundle.mean + bundle.std)


def test_cifar10_hub_schema_from_save_to_disk(tmp_path):
    path = make_cifar_hub_dataset(tmp_path, train_per_class=20, test_per_class=5)
    bundle = load(data_args(tmp_path, path))
    assert_standard(bundle)
    assert bundle.label_names == CIFAR10_NAMES
    assert (len(bundle.train), len(bundle.validation), len(bundle.test)) == (180, 20, 50)  # 10% held out of 200
    assert bundle.native_size == 32
    assert bundle.source == f"disk:{path}"


def test_cifar100_hub_schema_uses_fine_labels_and_coarse_on_request(tmp_path):
    path = make_cifar_hub_dataset(tmp_path, num_classes=100, train_per_class=2, test_per_class=1, fine=True)
    fine = load(data_args(tmp_path, path))
    assert fine.label_names == CIFAR100_FINE_NAMES
    coarse = load(data_args(tmp_path, path, label_column_name="coarse_label"))
    assert len(coarse.label_names) == 20 and coarse.label_names[0] == "aquatic_mammals"


def test_cifar10_python_batches_decode_pixels_exactly(tmp_path):
    folder = make_cifar_python(tmp_path, "cifar10", per_class_train=6, per_class_test=3)
    for given in (folder, tmp_path):  # the batches folder itself, or the folder that contains it
        loaded, source = load_source(str(given))
        assert source == f"cifar-python:{folder}"
        assert (len(loaded["train"]), len(loaded["test"])) == (60, 30)
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    expected = batch[b"data"][7].reshape(3, 32, 32).transpose(1, 2, 0)  # R, G, B planes, each row-major
    row = loaded["test"][7]
    assert np.array_equal(np.asarray(row["image"]), expected)
    assert row["label"] == batch[b"labels"][7]
    assert loaded["train"].features["label"].names == CIFAR10_NAMES


def test_cifar100_python_batches_use_fine_labels(tmp_path):
    folder = make_cifar_python(tmp_path, "cifar100", per_class_train=2, per_class_test=1)
    bundle = load(data_args(tmp_path, folder))
    assert_standard(bundle)
    assert bundle.label_names == CIFAR100_FINE_NAMES
    assert len(bundle.test) == 100 and len(bundle.train) + len(bundle.validation) == 200
    assert bundle.source == f"cifar-python:{folder}"


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_or_raw(tmp_path, gz):
    folder = make_idx_folder(tmp_path, n_train=120, n_test=30, gz=gz, size=28)
    loaded, source = load_source(str(folder))
    assert source == f"idx:{folder}"
    assert (len(loaded["train"]), len(loaded["test"])) == (120, 30)
    assert loaded["train"].features["label"].names == [str(i) for i in range(10)]
    image = loaded["test"][0]["image"]
    assert image.mode == "L" and image.size == (28, 28)


def test_idx_pixels_and_labels_match_the_files(tmp_path):
    folder = make_idx_folder(tmp_path, n_train=40, n_test=10, gz=True)
    images = sources.read_idx(folder / "t10k-images-idx3-ubyte.gz")
    labels = sources.read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    loaded, _ = load_source(str(folder))
    assert images.shape == (10, 28, 28)
    assert np.array_equal(np.asarray(loaded["test"][3]["image"]), images[3])
    assert loaded["test"][3]["label"] == labels[3]


def test_idx_folder_named_fashion_gets_fashion_names(tmp_path):
    folder = make_idx_folder(tmp_path / "FashionMNIST", name="raw")  # torchvision's layout: FashionMNIST/raw
    loaded, source = load_source(str(tmp_path / "FashionMNIST"))
    assert source == f"idx:{folder}"
    assert loaded["train"].features["label"].names == FASHION_MNIST_NAMES


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST is not at /usr/share/datasets/fashion-mnist")
def test_real_fashion_mnist_loads(tmp_path):
    bundle = load(data_args(tmp_path, FASHION_MNIST))
    assert bundle.label_names == FASHION_MNIST_NAMES
    assert len(bundle.train) + len(bundle.validation) == 60000 and len(bundle.test) == 10000
    assert len(bundle.validation) == 6000
    assert bundle.native_size == 28
    assert bundle.mean[0] == pytest.approx(0.286, abs=0.01) and bundle.std[0] == pytest.approx(0.353, abs=0.01)
    assert bundle.test[0]["image"].size == (28, 28)


def test_image_folder_with_validation_and_grayscale(tmp_path):
    path = make_image_folder(tmp_path, num_classes=3, per_class=8, with_validation=True, mode="L")
    bundle = load(data_args(tmp_path, path))
    assert_standard(bundle)
    assert bundle.label_names == ["airplane", "automobile", "bird"]
    assert (len(bundle.train), len(bundle.validation), len(bundle.test)) == (24, 12, 12)  # nothing held out
    assert bundle.source == f"imagefolder:{path}"
    assert bundle.mean[0] == pytest.approx(bundle.mean[1])  # grey -> RGB: equal channels


def test_flat_image_folder_of_rgba_classes(tmp_path):
    path = make_image_folder(tmp_path, num_classes=3, per_class=8, flat=True, mode="RGBA")
    bundle = load(data_args(tmp_path, path))
    assert_standard(bundle)
    assert bundle.test is None
    assert len(bundle.train) + len(bundle.validation) == 24


@pytest.mark.parametrize("layout", ["hub", "flat", "file"])
def test_parquet_layouts(tmp_path, layout):
    path = make_parquet(tmp_path, num_classes=3, per_class=10, layout=layout)
    loaded, source = load_source(str(path), cache_dir=str(tmp_path / "hf-cache"))
    assert source == f"parquet:{path}"
    assert sorted(loaded) == (["train"] if layout == "file" else ["test", "train"])
    bundle = load(data_args(tmp_path, path))
    assert_standard(bundle)  # the extra "id" column is dropped
    assert len(bundle.train) + len(bundle.validation) == 30


def test_parquet_with_string_labels_and_other_column_names(tmp_path):
    path = make_parquet(tmp_path, string_labels=True, image_column="img", label_column="labels")
    bundle = load(data_args(tmp_path, path))
    assert_standard(bundle)
    assert bundle.label_names == ["airplane", "automobile", "bird"]  # sorted distinct names
    first = bundle.test[0]
    assert 0 <= first["label"] < 3


def test_png_bytes_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (6, 4, 3), (3, 3, 4)]:
        array = rng.integers(0, 256, size=shape, dtype=np.uint8)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(array)))), array)


def test_unrecognised_folder_lists_what_it_found(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError) as error:
        load_source(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message and "notes.txt" in message and "sub/" in message
    assert "cifar-10-batches-py" in message and "IDX" in message and "image folder" in message


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "nowhere"))


def test_hub_unreachable_in_offline_mode_fails_fast_with_a_way_forward(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read the variable once at import; set their copies too.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(DataError) as error:
        load(data_args(tmp_path, "uoft-cs/cifar10"))
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "could not reach the Hugging Face Hub for dataset 'uoft-cs/cifar10'" in message
    assert "--dataset_name PATH" in message and "make demo" in message and "cifar-10-batches-py" in message


def test_hub_unreachable_online_does_not_wait_for_retries(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sources, "hub_reachable", lambda: False)

    def never(*args, **kwargs):
        raise AssertionError("load_dataset must not be called when the Hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(DataError, match="could not reach the Hugging Face Hub.*HF_HUB_OFFLINE=1"):
        load_source("uoft-cs/cifar10")


def test_hub_probe_gives_up_within_its_timeout(monkeypatch):
    # On this machine the Hub is never reachable; wherever it is, the probe must still answer in time.
    start = time.perf_counter()
    hub_access.hub_reachable(timeout=2.0)
    assert time.perf_counter() - start < 4


def test_hub_dataset_that_does_not_exist_is_told_apart(monkeypatch):
    from datasets.exceptions import DatasetNotFoundError

    monkeypatch.setattr(sources, "hub_offline", lambda: False)
    monkeypatch.setattr(sources, "hub_reachable", lambda: True)

    def not_found(name, *args, **kwargs):
        raise DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub or cannot be accessed.")

    monkeypatch.setattr(datasets, "load_dataset", not_found)
    with pytest.raises(DataError, match="'someone/no-such-set' does not exist on the Hugging Face Hub"):
        load_source("someone/no-such-set")


def test_mean_std_and_native_size_are_those_of_the_training_pixels(tmp_path):
    bundle = load(data_args(tmp_path, make_cifar_python(tmp_path, per_class_train=5)))
    pixels = np.stack([np.asarray(image) for image in bundle.train["image"]]).reshape(-1, 3) / 255
    assert np.allclose(bundle.mean, pixels.mean(0), atol=1e-6)
    assert np.allclose(bundle.std, pixels.std(0), atol=1e-6)
    assert bundle.native_size == 32


@pytest.mark.parametrize("maker", ["hub", "idx"])
def test_generated_data_is_learnable_from_colour_alone(tmp_path, maker):
    # Tests of whole training runs rely on this: a nearest-centroid rule on mean colour beats chance by far.
    if maker == "hub":
        path = make_cifar_hub_dataset(tmp_path, num_classes=10, train_per_class=10, test_per_class=5)
    else:
        path = make_idx_folder(tmp_path, num_classes=10, n_train=200, n_test=50)
    loaded, _ = load_source(str(path))
    image_column = "img" if maker == "hub" else "image"

    def colours(split: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
        means = np.stack([np.asarray(image.convert("RGB"), dtype=float).mean((0, 1)) for image in split[image_column]])
        return means, np.asarray(split["label"][:])

    train_x, train_y = colours(loaded["train"])
    test_x, test_y = colours(loaded["test"])
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(10)])
    predicted = np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == test_y).mean() > 0.9
