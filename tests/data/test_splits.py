"""Column detection, label names, and how train/validation/test are chosen, held out and truncated."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from datagen import make_cifar_hub_dataset, make_image_folder, make_images

from accel_recipes.config import RecipeArguments, make_args
from accel_recipes.data import DataBundle, DataError, build_data
from accel_recipes.data.columns import find_image_column, find_label_column, standardize_columns
from accel_recipes.data.splits import check_split, hold_out, labels_of, pick_splits, truncate


def data_args(tmp_path: Path, dataset: Path | str, **overrides) -> RecipeArguments:
    return make_args({"dataset_name": str(dataset), "cache_dir": str(tmp_path / "hf-cache"), **overrides})


def load(args: RecipeArguments) -> DataBundle:
    """``build_data`` called as training calls it."""
    return build_data(args.data, args.training.seed, args.model.cache_dir)


def save_splits(tmp_path: Path, splits: dict[str, dict], features: datasets.Features) -> Path:
    """A save_to_disk DatasetDict from plain columns, for cases datagen does not cover."""
    path = tmp_path / "custom"
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(columns, features=features) for name, columns in splits.items()}
    ).save_to_disk(str(path))
    return path


def image_rows(labels: list[int]) -> list[np.ndarray]:
    return list(make_images(np.asarray(labels), max(labels) + 1 if labels else 1, size=8))


# ---- columns -----------------------------------------------------------------------------------------------------


def test_image_and_label_columns_are_detected_in_order_of_preference():
    features = datasets.Features(
        {
            "photo": datasets.Image(),
            "coarse_label": datasets.ClassLabel(names=["a", "b"]),
            "fine_label": datasets.ClassLabel(names=["x", "y", "z"]),
        }
    )
    assert find_image_column(features, "d") == "photo"  # the one Image-typed column
    assert find_label_column(features, "d") == "fine_label"  # coarse_label only when nothing else
    assert find_label_column(datasets.Features({"coarse_label": features["coarse_label"]}), "d") == "coarse_label"
    both = datasets.Features({"img": datasets.Image(), "image": datasets.Image(), "labels": datasets.Value("int64")})
    assert find_image_column(both, "d") == "img"
    assert find_label_column(both, "d") == "labels"


def test_missing_columns_say_what_exists_and_which_flag_to_pass():
    features = datasets.Features({"a": datasets.Value("int64"), "b": datasets.Value("string")})
    with pytest.raises(DataError) as error:
        find_image_column(features, "x")
    assert str(error.value) == "dataset 'x' has no image column; columns are ['a', 'b']; pass --image_column_name"
    with pytest.raises(DataError, match=r"dataset 'x' has no label column; columns are \['a', 'b'\]; pass --label"):
        find_label_column(features, "x")
    with pytest.raises(DataError, match=r"no column 'pixels' \(given as the image column\).*--image_column_name"):
        find_image_column(features, "x", override="pixels")


def test_column_overrides_pick_the_columns(tmp_path):
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "picture": datasets.Image(),
            "label": datasets.Value("int64"),
            "kind": datasets.Value("string"),
        }
    )
    rows = image_rows([0, 1, 0, 1])
    path = save_splits(
        tmp_path, {"train": {"img": rows, "picture": rows[::-1], "label": [0, 1, 0, 1], "kind": list("ppqq")}}, features
    )
    bundle = load(
        data_args(tmp_path, path, image_column_name="picture", label_column_name="kind", validation_split_percentage=50)
    )
    assert bundle.label_names == ["p", "q"]
    assert bundle.train.column_names == ["image", "label"]
    merged = datasets.concatenate_datasets([bundle.train, bundle.validation])
    pictures = sorted(np.asarray(row["image"]).tobytes() for row in merged)
    assert pictures == sorted(row.tobytes() for row in rows)


def test_integer_labels_without_class_names_use_their_sorted_values(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    labels = [7, 1, 5, 1, 7, 5]
    splits, names = standardize_columns(
        {"train": datasets.Dataset.from_dict({"image": image_rows(labels), "label": labels}, features=features)},
        "d",
    )
    assert names == ["1", "5", "7"]
    assert labels_of(splits["train"]).tolist() == [2, 0, 1, 0, 2, 1]
    assert splits["train"].features["label"].names == names


# ---- splits ------------------------------------------------------------------------------------------------------


def test_pick_splits_detects_and_honours_names():
    assert pick_splits(["train", "test"], "d") == {"train": "train", "test": "test"}
    assert pick_splits(["train", "val", "test"], "d") == {"train": "train", "validation": "val", "test": "test"}
    assert pick_splits(["train", "test"], "d", validation="test") == {"train": "train", "validation": "test"}
    with pytest.raises(DataError, match=r"has no split 'dev'; its splits are \['train', 'test'\].*--validation_split"):
        pick_splits(["train", "test"], "d", validation="dev")
    with pytest.raises(DataError, match="has no split 'train'.*--train_split_name"):
        pick_splits(["training"], "d")


def test_hold_out_is_seeded_disjoint_and_stratified(tmp_path):
    path = make_cifar_hub_dataset(tmp_path, num_classes=10, train_per_class=20)
    train = datasets.load_from_disk(str(path))["train"].rename_column("img", "image")

    def held_ids(seed: int) -> set[bytes]:
        kept, held = hold_out(train, 10, seed, "d")
        kept_ids = {np.asarray(image).tobytes() for image in kept["image"]}
        held_ids = {np.asarray(image).tobytes() for image in held["image"]}
        assert not kept_ids & held_ids and len(kept_ids | held_ids) == 200
        assert np.bincount(labels_of(held), minlength=10).tolist() == [2] * 10  # 10% of each class
        return held_ids

    assert held_ids(1) == held_ids(1)
    assert held_ids(1) != held_ids(2)
    assert sorted(path.rglob("cache-*")) == []  # nothing written into the user's save_to_disk folder


def test_hold_out_needs_a_percentage():
    dataset = datasets.Dataset.from_dict({"label": [0, 1, 0, 1]})
    with pytest.raises(DataError, match="validation_split_percentage is 0"):
        hold_out(dataset, 0, 0, "d")


def test_existing_validation_split_is_used_and_test_is_returned_untouched(tmp_path):
    path = make_image_folder(tmp_path, num_classes=3, per_class=8, with_validation=True, with_test=True)
    source = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=str(tmp_path / "hf-cache"))
    bundle = load(data_args(tmp_path, path, max_train_samples=6, seed=3))
    assert len(bundle.validation) == len(source["validation"])
    assert len(bundle.test) == len(source["test"])
    assert labels_of(bundle.test).tolist() == labels_of(source["test"]).tolist()  # same rows, same order
    assert len(bundle.train) == 6


def test_truncation_is_seeded_and_keeps_classes_of_a_sorted_source(tmp_path):
    path = make_image_folder(tmp_path, num_classes=3, per_class=20, with_test=True)  # rows sorted by class
    args = data_args(tmp_path, path, max_train_samples=15, max_eval_samples=4)
    first, second = load(args), load(args)
    assert len(first.train) == 15 and len(first.validation) == 4 and len(first.test) == 4
    assert set(labels_of(first.train).tolist()) == {0, 1, 2}
    assert labels_of(first.train).tolist() == labels_of(second.train).tolist()
    assert labels_of(truncate(first.train, None, 0)).tolist() == labels_of(first.train).tolist()


def test_empty_split_is_an_error():
    # (datasets 5.x cannot load_from_disk a DatasetDict holding an empty split, so test the check itself.)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    with pytest.raises(DataError, match="the validation split of dataset 'd' is empty; pass --validation_split_name"):
        check_split(empty, "validation", 2, "d")


def test_label_outside_the_classes_names_the_index(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    path = save_splits(tmp_path, {"train": {"image": image_rows([0, 1, 0, 1]), "label": [0, 1, -1, 1]}}, features)
    with pytest.raises(DataError, match=r"the train split of dataset .* has label -1 at index 2 .*outside \[0, 2\)"):
        load(data_args(tmp_path, path))


def test_unlabeled_test_split_is_dropped_unless_asked_for(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    labeled = {"image": image_rows([0, 1] * 5), "label": [0, 1] * 5}
    path = save_splits(tmp_path, {"train": labeled, "test": {"image": image_rows([0, 1]), "label": [-1, -1]}}, features)
    assert load(data_args(tmp_path, path)).test is None
    with pytest.raises(DataError, match="the test split .* has label -1 at index 0"):
        load(data_args(tmp_path, path, test_split_name="test"))
