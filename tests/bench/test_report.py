"""The ablation's report files, from fake results."""

from __future__ import annotations

import csv
import json

from accel_recipes.bench.ablate.arms import parse_arms
from accel_recipes.bench.ablate.bound import plan_bounds, summarize_bounds
from accel_recipes.bench.ablate.report import TABLE, Report, markdown_table, write_report
from accel_recipes.bench.ablate.summary import COLUMNS
from accel_recipes.config import make_args

from .fakes import CONTEXT, fake_record, fake_rows


def test_report_files_from_fake_results(tmp_path):
    rows, records = fake_rows(tmp_path)
    report = Report(
        title="Ablation: fake",
        setup={"command": "python recipes/ablate.py --arms baseline,amp,ga", "device": "cpu"},
        rows=rows,
        held_fixed=["the effective batch"],
        notes=["a note"],
        arms=[{"name": name} for name in ("baseline", "amp", "ga")],
        bounds=summarize_bounds(
            plan_bounds(parse_arms("baseline", CONTEXT), lambda arm: make_args(arm.overrides)),
            [fake_record("bound-1", 1, 190.0, tmp_path), fake_record("bound-1", 2, 200.0, tmp_path)],
            lambda arm: make_args(arm.overrides),
        ),
        records=records,
    )
    paths = write_report(report, tmp_path / "out")
    assert [path.name for path in paths] == [
        "ablation.md", "ablation.csv", "ablation.json", "learning_curves.png", "speedup.png"
    ]  # fmt: skip
    assert all(path.stat().st_size > 0 for path in paths)
    text = paths[0].read_text()
    assert markdown_table(rows) in text and "| `baseline` |" in text and "**1.00** (0.90-1.10)" in text
    assert "`ga` repeat 1 (exit 1): out of memory" in text and "python recipes/ablate.py" in text
    assert "| `bound-1` | `baseline` | no | 32 x 1 | 2/2 | 190.0 / 195.0 / 200.0 |" in text
    header = text.split("## Results")[1].split("\n| ")[1]
    assert all(name in header for name, _ in TABLE)
    with paths[1].open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(COLUMNS) and float(table[0]["speedup"]) == 1.0 and table[2]["speedup"] == ""
    data = json.loads(paths[2].read_text())
    assert len(data["runs"]) == 6 and data["table"][1]["arm"] == "amp"
