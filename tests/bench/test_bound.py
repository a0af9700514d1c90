"""The compute-only bound: one bound arm per distinct compute, and its medians."""

from __future__ import annotations

from accel_recipes.bench.ablate.arms import parse_arms
from accel_recipes.bench.ablate.bound import BOUND_FIELDS, bound_key, plan_bounds, summarize_bounds
from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.config import make_args

from .fakes import CONTEXT, fake_record


def test_arms_with_the_same_compute_share_a_bound():
    arms = {arm.name: make_args(arm.overrides) for arm in parse_arms("baseline,pin,amp,ga", CONTEXT)}
    assert bound_key(arms["baseline"]) == bound_key(arms["pin"])
    assert len({bound_key(arms[name]) for name in ("baseline", "amp", "ga")}) == 3


def test_one_bound_arm_per_distinct_compute_on_synthetic_data():
    arms = parse_arms(
        "baseline,pin,amp,resident=amp+data_pipeline:resident,workers=amp+dataloader_num_workers:0", CONTEXT
    )
    plan = plan_bounds(arms, lambda arm: make_args(arm.overrides))
    assert [bound.name for bound in plan.arms] == ["bound-1", "bound-2"]
    assert plan.of == {
        "baseline": "bound-1", "pin": "bound-1", "amp": "bound-2", "resident": "bound-2", "workers": "bound-2"
    }  # fmt: skip
    fp32, bf16 = (bound.overrides for bound in plan.arms)
    assert fp32["data_pipeline"] == bf16["data_pipeline"] == "synthetic"
    assert fp32["mixed_precision"] == "no" and bf16["mixed_precision"] == "bf16"
    assert {fp32["per_device_train_batch_size"], bf16["per_device_train_batch_size"]} == {32}


def test_bound_summaries_are_the_bound_arms_medians(tmp_path):
    arms = parse_arms("baseline,amp", CONTEXT)
    plan = plan_bounds(arms, lambda arm: make_args(arm.overrides))
    records = [
        fake_record("bound-1", 1, 300.0, tmp_path),
        fake_record("bound-1", 2, 200.0, tmp_path),
        fake_record("bound-1", 3, 250.0, tmp_path),
        RunRecord("bound-2", 1, tmp_path / "bound-2" / "run-1", 1, 5.0, error="RuntimeError: boom"),
    ]
    first, second = summarize_bounds(plan, records, lambda arm: make_args(arm.overrides))
    assert first["arms"] == ["baseline"] and first["runs_ok"] == "3/3"
    assert (first["images_per_second_min"], first["images_per_second"], first["images_per_second_max"]) == (
        200.0, 250.0, 300.0
    )  # fmt: skip
    assert set(first["settings"]) == set(BOUND_FIELDS) and first["settings"]["mixed_precision"] == "no"
    assert second["images_per_second"] is None and second["error"] == "RuntimeError: boom"
