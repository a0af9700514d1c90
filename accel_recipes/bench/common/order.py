"""The order of interleaved measurements: each repeat (or round) of the same list starts further along it."""

from __future__ import annotations


def rotation(repeat: int, repeats: int, arms: int) -> int:
    """Where repeat ``repeat`` (1-based) starts in the list of arms: 0 for the first, then evenly further along.

    Load that comes and goes on a shared machine can recur at about the length of one repeat (every repeat is
    the same runs, so the same length). In a fixed order it would then fall on the same arm in every repeat and
    bias that arm's median; rotated, each arm runs at positions spread over the whole repeat."""
    return round((repeat - 1) * arms / repeats) % arms if arms else 0
