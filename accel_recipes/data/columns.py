"""Find the image and label columns, make them ``image`` (Image) and ``label`` (ClassLabel), drop the rest."""

from __future__ import annotations

import datasets

from accel_recipes.errors import DataError

IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "labels", "fine_label")
LAST_RESORT_LABEL_COLUMNS = ("coarse_label",)  # CIFAR-100's 20 superclasses: only when nothing finer exists


def find_image_column(features: datasets.Features, dataset: str, override: str | None = None) -> str:
    """``override`` when given, else ``img`` or ``image``, else the one column whose feature is an Image."""
    if override is not None:
        return _require(features, override, dataset, "image")
    named = [name for name in IMAGE_COLUMNS if name in features]
    if named:
        return named[0]
    typed = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if typed:
        return typed[0]
    raise DataError(f"dataset '{dataset}' has no image column; columns are {list(features)}; pass --image_column_name")


def find_label_column(features: datasets.Features, dataset: str, override: str | None = None) -> str:
    """``override`` when given, else ``label``, ``labels``, ``fine_label``, any other ClassLabel column, and
    ``coarse_label`` only when there is nothing else."""
    if override is not None:
        return _require(features, override, dataset, "label")
    named = [name for name in LABEL_COLUMNS if name in features]
    typed = [
        name
        for name, feature in features.items()
        if isinstance(feature, datasets.ClassLabel) and name not in LAST_RESORT_LABEL_COLUMNS
    ]
    last = [name for name in LAST_RESORT_LABEL_COLUMNS if name in features]
    found = named + typed + last
    if found:
        return found[0]
    _refuse_image_only(features, dataset)
    raise DataError(f"dataset '{dataset}' has no label column; columns are {list(features)}; pass --label_column_name")


def _refuse_image_only(features: datasets.Features, dataset: str) -> None:
    """A dataset of images alone: the image folder builder leaves out the label of a folder with one class."""
    if all(isinstance(feature, datasets.Image) for feature in features.values()):
        raise DataError(
            f"dataset '{dataset}' has images but no labels: a classifier needs at least two classes (an image "
            "folder with a single class folder has no label column); add a folder per class"
        )


def require_two_classes(names: list[str], dataset: str) -> None:
    if len(names) < 2:
        raise DataError(
            f"dataset '{dataset}' has {len(names)} class(es) {names}: a classifier needs at least two classes; "
            "add images of another class"
        )


def _require(features: datasets.Features, name: str, dataset: str, role: str) -> str:
    if name not in features:
        if role == "label":
            _refuse_image_only(features, dataset)
        raise DataError(
            f"dataset '{dataset}' has no column '{name}' (given as the {role} column); columns are "
            f"{list(features)}; pass --{role}_column_name with one of them"
        )
    return name


def label_names(splits: dict[str, datasets.Dataset], column: str, dataset: str) -> list[str]:
    """Class names: the ClassLabel's names, else the sorted distinct values over all splits (ints sorted as
    numbers, then written as strings)."""
    feature = next(iter(splits.values())).features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values: set = set()
    for split in splits.values():
        values.update(split.unique(column))
    if None in values:
        raise DataError(f"dataset '{dataset}' has empty (None) values in label column '{column}'; drop those rows")
    if not values:
        raise DataError(f"dataset '{dataset}' has no labels in column '{column}'")
    kinds = {type(value) for value in values}
    if kinds <= {int, bool} or kinds <= {str}:
        return [str(value) for value in sorted(values)]
    if kinds <= {int, float} and all(float(value).is_integer() for value in values):
        return [_label_key(value) for value in sorted(values)]
    raise DataError(
        f"dataset '{dataset}' has labels of type {sorted(kind.__name__ for kind in kinds)} in column '{column}'; "
        "labels must be class indices or class names; pass --label_column_name with another column"
    )


def _label_key(value: object) -> str:
    return str(int(value)) if isinstance(value, float) else str(value)


def _encode_labels(dataset: datasets.Dataset, column: str, names: list[str]) -> datasets.Dataset:
    """Plain labels (class names, or values without a ClassLabel) as indices into ``names``, typed ClassLabel."""
    if isinstance(dataset.features[column], datasets.ClassLabel):
        return dataset
    index = {name: i for i, name in enumerate(names)}
    features = dataset.features.copy()
    features[column] = datasets.ClassLabel(names=names)

    def encode(batch: dict) -> dict:
        keys = [_label_key(value) for value in batch[column]]
        unknown = next((key for key in keys if key not in index), None)
        if unknown is not None:  # only when splits disagree on the label type, e.g. a ClassLabel train and int test
            raise DataError(f"label {unknown!r} is not one of the classes {names}; make the splits' labels agree")
        return {column: [index[key] for key in keys]}

    return dataset.map(encode, batched=True, features=features, keep_in_memory=True, desc="Encoding labels")


def standardize_columns(
    splits: dict[str, datasets.Dataset],
    dataset: str,
    image_column_name: str | None = None,
    label_column_name: str | None = None,
) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Every split reduced to ``image`` (Image feature) and ``label`` (ClassLabel), and the class names."""
    features = next(iter(splits.values())).features
    image_column = find_image_column(features, dataset, image_column_name)
    label_column = find_label_column(features, dataset, label_column_name)
    if image_column == label_column:
        raise DataError(
            f"dataset '{dataset}': column '{image_column}' cannot be both the image and the label column; "
            "pass --image_column_name and --label_column_name with two different columns"
        )
    for role, split in splits.items():
        missing = [column for column in (image_column, label_column) if column not in split.features]
        if missing:
            raise DataError(
                f"the {role} split of dataset '{dataset}' has no column '{missing[0]}'; its columns are "
                f"{list(split.features)}; pass --{role}_split_name with a split that has the train split's columns"
            )
    names = label_names(
        {key: split.select_columns([label_column]) for key, split in splits.items()}, label_column, dataset
    )
    require_two_classes(names, dataset)
    result = {}
    for role, split in splits.items():
        split = split.select_columns([image_column, label_column])
        renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
        split = split.rename_columns(renames) if renames else split
        if not isinstance(split.features["image"], datasets.Image):
            try:
                split = split.cast_column("image", datasets.Image())
            except (TypeError, ValueError) as error:
                raise DataError(
                    f"column '{image_column}' of dataset '{dataset}' holds {split.features['image']}, not images "
                    f"({error}); pass --image_column_name with the column that holds the images"
                ) from error
        result[role] = _encode_labels(split, "label", names)
    return result, names
