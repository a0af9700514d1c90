"""The side-by-side data path benchmark's parts: sources, settle steps, the endless feed, the timed rounds, the
summary's per-round ratios."""

from __future__ import annotations

import pytest

from accel_recipes.bench.datapath import (
    Feed,
    Source,
    Window,
    check_settle_steps,
    markdown_table,
    measure,
    parse_sources,
    summarize,
)
from accel_recipes.errors import ConfigError


def test_sources_parse_names_and_worker_counts():
    sources = parse_sources("synthetic, resident,stream:0,stream", default_workers=4)
    assert sources == [
        Source("synthetic", "synthetic"),
        Source("resident", "resident"),
        Source("stream:0", "stream", 0),
        Source("stream:4", "stream", 4),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("synthetic,streaming", "unknown source 'streaming'"),
        ("resident,stream:x", "unknown source 'stream:x'"),
        ("resident,stream:2,stream", "'stream:2' is listed twice"),
        ("resident", r"names 1 source\(s\)"),
        (" , ", r"names 0 source\(s\)"),
    ],
)
def test_bad_sources_are_refused_by_name(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_sources(text, default_workers=2)


def test_settle_steps_must_spend_the_deepest_loader_queue():
    sources = [Source("resident", "resident"), Source("stream:3", "stream", 3)]
    check_settle_steps(6, sources, prefetch_factor=None)  # 3 workers x torch's prefetch factor 2
    with pytest.raises(ConfigError, match="--settle_steps 5 is less than the 6 batches.*--settle_steps 6"):
        check_settle_steps(5, sources, prefetch_factor=None)
    with pytest.raises(ConfigError, match="--settle_steps 8 is less than the 12 batches"):
        check_settle_steps(8, sources, prefetch_factor=4)
    check_settle_steps(0, [Source("resident", "resident"), Source("stream:0", "stream", 0)], prefetch_factor=None)


class EpochLoader:
    """Batches ``epoch * 10 + i`` for i < size, recording every set_epoch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.epoch = None
        self.epochs_set: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __iter__(self):
        return iter([self.epoch * 10 + index for index in range(self.size)])


def test_feed_runs_epoch_after_epoch_and_keeps_its_place():
    loader = EpochLoader(3)
    feed = Feed(loader)
    assert [feed.next() for _ in range(7)] == [0, 1, 2, 10, 11, 12, 20]
    assert loader.epochs_set == [0, 1, 2]


def test_feed_of_an_empty_loader_says_so():
    with pytest.raises(ConfigError, match="no batch in a whole epoch"):
        Feed(EpochLoader(0)).next()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rounds_time_only_the_window_after_the_settle_steps_in_rotated_order():
    clock = FakeClock()
    seconds_per_batch = {"fast": 0.5, "slow": 2.0, "mid": 1.0}
    fetch_seconds = {"fast": 0.0, "slow": 0.25, "mid": 0.0}
    served = {name: 0 for name in seconds_per_batch}

    class TimedLoader:
        def __init__(self, name: str) -> None:
            self.name = name

        def set_epoch(self, epoch: int) -> None:
            pass

        def __iter__(self):
            while True:
                served[self.name] += 1
                clock.now += fetch_seconds[self.name]
                yield self.name

    def step(name: str) -> int:
        clock.now += seconds_per_batch[name]
        return 8

    feeds = {name: Feed(TimedLoader(name)) for name in ("fast", "slow", "mid")}
    windows = measure(feeds, step, clock, rounds=3, window_steps=4, settle_steps=2, fetch_clock=clock)

    assert len(windows) == 9 and {w.round for w in windows} == {1, 2, 3}  # the warm-up round is not kept
    assert served == {name: 4 * (2 + 4) for name in served}  # 3 rounds + warm-up, settle + window each
    orders = [[w.source for w in windows if w.round == r] for r in (1, 2, 3)]
    assert orders == [["fast", "slow", "mid"], ["slow", "mid", "fast"], ["mid", "fast", "slow"]]
    assert all(w.position == orders[w.round - 1].index(w.source) for w in windows)
    slow = next(w for w in windows if w.source == "slow")
    assert slow.images == 32 and slow.seconds == pytest.approx(4 * 2.25) and slow.data_seconds == pytest.approx(1.0)
    assert slow.images_per_second == pytest.approx(32 / 9)
    fast = next(w for w in windows if w.source == "fast")
    assert fast.images_per_second == pytest.approx(16.0) and fast.data_seconds == 0.0


def window(round_index: int, source: str, images_per_second: float, data_seconds: float = 0.0) -> Window:
    return Window(round_index, source, 0, int(images_per_second * 10), 10.0, data_seconds)


def test_ratios_are_medians_of_per_round_ratios_not_ratios_of_medians():
    sources = parse_sources("synthetic,resident,stream:1,stream:2", default_workers=0)
    # The host's load moves every source of a round together: round speeds x1.0, x0.5, x0.8.
    load = {1: 1.0, 2: 0.5, 3: 0.8}
    base = {"synthetic": 1000.0, "resident": 950.0, "stream:1": 700.0, "stream:2": 800.0}
    windows = [window(r, name, speed * factor, 1.0 if name == "stream:1" else 0.0) for r, factor in load.items()
               for name, speed in base.items()]  # fmt: skip
    # One round where stream:2 was lucky: it alone ran before the load came (it is not the median round).
    windows = [w for w in windows if not (w.round == 2 and w.source == "stream:2")] + [window(2, "stream:2", 800.0)]

    summary = summarize(windows, sources)
    rows = {row["name"]: row for row in summary["sources"]}
    assert rows["resident"]["of_bound"][1] == pytest.approx(0.95)
    assert rows["resident"]["images_per_second"] == pytest.approx((617.5, 760.0, 855.0))
    assert rows["stream:1"]["of_bound"] == pytest.approx((0.7, 0.7, 0.7))
    assert rows["stream:1"]["data_fraction"] == pytest.approx(0.1)
    assert summary["best_stream"] == "stream:2"
    per_round = sorted([950 / 800, 475 / 800, 950 / 800])
    assert summary["resident_over_best_stream"][1] == pytest.approx(per_round[1])
    assert summary["resident_of_bound"] == rows["resident"]["of_bound"]
    assert "of_bound" not in rows["synthetic"] and "resident_over_this" not in rows["resident"]

    table = markdown_table(summary)
    assert "| `stream:2` (best stream) | 3 |" in table
    assert "| `resident` | 3 | 760 (618-855) | 95.0% (95.0%-95.0%) | 0.0% | - |" in table


def test_summary_without_a_bound_or_a_resident_source_leaves_those_ratios_out():
    sources = parse_sources("stream:0,stream:2", default_workers=0)
    windows = [window(1, "stream:0", 500.0), window(1, "stream:2", 600.0)]
    summary = summarize(windows, sources)
    assert summary["best_stream"] == "stream:2"
    assert "resident_over_best_stream" not in summary and "resident_of_bound" not in summary
    assert all("of_bound" not in row and "resident_over_this" not in row for row in summary["sources"])
