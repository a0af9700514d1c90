"""The statistics both benchmarks share: medians, min-max spreads and quartiles."""

from __future__ import annotations

import math

import pytest

from accel_recipes.bench.common.stats import finite, median_of, quartiles, spread


def test_spread_ignores_missing_and_non_finite_values():
    found = spread([3.0, None, 1.0, math.nan, 2.0])
    assert (found.min, found.median, found.max) == (1.0, 2.0, 3.0)
    assert spread([4.0, 2.0]).median == 3.0
    assert spread([None]) is None


def test_quartiles_of_one_and_of_several_values():
    assert quartiles([3.0]) == (3.0, 3.0, 3.0)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)


def test_finite_keeps_the_numbers_in_order_as_floats():
    assert finite([1, None, math.nan, math.inf, -math.inf, 2.5, 0]) == [1.0, 2.5, 0.0]
    assert all(isinstance(value, float) for value in finite([1, 2]))


@pytest.mark.parametrize(
    ("values", "median"),
    [([3.0, 1.0, 2.0], 2.0), ([4.0, 1.0, 3.0, 2.0], 2.5), ([7], 7.0), ([None, 5.0, math.nan, 1.0], 3.0)],
)
def test_median_of_known_lists(values, median):
    assert median_of(values) == median


def test_nothing_finite_gives_none():
    for empty in ([], [None], [math.nan, math.inf]):
        assert median_of(empty) is None and quartiles(empty) is None and spread(empty) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], (1.75, 2.5, 3.25)),  # interpolated between the values (the inclusive method)
        ([10.0, 0.0], (2.5, 5.0, 7.5)),  # order does not matter
        ([5.0, None, math.nan, 1.0, 3.0], (2.0, 3.0, 4.0)),  # missing and non-finite values left out
        ([2.0, 2.0, 2.0], (2.0, 2.0, 2.0)),
    ],
)
def test_quartiles_of_known_lists(values, expected):
    assert quartiles(values) == expected


@pytest.mark.parametrize(
    "values", [[0.1, 0.7], [0.3, 0.1, 0.2, 0.9], [1e-3, 5.0, 2.2, 7.1, 0.4, 3.3], [617.5, 855.0, 760.0], [1.0]]
)
def test_one_median_throughout(values):
    """The ablation's spreads and the datapath benchmark's quartiles agree on the median, to the last bit."""
    low, middle, high = quartiles(values)
    found = spread(values)
    assert middle == median_of(values) == found.median
    assert found.min <= low <= middle <= high <= found.max
