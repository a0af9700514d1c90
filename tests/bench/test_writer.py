"""The report writer both benchmarks use: atomic files, CSV cells, JSON key order, figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from accel_recipes.bench.common.writer import fact_lines, save_figure, write_csv, write_json, write_text


def test_files_are_written_whole_with_nothing_left_beside_them(tmp_path):
    out = tmp_path / "report"
    assert write_text(out / "a.md", "# title\n") == out / "a.md"  # the folder is made
    write_text(out / "a.md", "# again\n")
    assert (out / "a.md").read_text() == "# again\n"
    assert [path.name for path in out.iterdir()] == ["a.md"]


def test_csv_has_exactly_the_columns_and_none_as_an_empty_cell(tmp_path):
    rows = [{"arm": "baseline", "speedup": 1.0, "extra": "dropped?"}, {"arm": "ga", "speedup": None, "extra": 0}]
    path = write_csv(tmp_path / "t.csv", rows, ["arm", "speedup"])
    with path.open() as handle:
        assert list(csv.reader(handle)) == [["arm", "speedup"], ["baseline", "1.0"], ["ga", ""]]


def test_json_keeps_or_sorts_its_keys_and_writes_paths_as_text(tmp_path):
    data = {"b": 1, "a": {"path": Path("x/y")}}
    kept = write_json(tmp_path / "kept.json", data).read_text()
    assert list(json.loads(kept)) == ["b", "a"] and json.loads(kept)["a"]["path"] == "x/y"
    assert kept.startswith('{\n  "b": 1,') and kept.endswith("}\n")
    assert list(json.loads(write_json(tmp_path / "sorted.json", data, sort_keys=True).read_text())) == ["a", "b"]


def test_figures_are_saved_in_their_suffixs_format_and_closed(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    path = save_figure(figure, tmp_path / "speedup.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(figure.number)
    assert [entry.name for entry in tmp_path.iterdir()] == ["speedup.png"]


def test_setup_facts_as_a_list():
    facts = {"command": "python x.py", "date": "today", "device": "cpu"}
    assert fact_lines(facts) == ["- command: python x.py", "- date: today", "- device: cpu"]
    assert fact_lines(facts, skip=["command"]) == ["- date: today", "- device: cpu"]
