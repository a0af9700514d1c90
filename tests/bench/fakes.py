"""Fake runs and arms shared by the ablation's tests."""

from __future__ import annotations

from pathlib import Path

from accel_recipes.bench.ablate.arms import ArmContext, parse_arms
from accel_recipes.bench.ablate.summary import RunRecord, summarize_all
from accel_recipes.bench.common.target import Target

CONTEXT = ArmContext(effective_batch=32, ga_steps=2, amp_dtype="bf16")


def fake_record(arm: str, repeat: int, images_per_second: float, tmp_path: Path, **extra) -> RunRecord:
    results = {
        "steady_samples_per_second": images_per_second,
        "train_runtime": 1000 / images_per_second,
        "epoch": 2.0,
        "eval_accuracy": 0.8 + 0.01 * repeat,
        "eval_f1": 0.79,
        "test_accuracy": 0.78,
        "test_f1": 0.77,
        "peak_memory_mb": 1000.0,
        "skipped_updates": 0,
        "data_wait_fraction": 0.1,
        "num_processes": 1,
        "per_device_train_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "global_batch_size": 32,
        "mixed_precision": "no",
        **extra,
    }
    metrics = [
        {"step": 1, "epoch": 0.5, "loss": 2.0, "train_runtime": 1.0},
        {"step": 2, "epoch": 1.0, "loss": 1.5, "train_runtime": 2.0},
        {"step": 2, "epoch": 1.0, "eval_loss": 1.6, "eval_accuracy": 0.7, "train_runtime": 2.0},
        {"step": 4, "epoch": 2.0, "eval_loss": 1.2, "eval_accuracy": 0.85, "train_runtime": 4.0},
        {"step": 4, "final": True, "eval_accuracy": 0.85},
    ]
    return RunRecord(arm, repeat, tmp_path / arm / f"run-{repeat}", 0, 30.0, results, metrics)


def fake_rows(tmp_path: Path) -> tuple[list, list[RunRecord]]:
    arms = parse_arms("baseline,amp,ga", CONTEXT)
    records = [
        fake_record("baseline", 1, 90.0, tmp_path),
        fake_record("baseline", 2, 110.0, tmp_path),
        fake_record("baseline", 3, 100.0, tmp_path),
        fake_record("amp", 1, 150.0, tmp_path, mixed_precision="bf16"),
        fake_record("amp", 2, 170.0, tmp_path, mixed_precision="bf16"),
        RunRecord("ga", 1, tmp_path / "ga" / "run-1", 1, 5.0, error="out of memory"),
    ]
    bounds = {"baseline": 200.0, "amp": 400.0}
    return summarize_all(arms, records, bounds, Target(0.8)), records
