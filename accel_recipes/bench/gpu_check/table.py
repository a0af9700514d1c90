"""The GPU check's table: one row per check in the plan's order, headed by the setup, rewritten (atomically:
``common.writer``) before the first check and after every one, so a run cut off at any moment leaves every
finished row on disk and lists the checks it did not run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.bench.common.writer import fact_lines, write_json, write_text
from accel_recipes.bench.gpu_check.plan import Check
from accel_recipes.checkpoints import list_checkpoints
from accel_recipes.results import key

REPORT = "gpu_check.md"
RESULTS = "gpu_check.json"
COLUMNS = ("check", "recipe", "setting", "images/s", "peak memory (MB)", "outcome", "wall (s)")
NOT_RUN_YET = "not run yet"
STARTED = "started, not finished"


def outcome(check: Check, records: list[RunRecord]) -> str:
    """What the check showed beyond speed: accuracy, or that the sharded run resumed and exported."""
    last = records[-1]
    if not last.ok:
        return f"FAILED (exit {last.returncode}): {last.error}; see {last.output_dir / 'launch.log'}"
    results = last.results or {}
    if check.group == "accuracy":
        return f"test accuracy {results.get(key('test_accuracy'), float('nan')):.4f}"
    if len(records) > 1:
        resumed = "resumed from" in (last.output_dir / "launch.log").read_text()
        exported = (last.output_dir / "model" / "config.json").is_file() and any(
            (last.output_dir / "model").glob("*.safetensors")
        )
        saved = len(list_checkpoints(last.output_dir / "checkpoints"))
        return (
            f"{results.get(key('train_updates'))} updates, {saved} checkpoint(s), "
            f"resumed {'yes' if resumed else 'NO'}, exported {'yes' if exported else 'NO'}"
        )
    return "ok"


def row(check: Check, records: list[RunRecord], note: str | None = None) -> dict[str, Any]:
    """The check's row: its runs' speed, memory, outcome and time, or ``note`` in place of an outcome."""
    base = {"check": check.group, "recipe": check.recipe, "setting": check.setting}
    if note is not None:
        return {**base, "images/s": "", "peak memory (MB)": "", "outcome": note, "wall (s)": ""}
    results = records[-1].results or {}
    speed = results.get(key("steady_samples_per_second"))
    memory = results.get(key("peak_memory_mb"))
    return {
        **base,
        "images/s": f"{speed:,.1f}" if speed else "",
        "peak memory (MB)": f"{memory:,.0f}" if memory else "",
        "outcome": outcome(check, records),
        "wall (s)": f"{sum(record.wall_seconds for record in records):.0f}",
    }


def markdown(facts: dict[str, str], rows: list[dict[str, Any]]) -> str:
    lines = ["## GPU check", "", *fact_lines(facts), ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(entry[column]) for column in COLUMNS) + " |" for entry in rows]
    notes = [
        "images/s: steady training throughput after the warm-up updates (`steady_samples_per_second`); peak "
        "memory: the device's peak allocated memory over the run. Pretrained recipes start from random weights "
        "(the Hub is not reached); ViT-B/16 is built from its transformers config.",
    ]
    return "\n".join([*lines, "", *notes, ""])


class Table:
    """The rows of every planned check, on disk after each change: those known to be skipped say why from the
    start, the others read "not run yet" until their check starts and ends."""

    def __init__(self, output_dir: Path, checks: list[Check]) -> None:
        self.output_dir = output_dir
        self.rows = [row(check, [], NOT_RUN_YET if check.skip_reason is None else f"not run: {check.skip_reason}")
                     for check in checks]  # fmt: skip

    def status(self) -> str:
        started = sum(entry["outcome"] == STARTED for entry in self.rows)
        waiting = sum(entry["outcome"] == NOT_RUN_YET for entry in self.rows)
        if not started and not waiting:
            return "complete"
        return (
            f"incomplete: {started} check(s) started and not finished, {waiting} not run yet (cut off, or still "
            "running)"
        )

    def write(self, facts: dict[str, str]) -> str:
        """Both files, each replaced whole; returns the Markdown."""
        facts = {**facts, "status": self.status()}
        text = markdown(facts, self.rows)
        write_json(self.output_dir / RESULTS, {"setup": facts, "rows": self.rows})
        write_text(self.output_dir / REPORT, text)
        return text
