"""The ablation's report: ``ablation.md`` (the paper's table, done right), ``ablation.csv`` and ``ablation.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.plots import plot_learning_curves, plot_speedup
from accel_recipes.bench.ablate.summary import COLUMNS, RunRecord
from accel_recipes.bench.common.writer import fact_lines, write_csv, write_json, write_text

# (header, how a row's values print) for ablation.md; every column of COLUMNS appears in one of them.
TABLE = (
    ("arm", lambda r: f"`{r['arm']}`"),
    ("switches", lambda r: r["switches"]),
    ("micro x GA (x processes) = batch", lambda r: _batch(r)),
    ("precision", lambda r: r["mixed_precision"] or "-"),
    ("pinned", lambda r: "yes" if r["pin_memory"] else "no"),
    ("runs", lambda r: r["runs_ok"]),
    ("val acc", lambda r: _number(r["eval_accuracy"], "{:.4f}")),
    ("val F1", lambda r: _number(r["eval_f1"], "{:.4f}")),
    ("test acc", lambda r: _number(r["test_accuracy"], "{:.4f}")),
    ("test F1", lambda r: _number(r["test_f1"], "{:.4f}")),
    ("train s", lambda r: _number(r["train_runtime_s"], "{:.1f}")),
    ("s/epoch", lambda r: _number(r["seconds_per_epoch"], "{:.1f}")),
    ("images/s min / median / max", lambda r: _spread(r, "images_per_second", "{:,.1f}")),
    ("speed-up (min-max)", lambda r: _speedup(r)),
    ("bound images/s", lambda r: _number(r["bound_images_per_second"], "{:,.1f}")),
    ("of bound", lambda r: _number(r["fraction_of_bound"], "{:.0%}")),
    ("peak MB", lambda r: _number(r["peak_memory_mb"], "{:,.0f}")),
    ("skipped steps", lambda r: _number(r["skipped_updates"], "{:g}")),
    ("data wait", lambda r: _number(r["data_wait_fraction"], "{:.1%}")),
    ("time to target", lambda r: _target(r)),
    ("ended at target", lambda r: r["final_reached_target"] or "-"),
)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number(value: Any, form: str) -> str:
    return form.format(value) if _finite(value) else "-"


def _batch(row: dict[str, Any]) -> str:
    processes = f" x {row['processes']}" if row["processes"] and row["processes"] > 1 else ""
    return f"{row['micro_batch']} x {row['gradient_accumulation_steps']}{processes} = {row['effective_batch']}"


def _spread(row: dict[str, Any], stem: str, form: str) -> str:
    values = [row[f"{stem}_{which}"] for which in ("min", "median", "max")]
    return " / ".join(_number(value, form) for value in values) if _finite(values[1]) else "-"


def _speedup(row: dict[str, Any]) -> str:
    if not _finite(row["speedup"]):
        return "-"
    return f"**{row['speedup']:.2f}** ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"


def _target(row: dict[str, Any]) -> str:
    if row["target_reached"] is None:
        return "-"
    if not _finite(row["time_to_target_s"]):
        return f"not reached ({row['target_reached']})"
    return f"{row['time_to_target_s']:.1f} s ({row['target_reached']})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(header for header, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    lines += ["| " + " | ".join(str(show(row)) for _, show in TABLE) + " |" for row in rows]
    return "\n".join(lines)


def bounds_table(bounds: list[dict[str, Any]]) -> list[str]:
    """One line per bound arm: the arms it bounds, what it holds, its images/s over the repeats."""
    lines = ["| bound arm | bounds the arms | precision | micro x GA | runs | images/s min / median / max |"]
    lines.append("|---|---|---|---|---|---|")
    for bound in bounds:
        settings = bound["settings"]
        values = [bound[f"images_per_second{which}"] for which in ("_min", "", "_max")]
        shown = " / ".join(_number(v, "{:,.1f}") for v in values) if _finite(values[1]) else f"- ({bound['error']})"
        lines.append(
            f"| `{bound['name']}` | {', '.join(f'`{arm}`' for arm in bound['arms'])} | "
            f"{settings['mixed_precision'] or '-'} | {settings['per_device_train_batch_size']} x "
            f"{settings['gradient_accumulation_steps']} | {bound['runs_ok']} | {shown} |"
        )
    return lines


def markdown(
    title: str,
    setup: dict[str, Any],
    rows: list[dict[str, Any]],
    held_fixed: list[str],
    notes: list[str],
    records: list[RunRecord],
    bounds: list[dict[str, Any]],
) -> str:
    failed = [record for record in records if not record.ok]
    parts = [
        f"# {title}",
        "",
        f"    {setup['command']}",
        "",
        *fact_lines(setup, skip=["command"]),
        "",
        "## Results",
        "",
        "Medians over the repeats that finished; images/s is steady-state training throughput (warm-up updates, "
        "evaluation and checkpoints excluded, device synchronised), summed over processes. Speed-up is an arm's "
        "median images/s over the baseline's (in brackets: its slowest and fastest repeat over that median). "
        "Bound: the median images/s of the arm's bound arm (below), the same recipe and compute trained on one "
        "batch of its training images held on the device (`data_pipeline: synthetic`), launched and measured like "
        "every arm in the same interleaved repeats; *of bound* is the arm's median images/s over it.",
        "",
        markdown_table(rows),
        "",
    ]
    if bounds:
        parts += ["## Compute-only bounds", "", *bounds_table(bounds), ""]
    parts += [
        "## What each arm holds fixed, and why",
        "",
        *[f"- {line}" for line in held_fixed],
    ]
    if notes:
        parts += ["", "## Notes", "", *[f"- {line}" for line in notes]]
    if failed:
        parts += ["", "## Failed runs", ""]
        parts += [
            f"- `{r.arm}` repeat {r.repeat} (exit {r.returncode}): {r.error} ({r.output_dir}/launch.log)"
            for r in failed
        ]
    parts += [
        "",
        "Files: ablation.csv, ablation.json (every run's all_results.json), learning_curves.png, speedup.png.",
        "",
    ]
    return "\n".join(parts)


@dataclass
class Report:
    """Everything the report files hold."""

    title: str
    setup: dict[str, Any]  # command, date, device, software...
    rows: list[dict[str, Any]]  # summary rows, keys COLUMNS
    held_fixed: list[str]
    notes: list[str]
    arms: list[dict[str, Any]]  # name, switches, overrides
    bounds: list[dict[str, Any]]
    records: list[RunRecord]


def write_report(report: Report, output_dir: Path) -> list[Path]:
    """ablation.md, ablation.csv, ablation.json, learning_curves.png and speedup.png into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / name for name in ("ablation.md", "ablation.csv", "ablation.json")]
    text = markdown(
        report.title, report.setup, report.rows, report.held_fixed, report.notes, report.records, report.bounds
    )
    write_text(paths[0], text)
    write_csv(paths[1], report.rows, COLUMNS)
    data = {
        "setup": report.setup,
        "held_fixed": report.held_fixed,
        "notes": report.notes,
        "arms": report.arms,
        "bounds": report.bounds,
        "table": report.rows,
        "runs": [record.to_json() for record in report.records],
    }
    write_json(paths[2], data)
    names = [arm["name"] for arm in report.arms]
    paths.append(plot_learning_curves(report.records, names, output_dir / "learning_curves.png"))
    paths.append(plot_speedup(report.rows, output_dir / "speedup.png"))
    return paths
