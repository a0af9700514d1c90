"""Streamed splits (``streaming: true``): the order is a pure function of (seed, epoch, position), so an epoch reads
every example once, a resumed stream repeats the uninterrupted one, workers and processes split it exactly, and
what a stream does not say is found or asked for with a one-line error."""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import datagen
import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from accel_recipes.config import DataArguments
from accel_recipes.data import build_data
from accel_recipes.data.stream_loader import (
    HoldOut,
    StreamBatches,
    StreamLoader,
    StreamPosition,
    ordered_examples,
)
from accel_recipes.data.streaming import StreamSplit, build_stream_data, open_stream
from accel_recipes.data.transforms import make_transform
from accel_recipes.errors import ConfigError, DataError

START = StreamPosition()  # an epoch's beginning
SHARDS = {"train": [30, 22, 17, 9], "validation": [7, 5, 3]}  # uneven on purpose


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return datagen.make_parquet_shards(tmp_path_factory.mktemp("stream") / "pq", SHARDS, size=8)


@pytest.fixture(scope="module")
def train_split(shards) -> StreamSplit:
    return build_stream_data(DataArguments(dataset_name=str(shards), streaming=True), seed=0).train


def row_ids(shards: Path, split: str) -> list[list[int]]:
    files = sorted((shards / "data").glob(f"{split}-*.parquet"))
    return [datasets.Dataset.from_parquet(str(file))["id"] for file in files]


def image_id(example: dict, lookup: dict[bytes, int]) -> int:
    return lookup[example["image"]["bytes"]]


@pytest.fixture(scope="module")
def lookup(shards) -> dict[bytes, int]:
    """Image bytes -> row id: the streamed rows carry image and label only."""
    files = sorted(str(file) for file in (shards / "data").glob("*.parquet"))
    table = datasets.load_dataset("parquet", data_files=files, split="train").cast_column(
        "image", datasets.Image(decode=False)
    )
    return {row["image"]["bytes"]: row["id"] for row in table}


def epoch_ids(split, lookup, epoch, start=START, seed=0, window=8, hold_out=None, part=None):
    part = split.for_process(0, 1) if part is None else part
    examples = ordered_examples(part, seed, epoch, window, True, start, hold_out)
    return [(position, image_id(example, lookup), following) for position, example, following in examples]


def test_an_epoch_reads_every_example_once_in_a_seeded_order_that_changes_each_epoch(train_split, lookup, shards):
    everything = sorted(i for ids in row_ids(shards, "train") for i in ids)
    first = [i for _, i, _ in epoch_ids(train_split, lookup, epoch=0)]
    assert sorted(first) == everything
    assert first == [i for _, i, _ in epoch_ids(train_split, lookup, epoch=0)]  # same seed, same epoch: same order
    assert first != [i for _, i, _ in epoch_ids(train_split, lookup, epoch=1)]  # reshuffled each epoch
    assert first != [i for _, i, _ in epoch_ids(train_split, lookup, epoch=0, seed=1)]
    assert first != everything  # shuffled, not the files' order


@pytest.mark.parametrize("cut", [1, 8, 13, 52, 77])
def test_the_stream_opened_at_a_saved_window_repeats_the_uninterrupted_one(train_split, lookup, cut):
    whole = epoch_ids(train_split, lookup, epoch=2)
    position, _, following = whole[cut - 1]
    resumed = epoch_ids(train_split, lookup, epoch=2, start=following)
    assert following.position <= cut  # the window of position `cut` starts at or before it
    assert [(p, i) for p, i, _ in resumed if p >= cut] == [(p, i) for p, i, _ in whole[cut:]]
    # only the rest of one window is read again, never the epoch before it
    assert len(resumed) - len(whole[cut:]) < 8


def test_hold_out_splits_every_example_to_exactly_one_side(train_split, lookup):
    kept = {i for _, i, _ in epoch_ids(train_split, lookup, 0, hold_out=HoldOut(0, 20, validation=False))}
    held = {i for _, i, _ in epoch_ids(train_split, lookup, 0, hold_out=HoldOut(0, 20, validation=True))}
    everything = {i for _, i, _ in epoch_ids(train_split, lookup, 0)}
    assert kept | held == everything and not kept & held
    assert 0.05 < len(held) / len(everything) < 0.4  # about 20%


@pytest.mark.parametrize("processes", [2, 3, 4, 5])
def test_processes_read_disjoint_parts_that_cover_the_split(train_split, lookup, processes):
    """4 shards: by shard on 2 and 4 processes, by example on 3 and 5 (more processes than shards included)."""
    seen = []
    for rank in range(processes):
        part = train_split.for_process(rank, processes)
        seen.append([i for _, i, _ in epoch_ids(train_split, lookup, 0, part=part)])
    flat = [i for ids in seen for i in ids]
    assert sorted(flat) == sorted(i for _, i, _ in epoch_ids(train_split, lookup, 0))
    assert all(seen), "every process gets examples"


def batches(split: StreamSplit, workers: int, first_batch: int = 0, start=START) -> list:
    transform = make_transform(True, "crop_flip", 8, 8, crop_padding=2)
    dataset = StreamBatches(
        split.for_process(0, 1), transform, split.label_index, 8, seed=0, epoch=1,
        process_index=0, window=8, shuffle=True, first_batch=first_batch, batches=12, start=start,
    )  # fmt: skip
    return list(DataLoader(dataset, batch_size=None, num_workers=workers))


def test_workers_give_the_batches_of_one_process_and_resume_repeats_them(train_split):
    alone = batches(train_split, workers=0)
    assert len(alone) == 12 and all(len(labels) == 8 for _, labels, _ in alone)
    with_workers = batches(train_split, workers=2)
    for (images, labels, following), (images_w, labels_w, following_w) in zip(alone, with_workers, strict=True):
        assert torch.equal(images, images_w) and torch.equal(labels, labels_w) and following == following_w
    resumed = batches(train_split, workers=2, first_batch=5, start=StreamPosition(**alone[4][2]))
    assert len(resumed) == 7
    for (images, labels, _), (images_r, labels_r, _) in zip(alone[5:], resumed, strict=True):
        assert torch.equal(images, images_r) and torch.equal(labels, labels_r)


def test_a_training_epoch_longer_than_the_shards_reads_them_again_in_a_new_order(train_split, lookup):
    transform = make_transform(False, "none", 8, 8)
    dataset = StreamBatches(train_split.for_process(0, 1), transform, train_split.label_index, 50, 0, 0, 0, 8, True,
                            batches=3)  # fmt: skip
    labels = [labels for _, labels, _ in DataLoader(dataset, batch_size=None)]
    assert [len(batch) for batch in labels] == [50, 50, 50]  # 150 > 78 examples: a second cycle


# ---- what a stream does not say ----------------------------------------------------------------------------------


def test_sizes_come_from_the_parquet_footers_and_a_missing_validation_split_is_held_out(shards, caplog):
    only_train = shards.parent / "only-train"
    datagen.make_parquet_shards(only_train, {"train": [20, 20]}, size=8)
    with caplog.at_level("WARNING"):
        data = build_stream_data(DataArguments(dataset_name=str(only_train), streaming=True), seed=0)
    assert len(data.train) + len(data.validation) == 40 and len(data.validation) == 4
    assert data.train.hold_out == HoldOut(0, 10.0, validation=False) and data.validation.hold_out.validation
    assert "held out as validation by a seeded rule" in caplog.text and "seeded rule" in data.held_out
    assert data.label_names == datagen.class_names(3) and data.native_size == 8


def test_webdataset_shards_take_their_class_names_from_label_names(tmp_path):
    root = datagen.make_webdataset_shards(tmp_path / "wds", {"train": [12, 12], "validation": [6]}, size=8)
    with pytest.raises(DataError, match="does not say its class names.*--label_names") as error:
        build_stream_data(DataArguments(dataset_name=str(root), streaming=True), seed=0)
    assert "\n" not in str(error.value)
    data = build_stream_data(DataArguments(dataset_name=str(root), streaming=True, label_names=["a", "b", "c"]), seed=0)
    assert data.label_names == ["a", "b", "c"] and len(data.train.pieces) == 2
    assert data.train.num_examples is None  # a tar does not record its size: max_steps is then needed
    examples = list(data.train.pieces[1])
    assert len(examples) == 12 and {data.train.label_index(example["label"]) for example in examples} == {0, 1, 2}


def write_metadata_folder(root: Path, suffix: str) -> Path:
    """An image folder without class folders whose labels are in metadata.csv / metadata.jsonl (datasets'
    imagefolder format: a ``file_name`` column, then the others)."""
    rows = []
    for split, count in (("train", 12), ("test", 6)):
        (root / split).mkdir(parents=True)
        labels = np.arange(count) % 2
        for i, image in enumerate(datagen.make_images(labels, 2, 8, 3)):
            Image.fromarray(image).save(root / split / f"{i}.png")
            rows.append((split, f"{i}.png", ["cat", "dog"][labels[i]]))
        lines = [(name, label) for s, name, label in rows if s == split]
        if suffix == ".csv":
            text = "file_name,label\n" + "".join(f"{name},{label}\n" for name, label in lines)
        else:
            text = "".join(json.dumps({"file_name": name, "label": label}) + "\n" for name, label in lines)
        (root / split / f"metadata{suffix}").write_text(text)
    return root


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_image_folder_takes_its_labels_from_a_metadata_file_streamed_or_not(tmp_path, suffix):
    root = write_metadata_folder(tmp_path / "meta", suffix)
    streamed = build_stream_data(DataArguments(dataset_name=str(root), streaming=True), seed=0)
    assert streamed.label_names == ["cat", "dog"] and len(streamed.train) + len(streamed.validation) == 12
    labels = [streamed.train.label_index(example["label"]) for piece in streamed.test.pieces for example in piece]
    assert labels == [0, 1] * 3
    whole = build_data(DataArguments(dataset_name=str(root)), seed=0)
    assert whole.label_names == ["cat", "dog"] and sorted(whole.test["label"]) == [0, 0, 0, 1, 1, 1]


def test_a_hub_id_is_opened_as_a_stream_up_to_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="could not reach the Hugging Face Hub for dataset 'someone/absent'"):
        open_stream("someone/absent", None, None)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"data_pipeline": "resident"}, ConfigError, "data_pipeline resident .* --data_pipeline stream"),
        ({"max_train_samples": 5}, ConfigError, "max_train_samples does not apply to a stream"),
        ({"validation_split_percentage": 0, "validation_split_name": None}, DataError, "validation_split_percentage"),
        ({"label_names": ["a", "b"]}, ConfigError, "label_names gives 2 classes"),
        ({"dataset_name": "./nowhere"}, DataError, "dataset path './nowhere' does not exist"),
    ],
)
def test_each_missing_or_wrong_setting_is_a_one_line_error_naming_the_field(shards, fields, error, message):
    only_train = shards.parent / "one-split"
    if not only_train.exists():
        datagen.make_parquet_shards(only_train, {"train": [10, 10]}, size=8)
    arguments = DataArguments(dataset_name=str(only_train), streaming=True)
    for name, value in fields.items():
        setattr(arguments, name, value)
    with pytest.raises(error, match=message) as raised:
        build_stream_data(arguments, seed=0)
    assert "\n" not in str(raised.value)


# ---- exact evaluation on several processes -----------------------------------------------------------------------


class Collective:
    """``any_process_has_more`` of ``count`` processes simulated by threads: each waits for all (as an all-reduce
    does) and learns whether any has a batch left."""

    def __init__(self, count: int) -> None:
        self.flags = [False] * count
        self.barrier = threading.Barrier(count, timeout=30)

    def for_rank(self, rank: int):
        def any_process_has_more(has_more: bool) -> bool:
            self.flags[rank] = has_more
            self.barrier.wait()
            result = any(self.flags)
            self.barrier.wait()
            return result

        return any_process_has_more


@pytest.mark.parametrize(("shard_sizes", "processes", "workers"), [([7, 5, 3], 2, 0), ([7, 5, 3], 2, 2), ([9], 3, 2)])
def test_evaluation_on_several_processes_counts_every_sample_once_and_no_process_waits(
    tmp_path, shard_sizes, processes, workers
):
    """Labels are the rows' ids (one class per row), so the labels that come out say which rows were evaluated.
    Uneven shards, and a single shard split over three processes (fewer shards than processes and workers)."""
    total = sum(shard_sizes)
    root = tmp_path / "ids"
    datagen.make_parquet_shards(root, {"train": [4, 4], "validation": shard_sizes}, num_classes=total + 8, size=8)
    # each process opens the stream itself (datasets' iterables keep their position in themselves: not shared)
    opened = [build_stream_data(DataArguments(dataset_name=str(root), streaming=True), 0) for _ in range(processes)]
    collective = Collective(processes)
    transform = make_transform(False, "none", 8, 8)
    outputs: list[list] = [[] for _ in range(processes)]

    def evaluate(rank: int) -> None:
        validation = opened[rank].validation
        part = validation.for_process(rank, processes)
        make = functools.partial(StreamBatches, part, transform, validation.label_index, 4, 0,
                                 process_index=rank, window=4, shuffle=False)  # fmt: skip
        loader = StreamLoader(make, 4, None, torch.device("cpu"), workers, False, 8,
                              any_process_has_more=collective.for_rank(rank), process_index=rank)  # fmt: skip
        outputs[rank] = [(images.shape, labels) for images, labels in loader]

    threads = [threading.Thread(target=evaluate, args=(rank,)) for rank in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a process waits forever"
    assert len({len(batches) for batches in outputs}) == 1, "every process makes as many gathers"
    assert all(shape == (4, 3, 8, 8) for batches in outputs for shape, _ in batches)  # padded to full batches
    labels = torch.cat([labels for batches in outputs for _, labels in batches])
    ids = labels[labels >= 0].tolist()
    first_id = 8  # the two train shards hold rows 0..7
    assert sorted(ids) == list(range(first_id, first_id + total))


def test_arrow_shards_and_a_save_to_disk_folder_stream_too(tmp_path):
    """Arrow stream files (as ``datasets`` writes its cache shards) are opened as shards; a save_to_disk folder is
    read as the map-style path reads it and streamed from memory in shards."""
    import pyarrow as pa

    folder = datagen.make_parquet(tmp_path, size=8)  # 24 training images
    dataset = datasets.Dataset.from_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    for i, part in enumerate((dataset.select(range(0, 12)), dataset.select(range(12, 24)))):
        target = tmp_path / "arrow" / f"train-{i:05d}-of-00002.arrow"
        target.parent.mkdir(exist_ok=True)
        table = part.with_format("arrow")[:]
        with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    arrow = build_stream_data(DataArguments(dataset_name=str(tmp_path / "arrow"), streaming=True), seed=0)
    assert len(arrow.train.pieces) == 2 and arrow.label_names == datagen.class_names(3)
    dataset.save_to_disk(str(tmp_path / "disk"))
    disk = build_stream_data(DataArguments(dataset_name=str(tmp_path / "disk"), streaming=True), seed=0)
    assert "(streamed)" in disk.source and len(disk.train) + len(disk.validation) == 24
    kept = [
        len(list(ordered_examples(split.for_process(0, 1), 0, 0, 8, False, START, split.hold_out)))
        for split in (disk.train, disk.validation)
    ]
    assert sum(kept) == 24 and all(kept)  # the hold-out rule gives every row to exactly one side


def test_a_resumed_loader_opens_the_stream_at_the_window_its_checkpoint_saved():
    """The checkpoint's window of the next batch is where the resumed loader opens the stream (no pass over the
    batches before it); a window of another batch or epoch is not used."""
    opened = []
    window = {"cycle": 0, "piece": 2, "offset": 48, "position": 130}

    def make_batches(epoch: int, first_batch: int, start: StreamPosition) -> list:
        opened.append((epoch, first_batch, start))
        following = {**window, "position": 136}
        return [(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), following)]

    saved = StreamLoader(make_batches, 2, 10, torch.device("cpu"), 0, False, 4)
    saved.next_window = {"epoch": 3, "batch": 66, **window}
    state = saved.state_dict()
    for epoch, batch, expected in ((3, 66, StreamPosition(**window)), (3, 65, START), (2, 66, START)):
        resumed = StreamLoader(make_batches, 2, 10, torch.device("cpu"), 0, False, 4)
        resumed.load_state_dict(state)
        resumed.set_epoch(epoch)
        assert len(list(resumed.skip_first_batches(batch))) == 1
        assert opened[-1] == (epoch, batch, expected)
        assert resumed.next_window == {"epoch": epoch, "batch": batch + 1, **window, "position": 136}
