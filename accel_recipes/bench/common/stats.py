"""The statistics of both benchmarks: the median, the min-max spread and the quartiles of measurements.

Every function keeps the finite numbers among its values and drops the rest (a run that recorded nothing, a NaN):
a missing measurement is left out, never counted as zero. When nothing is left the result is None. The middle of
``quartiles`` is ``median_of``, and so is the median of ``spread``: one median throughout.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

Quartiles = tuple[float, float, float]  # (25th percentile, median, 75th percentile)


def finite(values: Iterable[float | None]) -> list[float]:
    """The finite values, as floats, in their order."""
    return [float(value) for value in values if value is not None and math.isfinite(value)]


@dataclass
class Spread:
    min: float
    median: float
    max: float


def spread(values: Iterable[float | None]) -> Spread | None:
    """Min, median and max of the finite values."""
    kept = finite(values)
    if not kept:
        return None
    return Spread(min(kept), statistics.median(kept), max(kept))


def median_of(values: Iterable[float | None]) -> float | None:
    """The median of the finite values (the mean of the middle two for an even count)."""
    kept = finite(values)
    return statistics.median(kept) if kept else None


def quartiles(values: Iterable[float | None]) -> Quartiles | None:
    """(25th percentile, median, 75th percentile) of the finite values, interpolated between them (the
    ``inclusive`` method: the 0th and 100th percentiles are the min and the max); all three the value itself for a
    single value."""
    kept = finite(values)
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0], kept[0], kept[0]
    low, middle, high = statistics.quantiles(kept, n=4, method="inclusive")
    return low, middle, high
