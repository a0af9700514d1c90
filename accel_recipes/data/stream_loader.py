"""The loader of a streamed split: batches in an order that is a pure function of (seed, epoch, position).

``datasets``' own shuffle buffer is not restored on resume (``IterableDataset.state_dict`` keeps the position
of the source, not the buffer's content), so the order is made here from pieces it does keep exact:

- each process streams its own shards (``StreamSplit.for_process``: by shard when the shard count divides
  evenly, else every shard by example, as ``datasets.distributed.split_dataset_by_node`` decides), a
  ``StreamPart``;
- each epoch the process's shards are read in an order drawn from (seed, epoch, cycle);
- inside a shard, consecutive windows of ``shuffle_buffer_size`` examples are permuted by a generator seeded
  with (seed, epoch, cycle, shard, where the window starts): the seeded buffer;
- an epoch of training has a fixed number of batches (every process the same, so no collective waits); a
  process whose shards run out first reads them again in the next cycle's order.

A position is thus found again by opening its window's shard at the window's start (``IterableDataset.skip``
over that one shard's start) instead of reading the epoch from the beginning; the loader remembers where the
window of its next batch starts (``StreamPosition``) and a checkpoint carries it (``state_dict``), with the
process count and the fields the position depends on, which a resumed run must have too.

DataLoader workers: worker ``w`` of ``W`` makes batches ``f + w, f + w + W, ...`` from the iteration's first batch
``f`` (the DataLoader asks them in turn, so the batches arrive in order); every worker reads the stream's bytes,
and decodes and transforms only its own samples. Each sample's augmentation comes from its own (seed, epoch,
process, position) generator, so batches are the same whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import datasets
import pyarrow as pa
import torch
from accelerate.state import GradientState
from datasets.distributed import split_dataset_by_node
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from accel_recipes.errors import ConfigError, DataError

from .loaders import collate_batch, decode_image
from .resident import DeviceLoader


def _seed(*keys: int) -> int:
    # Python's hash of a tuple of ints is the same in every process and every run (no hash randomisation for ints).
    return hash(keys) % 2**63


@dataclass(frozen=True)
class StreamPosition:
    """Where a window starts: in cycle ``cycle`` of the epoch, the ``piece``-th shard of that cycle's order, after
    ``offset`` of its examples; ``position`` counts the examples of the epoch before it."""

    cycle: int = 0
    piece: int = 0
    offset: int = 0
    position: int = 0


@dataclass(frozen=True)
class HoldOut:
    """The seeded rule that splits a source without a validation split: example ``offset`` of shard ``key`` (its
    place in the whole shard, whichever process reads it) is held out when
    ``_seed(seed, key, offset) % 10_000 < percentage * 100``; training keeps exactly the others."""

    seed: int
    percentage: float
    validation: bool

    def keeps(self, key: int, offset: int) -> bool:
        held = _seed(self.seed, key, offset) % 10_000 < self.percentage * 100
        return held == self.validation


@dataclass
class StreamPart:
    """What one process streams: ``pieces``, one-shard ``IterableDataset``s as the source has them (never split),
    and their ``keys`` (shard numbers); of each piece the process reads examples ``rank, rank + count, ...`` (count 1:
    the whole shard). Offsets into a piece count this process's examples of it."""

    pieces: list[datasets.IterableDataset]
    keys: list[int]
    rank: int = 0
    count: int = 1

    def open(self, index: int, offset: int) -> datasets.IterableDataset:
        """Piece ``index`` from this process's example ``offset`` of it on. ``datasets`` applies
        ``split_dataset_by_node``'s every-``count``-th step after the dataset's own ``skip`` (in 3.3 as in 5.x), so
        a skip on the split piece counts examples of the whole shard: the whole shard is skipped up to this
        process's example ``offset`` (``offset * count``), then split; a shard whose length is not a multiple of
        ``count`` just ends early, the same way for the split read whole. A piece is one shard, so
        ``split_dataset_by_node`` always splits it by example."""
        piece = self.pieces[index]
        if self.count == 1:
            return piece.skip(offset) if offset else piece
        piece = piece.skip(offset * self.count) if offset else piece
        return split_dataset_by_node(piece, rank=self.rank, world_size=self.count)

    def shard_index(self, offset: int) -> int:
        """The place in the whole shard of this process's example ``offset`` of it (what the hold-out rule is
        evaluated on, so the held-out examples are the same whatever the number of processes)."""
        return offset * self.count + self.rank


def rows(piece: datasets.IterableDataset, window: int = 64) -> Iterator[dict]:
    """The examples of one shard, in order (the first sample the normalisation statistics are measured on)."""
    for table in tables(piece, window):
        yield from table.to_pylist()


def tables(piece: datasets.IterableDataset, window: int) -> Iterator[pa.Table]:
    """One shard as Arrow tables of ``window`` rows (the last one shorter). Through ``IterableDataset.iter``, not
    ``iter(piece)``: in a DataLoader worker the latter hands the worker only its share of the shards, and this module
    splits the work itself. Arrow, so rows that another worker decodes are never made Python objects here."""
    yield from piece.with_format("arrow").iter(batch_size=window)


def is_stream(split: object) -> bool:
    """Whether ``split`` is a ``StreamSplit`` (``streaming.py``), which knows its shards, not its rows."""
    return hasattr(split, "for_process") and hasattr(split, "pieces")


def piece_order(count: int, seed: int, epoch: int, cycle: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(count))
    generator = torch.Generator().manual_seed(_seed(seed, epoch, cycle, count))
    return torch.randperm(count, generator=generator).tolist()


@dataclass
class Window:
    """Consecutive rows of one shard, in the order the epoch reads them: ``table.take(order)`` are positions
    ``position, position + 1, ...``; ``following`` is where the window after it starts."""

    table: pa.Table
    order: list[int]
    position: int
    start: StreamPosition
    following: StreamPosition

    def example(self, i: int) -> dict:
        return self.table.slice(self.order[i], 1).to_pylist()[0]

    def examples(self, indices: list[int]) -> list[dict]:
        return self.table.take([self.order[i] for i in indices]).to_pylist()


def ordered_windows(
    part: StreamPart,
    seed: int,
    epoch: int,
    window: int,
    shuffle: bool,
    start: StreamPosition = StreamPosition(),  # noqa: B008 - frozen, never changed
    hold_out: HoldOut | None = None,
    cycle: bool = False,
) -> Iterator[Window]:
    """The windows of one process's epoch from ``start`` on: each shard (in the epoch's order of shards) in windows
    of ``window`` rows, the rows the hold-out rule gives this split kept, permuted by the window's own generator.

    ``cycle``: after the last shard, read them all again in the next cycle's order (training); else stop."""
    pieces, keys = part.pieces, part.keys
    current = start
    while True:
        order = piece_order(len(pieces), seed, epoch, current.cycle, shuffle)
        whole_cycle, produced = current.piece == 0 and current.offset == 0, False
        position = current.position
        for rank in range(current.piece, len(pieces)):
            index = order[rank]
            offset = current.offset if rank == current.piece else 0
            for table in tables(part.open(index, offset), window):
                begin = StreamPosition(current.cycle, rank, offset, position)
                if hold_out is not None:
                    kept = [hold_out.keeps(keys[index], part.shard_index(offset + i)) for i in range(table.num_rows)]
                    table = table.filter(pa.array(kept, type=pa.bool_()))
                offset = begin.offset + window  # a window is `window` rows of the shard, kept or not
                count = table.num_rows
                if shuffle and count > 1:
                    window_seed = _seed(seed, epoch, begin.cycle, keys[index], begin.offset)
                    generator = torch.Generator().manual_seed(window_seed)
                    permutation = torch.randperm(count, generator=generator).tolist()
                else:
                    permutation = list(range(count))
                following = StreamPosition(current.cycle, rank, offset, position + count)
                if count:
                    yield Window(table, permutation, position, begin, following)
                position += count
                produced = produced or count > 0
        if not cycle:
            return
        if whole_cycle and not produced:
            raise DataError("the training stream holds no examples; check --dataset_name and --train_split_name")
        current = StreamPosition(current.cycle + 1, 0, 0, position)


def ordered_examples(
    part: StreamPart,
    seed: int,
    epoch: int,
    window: int,
    shuffle: bool,
    start: StreamPosition = StreamPosition(),  # noqa: B008 - frozen, never changed
    hold_out: HoldOut | None = None,
    cycle: bool = False,
) -> Iterator[tuple[int, dict, StreamPosition]]:
    """``(position, example, where the next position's window starts)`` of one process's epoch, from ``start``."""
    for window_ in ordered_windows(part, seed, epoch, window, shuffle, start, hold_out, cycle):
        last = len(window_.order) - 1
        for i in range(len(window_.order)):
            yield window_.position + i, window_.example(i), window_.start if i < last else window_.following


class StreamBatches(IterableDataset):
    """The batches of one process's epoch from batch ``first_batch`` on (``batches`` of them, or to the end of the
    stream when None), each ``(uint8 images, int64 labels, where the next batch's window starts)``; in worker
    ``w`` of ``W`` only batches ``w, w + W, ...``. Picklable, for worker processes."""

    def __init__(
        self,
        part: StreamPart,
        transform: Callable[..., torch.Tensor],
        label_of: Callable[[object], int],
        batch_size: int,
        seed: int,
        epoch: int,
        process_index: int,
        window: int,
        shuffle: bool,
        first_batch: int = 0,
        batches: int | None = None,
        start: StreamPosition = StreamPosition(),  # noqa: B008 - frozen, never changed
        hold_out: HoldOut | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.part, self.transform, self.label_of = part, transform, label_of
        self.batch_size, self.seed, self.epoch, self.process_index = batch_size, seed, epoch, process_index
        self.window, self.shuffle, self.first_batch, self.batches = window, shuffle, first_batch, batches
        self.start, self.hold_out, self.skip_corrupt = start, hold_out, skip_corrupt

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        size = self.batch_size
        first = self.first_batch * size
        end = None if self.batches is None else self.batches * size
        windows = ordered_windows(
            self.part, self.seed, self.epoch, self.window, self.shuffle, self.start, self.hold_out,
            cycle=self.batches is not None,
        )  # fmt: skip
        samples: list = []
        for window in windows:
            count = len(window.order)
            if end is not None and window.position >= end:
                return
            # the DataLoader asks worker 0 for the first batch of this iteration, then worker 1, ...
            mine = [
                i
                for i in range(count)
                if first <= window.position + i < (end if end is not None else window.position + count)
                and ((window.position + i) // size - self.first_batch) % workers == worker
            ]
            for i, example in zip(mine, window.examples(mine) if mine else [], strict=True):
                position = window.position + i
                samples.append(self._sample(example, position))
                if (position + 1) % size == 0 or position + 1 == end:
                    following = window.start if i < count - 1 else window.following
                    yield (*collate_batch(samples), asdict(following))
                    samples = []
        if samples:
            yield (*collate_batch(samples), asdict(window.following))

    def _sample(self, example: dict, position: int) -> tuple[torch.Tensor, int] | None:
        label = self.label_of(example["label"])
        try:
            image: Image.Image = decode_image(example["image"])
        except DataError as error:
            if self.skip_corrupt:
                return None
            raise DataError(
                f"{error} (streamed sample {position} of epoch {self.epoch}); pass --skip_corrupt_images true to "
                "skip such images"
            ) from None
        generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.process_index, position))
        return self.transform(image, generator), label


class StreamLoader(DeviceLoader):
    """(images, labels) batches of a streamed split on the training device, through a DataLoader of workers.

    Training (``batches_per_epoch`` set): every process yields that many full batches per epoch. Evaluation:
    each process reads its shards to the end; a batch is padded to ``batch_size`` with label -1 rows, and while
    any process still has batches the others yield all-padding ones (``any_process_has_more`` is the collective
    that tells), so every process makes the same number of gathers and every sample is counted once.
    ``state_dict`` / ``load_state_dict`` carry where the next batch's window starts, so a resumed run opens the
    stream there (``skip_first_batches``) instead of reading the epoch from its start. A position holds only for the
    same process count and ``position_fields`` (the run's fields that decide what a position is, by name), so the
    state records them and a resumed run with others is refused."""

    def __init__(
        self,
        make_batches: Callable[..., StreamBatches],
        batch_size: int,
        batches_per_epoch: int | None,
        device: torch.device,
        num_workers: int,
        pin_memory: bool,
        image_size: int,
        any_process_has_more: Callable[[bool], bool] | None = None,
        gather_positions: Callable[[dict], list[dict]] | None = None,
        process_index: int = 0,
        num_processes: int = 1,
        position_fields: dict[str, int] | None = None,
    ) -> None:
        self.make_batches, self.batch_size, self.batches_per_epoch = make_batches, batch_size, batches_per_epoch
        self.device, self.num_workers, self.pin_memory, self.image_size = device, num_workers, pin_memory, image_size
        self.any_process_has_more, self.gather_positions = any_process_has_more, gather_positions
        self.process_index, self.num_processes = process_index, num_processes
        self.position_fields = dict(position_fields or {})
        self.next_window: dict = {"epoch": 0, "batch": 0, **asdict(StreamPosition())}
        self.resume_window: dict | None = None

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("an evaluation stream has no length before it is read")
        return self.batches_per_epoch

    # ---- the checkpoint ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Every process's next window (a collective: Accelerate's save_state calls it on every process)."""
        gathered = self.gather_positions(self.next_window) if self.gather_positions else [self.next_window]
        return {"next_window": gathered, "num_processes": self.num_processes, **self.position_fields}

    def load_state_dict(self, state: dict) -> None:
        """This process's saved window, once the checkpoint is known to come from as many processes and the same
        ``position_fields`` (a checkpoint older than these records only its windows, one a process)."""
        windows = state["next_window"]
        saved = state.get("num_processes", len(windows))
        over = "or start the run over without --resume_from_checkpoint"
        if saved != self.num_processes:
            raise ConfigError(
                f"the checkpoint's stream position was saved by {saved} processes but this run has "
                f"{self.num_processes}, whose shares of the stream differ; resume with {saved} processes "
                f"(accelerate launch --num_processes {saved}), {over}"
            )
        for field, value in self.position_fields.items():
            if field in state and state[field] != value:
                raise ConfigError(
                    f"the checkpoint's stream position was saved with {field} {state[field]} but this run has "
                    f"{value}; resume with --{field} {state[field]}, {over}"
                )
        self.resume_window = windows[self.process_index]

    def _start(self, epoch: int, first_batch: int) -> StreamPosition:
        """Where to open the stream to reach batch ``first_batch`` of ``epoch``: the window the checkpoint saved when
        it is of that batch, else the epoch's start (the batches before are then read, not decoded)."""
        saved = self.resume_window
        if first_batch and saved and saved["epoch"] == epoch and saved["batch"] == first_batch:
            return StreamPosition(saved["cycle"], saved["piece"], saved["offset"], saved["position"])
        return StreamPosition()

    # ---- the batches ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first_batch = self.epoch, self.skip_batches
        self.epoch, self.skip_batches = epoch + 1, 0
        start = self._start(epoch, first_batch)
        dataset = self.make_batches(epoch=epoch, first_batch=first_batch, start=start)
        # A new DataLoader each epoch: workers copy the dataset when they start, so persistent workers would keep
        # the first epoch's order.
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory)
        self.gradient_state = GradientState()
        self.begin()
        self.remainder = -1  # padding is marked by label -1, not by a remainder for gather_for_metrics to cut
        try:
            if self.batches_per_epoch is not None:
                yield from self._training(loader, epoch, first_batch)
            else:
                yield from self._evaluation(loader)
        finally:
            self.end()

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _training(self, loader: DataLoader, epoch: int, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, following in loader:
            batch += 1
            self.end_of_dataloader = batch == self.batches_per_epoch
            self.next_window = {"epoch": epoch, "batch": batch, **following}
            yield self._to_device(images, labels)

    def _evaluation(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches, finished = iter(loader), False
        while True:
            batch = None if finished else next(batches, None)
            finished = batch is None
            has_more = self.any_process_has_more(batch is not None) if self.any_process_has_more else batch is not None
            if not has_more:
                return
            images, labels = batch[:2] if batch is not None else self._empty()
            yield self._to_device(*self._pad(images, labels))

    def _empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.image_size
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)

    def _pad(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        missing = self.batch_size - len(labels)
        if missing <= 0:
            return images, labels
        if images.shape[0] == 0:
            images = self._empty()[0]
        filler = torch.zeros(missing, *images.shape[1:], dtype=images.dtype)
        return torch.cat([images, filler]), torch.cat([labels, torch.full((missing,), -1, dtype=torch.int64)])

    def skip_first_batches(self, num_batches: int) -> StreamLoader:
        """This loader, whose next iteration starts at batch ``num_batches`` (not a copy, as Accelerate's loaders
        give: the position a checkpoint saves is this object's)."""
        self.skip_batches = num_batches
        return self
