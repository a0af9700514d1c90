"""Data paths measured side by side in one process: one model and optimizer, fed in turn by each source.

The sources are the compute-only bound (``synthetic``: one batch of training images held on the device), the
resident path, and the stream path at chosen worker counts (``stream:2``). The ablation runner launches a run per
arm, so on a shared machine each arm meets the host's load at a different moment. Here the sources take turns in
windows of a few seconds, each round in a rotated order, and every ratio is the median of per-round ratios: two
sources in one round ran under nearly the same load, so the load cancels out of their ratio.

Every source keeps its iterator from round to round. While the other sources run, a streaming loader's workers
fill their queue; the first ``settle_steps`` of each window spend those queued batches, and only the steps after
them are timed. An epoch boundary inside a timed window is timed too (a new shuffle, workers restarted unless
persistent): the real pipeline pays for it as well.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from accel_recipes.bench.common.order import rotation
from accel_recipes.bench.common.stats import Quartiles, median_of, quartiles
from accel_recipes.errors import ConfigError

BOUND = "synthetic"
RESIDENT = "resident"
DEFAULT_PREFETCH_FACTOR = 2  # torch's, when a DataLoader with workers is given none
_STREAM = re.compile(r"stream(?::(\d+))?")


@dataclass(frozen=True)
class Source:
    """One way to feed the model: ``pipeline`` is synthetic, resident or stream (with ``workers`` processes)."""

    name: str
    pipeline: str
    workers: int = 0


def parse_sources(text: str, default_workers: int) -> list[Source]:
    """``synthetic,resident,stream:0,stream:2`` -> sources; a bare ``stream`` uses ``default_workers``."""
    sources: list[Source] = []
    for token in (part.strip() for part in text.split(",")):
        if not token:
            continue
        if token in (BOUND, RESIDENT):
            source = Source(token, token)
        elif match := _STREAM.fullmatch(token):
            workers = int(match.group(1)) if match.group(1) is not None else default_workers
            source = Source(f"stream:{workers}", "stream", workers)
        else:
            raise ConfigError(
                f"unknown source {token!r} in --sources; use synthetic, resident, stream (the recipe's "
                "dataloader_num_workers) or stream:N (N loader workers), comma-separated"
            )
        if any(known.name == source.name for known in sources):
            raise ConfigError(f"source {source.name!r} is listed twice in --sources {text!r}")
        sources.append(source)
    if len(sources) < 2:
        raise ConfigError(f"--sources {text!r} names {len(sources)} source(s); a comparison needs at least two")
    return sources


def check_settle_steps(settle_steps: int, sources: list[Source], prefetch_factor: int | None) -> None:
    """The untimed steps of a window must at least spend what a streaming loader queued while it waited."""
    depth = max((source.workers for source in sources), default=0) * (prefetch_factor or DEFAULT_PREFETCH_FACTOR)
    if settle_steps < depth:
        raise ConfigError(
            f"--settle_steps {settle_steps} is less than the {depth} batches a streaming loader queues while the "
            f"other sources run (workers x prefetch factor); pass --settle_steps {depth} or more"
        )


class Feed:
    """Endless batches from one loader: at the end of an epoch it starts the next (``set_epoch``), as training
    would. The iterator lives across windows, so a streaming loader's workers are not restarted per window."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.epoch = 0
        self._batches: Iterator | None = None

    def next(self) -> Any:
        for _ in range(2):  # a fresh epoch with no batch at all means an empty loader
            if self._batches is None:
                self.loader.set_epoch(self.epoch)
                self._batches = iter(self.loader)
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            self.epoch += 1
            self._batches = None
        raise ConfigError("a training loader yielded no batch in a whole epoch; lower per_device_train_batch_size")


@dataclass
class Window:
    """One timed window of one source: ``images`` trained in ``seconds``, ``data_seconds`` of them spent
    fetching batches (waiting for workers, or augmenting on the device)."""

    round: int
    source: str
    position: int
    images: int
    seconds: float
    data_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second}


StepFunction = Callable[[Any], int]  # trains one batch, returns the images it held (over all processes)


def measure(
    feeds: dict[str, Feed],
    step: StepFunction,
    clock: Callable[[], float],
    rounds: int,
    window_steps: int,
    settle_steps: int,
    on_window: Callable[[Window], None] | None = None,
    fetch_clock: Callable[[], float] = time.perf_counter,
) -> list[Window]:
    """``rounds`` timed rounds after one untimed warm-up round; in each, every source trains ``settle_steps``
    untimed then ``window_steps`` timed batches. Round r starts further along the list of sources (rotated).

    ``clock`` (which may wait for the device) is read at a window's edges only; the time spent fetching batches is
    read on the host with ``fetch_clock``, as the training loop does, so the device's queue is never drained
    inside a window."""
    names = list(feeds)
    windows = []
    for round_index in range(rounds + 1):  # round 0: warm-up (compilation, caches, first workers), not kept
        start = rotation(round_index, rounds, len(names)) if round_index else 0
        for position, name in enumerate(names[start:] + names[:start]):
            feed = feeds[name]
            for _ in range(settle_steps):
                step(feed.next())
            images, data_seconds = 0, 0.0
            started = clock()
            for _ in range(window_steps):
                fetch_started = fetch_clock()
                batch = feed.next()
                data_seconds += fetch_clock() - fetch_started
                images += step(batch)
            window = Window(round_index, name, position, images, clock() - started, data_seconds)
            if round_index:
                windows.append(window)
                if on_window is not None:
                    on_window(window)
    return windows


# ---- the summary ------------------------------------------------------------------------------------------------


def _per_round(windows: list[Window]) -> dict[str, dict[int, Window]]:
    table: dict[str, dict[int, Window]] = {}
    for window in windows:
        table.setdefault(window.source, {})[window.round] = window
    return table


def _ratios(numerator: dict[int, Window], denominator: dict[int, Window]) -> list[float]:
    """Per-round throughput ratios, over the rounds where both ran and the denominator is positive."""
    rounds = sorted(set(numerator) & set(denominator))
    return [
        numerator[r].images_per_second / denominator[r].images_per_second
        for r in rounds
        if denominator[r].images_per_second > 0
    ]


def _best_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stream source the resident path beats by the least (median per-round ratio), the conservative pick;
    without a resident source, the highest median fraction of the bound; without a bound, the most images/s."""
    if streams and all(row.get("resident_over_this") for row in streams):
        return min(streams, key=lambda row: row["resident_over_this"][1])
    if streams and all(row.get("of_bound") for row in streams):
        return max(streams, key=lambda row: row["of_bound"][1])
    return max(streams, key=lambda row: row["images_per_second"][1], default=None)


def summarize(windows: list[Window], sources: list[Source]) -> dict[str, Any]:
    """Per source: images/s and time fetching data (quartiles over rounds), the fraction of the bound (median of
    per-round ratios); the best stream (see ``_best_stream``) and the resident path over it, per round."""
    by_source = _per_round(windows)
    rows = []
    for source in sources:
        runs = by_source.get(source.name, {})
        if not runs:
            continue
        speeds = [window.images_per_second for window in runs.values()]
        fetching = [window.data_seconds / window.seconds for window in runs.values() if window.seconds > 0]
        row: dict[str, Any] = {
            **asdict(source),
            "rounds": len(runs),
            "images_per_second": quartiles(speeds),
            "data_fraction": median_of(fetching),
        }
        if source.name != BOUND and BOUND in by_source:
            ratios = _ratios(runs, by_source[BOUND])
            row["of_bound"] = quartiles(ratios)
        if source.pipeline == "stream" and RESIDENT in by_source:
            ratios = _ratios(by_source[RESIDENT], runs)
            row["resident_over_this"] = quartiles(ratios)
        rows.append(row)
    streams = [row for row in rows if row["pipeline"] == "stream"]
    best = _best_stream(streams)
    summary: dict[str, Any] = {"sources": rows, "best_stream": best["name"] if best else None}
    if best is not None and best.get("resident_over_this"):
        summary["resident_over_best_stream"] = best["resident_over_this"]
    resident = next((row for row in rows if row["name"] == RESIDENT), None)
    if resident is not None and resident.get("of_bound"):
        summary["resident_of_bound"] = resident["of_bound"]
    return summary


def _span(values: Quartiles | None, form: str) -> str:
    if not values:
        return "-"
    low, middle, high = values
    return f"{form.format(middle)} ({form.format(low)}-{form.format(high)})"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a table: medians with their interquartile range over rounds in brackets."""
    lines = [
        "| source | rounds | images/s | of the bound | fetching data | resident / this |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["sources"]:
        name = f"`{row['name']}`" + (" (best stream)" if row["name"] == summary["best_stream"] else "")
        fetching = f"{row['data_fraction']:.1%}" if row["data_fraction"] is not None else "-"
        lines.append(
            f"| {name} | {row['rounds']} | {_span(row['images_per_second'], '{:,.0f}')} | "
            f"{_span(row.get('of_bound'), '{:.1%}')} | {fetching} | {_span(row.get('resident_over_this'), '{:.3f}x')} |"
        )
    return "\n".join(lines)
