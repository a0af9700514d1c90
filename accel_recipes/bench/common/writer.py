"""The report writer of both benchmarks. Every file goes through ``accel_recipes.io``'s atomic writes: written
beside its target and renamed into place, so an interrupted benchmark never leaves half a report behind."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from accel_recipes.io import atomic_file, write_json_atomic, write_text_atomic


def fact_lines(facts: dict[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """A report's setup as a Markdown list, ``- key: value``, leaving out the keys in ``skip``."""
    left_out = set(skip)
    return [f"- {key}: {value}" for key, value in facts.items() if key not in left_out]


def write_text(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


def write_json(path: Path, data: Any, sort_keys: bool = False) -> Path:
    """Indented JSON; values JSON has no type for (paths) as their text."""
    write_json_atomic(path, data, sort_keys=sort_keys, default=str)
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> Path:
    """One line per row, exactly ``columns``; None as an empty cell."""
    with atomic_file(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in columns})
    return path


def save_figure(figure: Any, path: Path, dpi: int = 110) -> Path:
    """A matplotlib figure, laid out tightly, in the format of ``path``'s suffix; the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        figure.tight_layout()
        with atomic_file(path) as temporary:
            figure.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
    return path
