"""The rotated order of interleaved repeats (and rounds)."""

from __future__ import annotations

from accel_recipes.bench.common.order import rotation


def test_each_repeat_starts_further_along_so_recurring_load_moves_between_arms():
    assert [rotation(repeat, 1, 5) for repeat in (1,)] == [0]
    assert [rotation(repeat, 4, 8) for repeat in (1, 2, 3, 4)] == [0, 2, 4, 6]
    assert [rotation(repeat, 6, 11) for repeat in range(1, 7)] == [0, 2, 4, 6, 7, 9]  # spread, never repeated
    assert [rotation(repeat, 3, 2) for repeat in (1, 2, 3)] == [0, 1, 1]  # more repeats than arms: still in range
    assert rotation(1, 2, 0) == 0
