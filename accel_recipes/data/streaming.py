"""Streamed datasets (``streaming: true``): a Hub id or local shards read as they stream, never whole.

``datasets`` opens the source as ``IterableDataset``s (parquet and arrow shards, webdataset ``.tar`` shards, image
folders, Hub ids); this module makes them standard (``image`` undecoded, ``label``), finds what a stream does not
say up front (class names, split sizes, normalisation statistics, a validation split) or names the field to set,
and builds the ``StreamLoader``s (``stream_loader.py``) of a run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from accel_recipes.errors import ConfigError, DataError

from ..config import DataArguments
from .bundle import DataBundle, image_statistics
from .columns import find_image_column, find_label_column, label_names, require_two_classes
from .sources import IMAGE_EXTENSIONS, _has_images, _load_hub, _looks_like_path, _parquet_splits, load_source
from .splits import pick_splits
from .stream_loader import HoldOut, StreamBatches, StreamLoader, StreamPart, rows
from .transforms import ImageTransform

logger = logging.getLogger(__name__)

STREAM_STATISTICS_SAMPLES = 512  # the bounded first sample the normalisation statistics are measured on
STREAM_LABEL_COLUMNS = ("cls",)  # webdataset's class-index key, after the map path's names
MAX_SHARDS_FROM_MEMORY = 16  # a local source that is not shards (CIFAR batches, IDX) is streamed as this many
STREAMABLE = (
    "a Hub id; a .parquet file or a folder of parquet, arrow or webdataset .tar shards; an image folder; or any "
    "other local source the map-style path reads (streamed from memory)"
)


class LabelIndex:
    """A streamed label as a class index: class names looked up, indices checked against the class count.
    Picklable, for loader workers."""

    def __init__(self, names: list[str], by_name: bool, dataset: str) -> None:
        self.names, self.by_name, self.dataset = names, by_name, dataset
        self.index = {name: i for i, name in enumerate(names)}

    def __call__(self, value: object) -> int:
        if self.by_name or isinstance(value, str):
            key = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            if key in self.index:
                return self.index[key]
            raise DataError(
                f"streamed label {value!r} of dataset '{self.dataset}' is not one of the classes {self.names}; "
                "pass --label_names with every class name"
            )
        if value is None or not 0 <= int(value) < len(self.names):
            raise DataError(
                f"streamed label {value!r} of dataset '{self.dataset}' is outside [0, {len(self.names)}); pass "
                "--label_names with every class name in label order"
            )
        return int(value)


@dataclass
class StreamSplit:
    """One split of a stream: its shards, each a one-shard ``IterableDataset`` of ``image`` (undecoded) and
    ``label``; the number of examples when the source records it; the held-out rule when validation comes out of
    train. ``len()`` is that recorded number (0 when unknown): the log's and the plan's nominal size."""

    pieces: list[datasets.IterableDataset]
    num_examples: int | None
    label_index: LabelIndex
    hold_out: HoldOut | None = None

    def __len__(self) -> int:
        return self.num_examples or 0

    def for_process(self, index: int, count: int) -> StreamPart:
        """Process ``index`` of ``count``'s part, as ``split_dataset_by_node`` assigns it: whole shards when their
        count divides evenly, else every ``count``-th example of every shard (``StreamPart.open`` splits a shard when
        it opens it, at the right place of the whole shard)."""
        keys = list(range(len(self.pieces)))
        if count == 1:
            return StreamPart(self.pieces, keys)
        if len(self.pieces) % count == 0:
            mine = keys[index::count]
            return StreamPart([self.pieces[key] for key in mine], mine)
        return StreamPart(self.pieces, keys, rank=index, count=count)


# ---- opening the source ------------------------------------------------------------------------------------------


@dataclass
class OpenedStream:
    splits: dict[str, datasets.IterableDataset]
    sizes: dict[str, int | None]
    source: str
    metadata_files: list[Path]  # an image folder's metadata.csv / metadata.jsonl


def open_stream(name: str, config_name: str | None, cache_dir: str | None) -> OpenedStream:
    """The splits of ``name`` as ``IterableDataset``s, their recorded sizes and how they were opened."""
    path = Path(name).expanduser()
    if not path.exists():
        if _looks_like_path(name):
            raise DataError(
                f"dataset path '{name}' does not exist; pass --dataset_name with an existing path or a Hub id"
            )
        splits = _load_hub(name, config_name, cache_dir, streaming=True)
        return OpenedStream(dict(splits), {split: _recorded_size(ds, split) for split, ds in splits.items()},
                            f"hub:{name} (streamed)", [])  # fmt: skip
    if path.is_file() and path.suffix == ".parquet":
        return _open_files("parquet", {"train": [path]}, path, cache_dir)
    if path.is_dir() and not (path / "dataset_dict.json").is_file() and not (path / "state.json").is_file():
        for builder, pattern in (("parquet", "*.parquet"), ("arrow", "*.arrow"), ("webdataset", "*.tar")):
            files = sorted(path.rglob(pattern))
            if files:
                return _open_files(builder, _parquet_splits(path, files), path, cache_dir)
        if _has_images(path):
            return _open_image_folder(path, cache_dir)
    return _open_from_memory(name, config_name, cache_dir)


def _recorded_size(dataset: datasets.IterableDataset, split: str) -> int | None:
    recorded = dataset.info.splits.get(split) if dataset.info.splits else None
    return recorded.num_examples if recorded is not None and recorded.num_examples else None


def _open_files(builder: str, files: dict[str, list[Path]], path: Path, cache_dir: str | None) -> OpenedStream:
    data_files = {split: [str(file) for file in group] for split, group in files.items()}
    splits = datasets.load_dataset(builder, data_files=data_files, streaming=True, cache_dir=cache_dir)
    sizes = {split: _parquet_rows(group) if builder == "parquet" else None for split, group in files.items()}
    return OpenedStream(dict(splits), sizes, f"{builder}:{path} (streamed)", [])


def _parquet_rows(files: list[Path]) -> int:
    """The rows the parquet footers record: a few bytes read per file, whatever its size."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(file).num_rows for file in files)


def _open_image_folder(path: Path, cache_dir: str | None) -> OpenedStream:
    builder = datasets.load_dataset_builder("imagefolder", data_dir=str(path), cache_dir=cache_dir)
    splits = datasets.load_dataset("imagefolder", data_dir=str(path), streaming=True, cache_dir=cache_dir)
    sizes = {
        split: sum(Path(file).suffix.lower() in IMAGE_EXTENSIONS for file in builder.config.data_files.get(split, []))
        for split in splits
    }
    metadata = sorted(file for pattern in ("metadata.csv", "metadata.jsonl") for file in path.rglob(pattern))
    return OpenedStream(dict(splits), sizes, f"imagefolder:{path} (streamed)", metadata)


def _open_from_memory(name: str, config_name: str | None, cache_dir: str | None) -> OpenedStream:
    """A local source that is not shards (save_to_disk, CIFAR batches, IDX): read as the map-style path reads it,
    then streamed from memory in up to ``MAX_SHARDS_FROM_MEMORY`` shards, so the same run streams it."""
    loaded, source = load_source(name, config_name, cache_dir)
    splits = {
        split: dataset.to_iterable_dataset(num_shards=max(1, min(MAX_SHARDS_FROM_MEMORY, len(dataset))))
        for split, dataset in loaded.items()
    }
    return OpenedStream(splits, {split: len(dataset) for split, dataset in loaded.items()}, f"{source} (streamed)", [])


# ---- what a stream does not say -----------------------------------------------------------------------------------


def stream_label_names(
    opened: OpenedStream, features: datasets.Features, column: str, given: list[str] | None, dataset: str
) -> tuple[list[str], bool]:
    """The class names and whether labels are stored by name: the ``label_names`` field, else the label feature's
    ClassLabel names, else the values of an image folder's metadata file; else a DataError naming the field."""
    feature = features[column]
    if given:
        names = list(given)
        if isinstance(feature, datasets.ClassLabel) and feature.num_classes != len(names):
            raise ConfigError(
                f"label_names gives {len(names)} classes but dataset '{dataset}' has {feature.num_classes} "
                f"({feature.names}); pass --label_names with those, or leave it unset"
            )
        return names, _stores_names(feature)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), False
    if opened.metadata_files:
        return _metadata_label_names(opened.metadata_files, column, dataset), True
    raise DataError(
        f"the stream of dataset '{dataset}' does not say its class names (label column '{column}' holds "
        f"{feature}); pass --label_names with the class names in label order, comma-separated"
    )


def _stores_names(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _metadata_label_names(files: list[Path], column: str, dataset: str) -> list[str]:
    """Class names from an image folder's metadata.csv / metadata.jsonl (datasets' imagefolder format): the
    distinct values of ``column``, sorted as the map-style path sorts them. The file is small: one row per image."""
    tables = {}
    for i, file in enumerate(files):
        builder = "csv" if file.suffix == ".csv" else "json"
        table = datasets.load_dataset(builder, data_files=str(file), split="train", keep_in_memory=True)
        if column not in table.column_names:
            raise DataError(
                f"metadata file '{file}' of dataset '{dataset}' has no column '{column}'; its columns are "
                f"{table.column_names}; pass --label_column_name or --label_names"
            )
        tables[str(i)] = table.select_columns([column])
    return label_names(tables, column, dataset)


def stream_statistics(split: StreamSplit, seed: int) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Mean, std and the most common height of the first ``STREAM_STATISTICS_SAMPLES`` training images of the
    stream (its first shards, in order): a bounded read, whatever the dataset's size."""
    first = []
    for example, _ in zip(_examples(split), range(STREAM_STATISTICS_SAMPLES), strict=False):
        first.append({"image": example["image"]})
    if not first:
        raise DataError("the training stream holds no examples; check --dataset_name and --train_split_name")
    sample = datasets.Dataset.from_list(first, features=datasets.Features({"image": datasets.Image()}))
    return image_statistics(sample, seed, len(first))


def _examples(split: StreamSplit) -> Iterable[dict]:
    for key, piece in enumerate(split.pieces):
        for offset, example in enumerate(rows(piece)):
            if split.hold_out is None or split.hold_out.keeps(key, offset):
                yield example


# ---- the bundle ------------------------------------------------------------------------------------------------


def _standard(dataset: datasets.IterableDataset, image: str, label: str) -> datasets.IterableDataset:
    dataset = dataset.select_columns([image, label])
    renames = {old: new for old, new in ((image, "image"), (label, "label")) if old != new}
    dataset = dataset.rename_columns(renames) if renames else dataset
    return dataset.cast_column("image", datasets.Image(decode=False))


def _pieces(dataset: datasets.IterableDataset) -> list[datasets.IterableDataset]:
    return [dataset.shard(num_shards=dataset.n_shards, index=index) for index in range(dataset.n_shards)]


def build_stream_data(data: DataArguments, seed: int, cache_dir: str | None = None) -> DataBundle:
    """``build_data`` for ``streaming: true``: the splits as ``StreamSplit``s, nothing read whole."""
    name = data.dataset_name
    if data.data_pipeline in ("resident", "synthetic"):
        raise ConfigError(
            f"data_pipeline {data.data_pipeline} holds the whole split in memory, which a stream never is; with "
            "streaming true pass --data_pipeline stream (or auto)"
        )
    for field in ("max_train_samples", "max_eval_samples"):
        if getattr(data, field) is not None:
            raise ConfigError(f"{field} does not apply to a stream; with streaming true unset it and use --max_steps")
    opened = open_stream(name, data.dataset_config_name, cache_dir)
    roles = pick_splits(list(opened.splits), name, data.train_split_name, data.validation_split_name,
                        data.test_split_name)  # fmt: skip
    train = opened.splits[roles["train"]]
    features = train.features
    if features is None:
        raise DataError(
            f"the stream of dataset '{name}' does not say its columns; pass --image_column_name and "
            "--label_column_name (and --label_names)"
        )
    image_column = find_image_column(features, name, data.image_column_name)
    label_override = data.label_column_name or next((c for c in STREAM_LABEL_COLUMNS if c in features), None)
    label_column = find_label_column(features, name, label_override)
    names, by_name = stream_label_names(opened, features, label_column, data.label_names, name)
    require_two_classes(names, name)
    index = LabelIndex(names, by_name, name)

    def split_of(role: str, hold_out: HoldOut | None = None, size: int | None = None) -> StreamSplit:
        split = roles[role]
        pieces = _pieces(_standard(opened.splits[split], image_column, label_column))
        if size is None and hold_out is None:
            size = opened.sizes.get(split)
        return StreamSplit(pieces, size, index, hold_out)

    note = held_out = ""
    if "validation" in roles:
        train_split, validation = split_of("train"), split_of("validation")
    else:
        percentage = data.validation_split_percentage
        if percentage <= 0:
            raise DataError(
                f"dataset '{name}' has no validation split and validation_split_percentage is {percentage}; set "
                "--validation_split_percentage above 0 or pass --validation_split_name"
            )
        total = opened.sizes.get(roles["train"])
        held = None if total is None else round(total * percentage / 100)
        kept = None if total is None else total - held
        train_split = split_of("train", HoldOut(seed, percentage, validation=False), kept)
        validation = split_of("train", HoldOut(seed, percentage, validation=True), held)
        held_out = (
            f"about {percentage:g}% of '{roles['train']}' held out as validation by a seeded rule on each example's "
            f"shard and place in it (seed {seed}), which training skips"
        )
        note = f"; validation: {held_out}"
        logger.warning("dataset '%s' has no validation split: %s", name, held_out)
    test = split_of("test") if "test" in roles else None
    mean, std, native_size = stream_statistics(train_split, seed)
    logger.info(
        "data %s: %s train, %s validation, %s test examples recorded, %d classes, %d px; normalisation statistics "
        "from the first %d streamed training images%s",
        opened.source,
        train_split.num_examples or "unrecorded",
        validation.num_examples or "unrecorded",
        "no" if test is None else test.num_examples or "unrecorded",
        len(names),
        native_size,
        STREAM_STATISTICS_SAMPLES,
        note,
    )
    return DataBundle(train_split, validation, test, names, mean, std, native_size, opened.source, name, held_out)


# ---- the loaders -------------------------------------------------------------------------------------------------


def stream_loader(factory: Any, split: StreamSplit, train: bool) -> StreamLoader:
    """The ``StreamLoader`` of ``split`` for ``factory``'s model, arguments and Accelerator (a ``LoaderFactory``);
    the training one is registered for checkpointing, so a checkpoint holds where its next batch starts."""
    accelerator, training, data_args = factory.accelerator, factory.training, factory.data_args
    count, rank = accelerator.num_processes, accelerator.process_index
    batch_size = training.per_device_train_batch_size if train else training.per_device_eval_batch_size
    part = split.for_process(rank, count)
    transform = ImageTransform(train, factory.augment)  # the run's one augmentation value
    batches = None
    if train:
        if split.num_examples:
            batches = split.num_examples // (batch_size * count)
        elif training.max_steps > 0:  # unrecorded size: the whole run is one epoch of max_steps updates
            batches = training.max_steps * training.gradient_accumulation_steps
        else:
            raise DataError(
                f"the stream of dataset '{factory.data.name}' does not record how many training examples it holds, "
                "so an epoch has no length; pass --max_steps with the number of updates to train"
            )
    make_batches = functools.partial(
        StreamBatches,
        part,
        transform,
        split.label_index,
        batch_size,
        training.seed,
        process_index=rank,
        window=data_args.shuffle_buffer_size,
        shuffle=train,
        batches=batches,
        hold_out=split.hold_out,
        skip_corrupt=data_args.skip_corrupt_images,
    )

    def any_process_has_more(has_more: bool) -> bool:
        flag = torch.tensor([int(has_more)], device=accelerator.device)
        return bool(accelerator.reduce(flag, "sum").item())

    def gather_positions(window: dict) -> list[dict]:
        from accelerate.utils import gather_object

        return gather_object([window])

    loader = StreamLoader(
        make_batches,
        batch_size,
        batches,
        accelerator.device,
        training.dataloader_num_workers,
        training.dataloader_pin_memory and accelerator.device.type != "cpu",
        transform.size,  # eval_image_size for evaluation
        any_process_has_more=any_process_has_more if count > 1 else None,
        gather_positions=gather_positions if count > 1 else None,
        process_index=rank,
        num_processes=count,
        # what a saved position means depends on these: the batches' size, the windows' size, the seeded order
        position_fields={
            "per_device_train_batch_size" if train else "per_device_eval_batch_size": batch_size,
            "shuffle_buffer_size": data_args.shuffle_buffer_size,
            "seed": training.seed,
        },
    )
    if train:
        accelerator.register_for_checkpointing(loader)
    return loader
