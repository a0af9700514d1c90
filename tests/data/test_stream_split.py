"""A stream split across processes: by example (fewer shards than processes, or a count that does not divide), a
process resumed at any window reads what the uninterrupted run reads; the held-out validation examples are the same
whatever the number of processes; and a checkpoint's stream position is refused by a run of another process count
or another batch size, window size or seed."""

from __future__ import annotations

from pathlib import Path

import datagen
import datasets
import pytest
import torch

from accel_recipes.config import DataArguments, TrainingArguments
from accel_recipes.data.bundle import DataBundle
from accel_recipes.data.stream_loader import StreamLoader, StreamPart, StreamPosition, ordered_examples
from accel_recipes.data.streaming import build_stream_data
from accel_recipes.errors import ConfigError

START = StreamPosition()
SHARD = 45  # one shard, a multiple of neither 2 nor 3 processes
WINDOW = 4  # each process's share of the shard spans several windows


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory) -> Path:
    return datagen.make_parquet_shards(tmp_path_factory.mktemp("one") / "pq", {"train": [SHARD]}, size=8)


@pytest.fixture(scope="module")
def data(one_shard) -> DataBundle:
    """No validation split: 20% of the shard is held out by the seeded rule."""
    return build_stream_data(
        DataArguments(dataset_name=str(one_shard), streaming=True, validation_split_percentage=20), seed=0
    )


@pytest.fixture(scope="module")
def lookup(one_shard) -> dict[bytes, int]:
    """Image bytes -> row id: the streamed rows carry image and label only."""
    file = next((one_shard / "data").glob("*.parquet"))
    table = datasets.Dataset.from_parquet(str(file)).cast_column("image", datasets.Image(decode=False))
    ids = {row["image"]["bytes"]: row["id"] for row in table}
    assert len(ids) == SHARD
    return ids


def read(part: StreamPart, lookup, hold_out=None, start=START, shuffle=True) -> list[tuple[int, int, StreamPosition]]:
    """``(position, row id, where the next position's window starts)`` of one process's epoch 1 from ``start``."""
    examples = ordered_examples(part, 0, 1, WINDOW, shuffle, start, hold_out)
    return [(position, lookup[example["image"]["bytes"]], following) for position, example, following in examples]


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("held_out", [False, True])
def test_a_stream_split_by_example_resumed_at_any_window_reads_what_it_reads_uninterrupted(
    data, lookup, processes, held_out
):
    hold_out = data.train.hold_out if held_out else None
    alone = sorted(i for _, i, _ in read(data.train.for_process(0, 1), lookup, hold_out))
    together = []
    for rank in range(processes):
        part = data.train.for_process(rank, processes)
        assert part.count == processes  # one shard: split by example
        whole = read(part, lookup, hold_out)
        together += [i for _, i, _ in whole]
        starts = sorted({following for _, _, following in whole if following.offset > 0}, key=lambda s: s.offset)
        assert len(starts) >= 2, "the process's share spans several windows"
        for start in starts:
            resumed = read(part, lookup, hold_out, start)
            assert [(p, i) for p, i, _ in resumed] == [(p, i) for p, i, _ in whole if p >= start.position]
    assert sorted(together) == alone  # the processes read the shard's (kept) examples once between them


def test_the_held_out_examples_are_the_same_whatever_the_number_of_processes(data, lookup):
    held = {}
    for processes in (1, 2, 3):
        parts = [(data.train.for_process(r, processes), data.validation.for_process(r, processes))
                 for r in range(processes)]  # fmt: skip
        trained = [i for train, _ in parts for _, i, _ in read(train, lookup, data.train.hold_out, shuffle=False)]
        held_out = data.validation.hold_out
        validated = [i for _, valid in parts for _, i, _ in read(valid, lookup, held_out, shuffle=False)]
        assert sorted(trained + validated) == sorted(lookup.values())  # every example on exactly one side
        held[processes] = sorted(validated)
    assert held[1] and held[1] == held[2] == held[3]


def make_batches(opened: list):
    def make(epoch: int, first_batch: int, start: StreamPosition) -> list:
        opened.append(start)
        following = {"cycle": 0, "piece": 0, "offset": 8, "position": 8}
        return [(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), following)]

    return make


def loader(make, rank: int, processes: int, window: int = 4, gather=None) -> StreamLoader:
    return StreamLoader(make, 2, 10, torch.device("cpu"), 0, False, 4, gather_positions=gather, process_index=rank,
                        num_processes=processes, position_fields={"shuffle_buffer_size": window})  # fmt: skip


def test_a_stream_position_saved_by_two_processes_is_refused_by_three_and_loaded_by_two():
    opened: list = []
    windows = [{"epoch": 1, "batch": 3, "cycle": 0, "piece": 0, "offset": 4 * rank, "position": 6} for rank in (0, 1)]
    saving = loader(make_batches(opened), 0, 2, gather=lambda window: windows)
    state = saving.state_dict()
    assert state["num_processes"] == 2 and state["shuffle_buffer_size"] == 4
    for rank in range(3):
        with pytest.raises(ConfigError, match="saved by 2 processes but this run has 3.*--num_processes 2"):
            loader(make_batches(opened), rank, 3).load_state_dict(state)
    with pytest.raises(ConfigError, match="saved by 2 processes but this run has 3"):  # a state of before the count
        loader(make_batches(opened), 0, 3).load_state_dict({"next_window": windows})
    with pytest.raises(ConfigError, match="shuffle_buffer_size 4 but this run has 8; resume with --shuffle_buffer_"):
        loader(make_batches(opened), 1, 2, window=8).load_state_dict(state)
    resumed = loader(make_batches(opened), 1, 2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert len(list(resumed.skip_first_batches(3))) == 1
    assert opened[-1] == StreamPosition(0, 0, 4, 6)  # process 1's own window


def test_the_run_loader_records_what_its_position_depends_on_and_refuses_another_batch_size(
    one_shard, data, in_fresh_process
):
    from accelerate import Accelerator

    from accel_recipes.data import LoaderFactory, ModelInput
    from accel_recipes.data.streaming import stream_loader

    data_args = DataArguments(dataset_name=str(one_shard), streaming=True, validation_split_percentage=20)
    accelerator = Accelerator(cpu=True)

    def train_loader(batch_size: int) -> StreamLoader:
        training = TrainingArguments(per_device_train_batch_size=batch_size)
        factory = LoaderFactory(data, data_args, training, ModelInput(8, "bilinear", False), accelerator)
        return stream_loader(factory, data.train, train=True)

    state = train_loader(4).state_dict()
    assert state["num_processes"] == 1 and state["per_device_train_batch_size"] == 4
    assert state["shuffle_buffer_size"] == data_args.shuffle_buffer_size and "seed" in state
    train_loader(4).load_state_dict(state)
    with pytest.raises(ConfigError, match="per_device_train_batch_size 4 but this run has 8"):
        train_loader(8).load_state_dict(state)
