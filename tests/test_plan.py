"""The update plan: updates per epoch, accumulation windows and each micro-batch's loss weight. The weights'
effect on training is tested through the engine's own step in tests/engine/test_step.py."""

from accel_recipes.config import make_args
from accel_recipes.plan import TrainingPlan, accumulation_weight


def test_plan_counts_updates_and_windows():
    args = make_args({"gradient_accumulation_steps": 4, "num_train_epochs": 3, "per_device_train_batch_size": 8})
    plan = TrainingPlan.build(args.training, micro_batches_per_epoch=10, num_processes=2)
    assert plan.updates_per_epoch == 3
    assert plan.total_updates == 9
    assert plan.global_batch_size == 64
    assert [plan.window_length(i, 4) for i in range(10)] == [4, 4, 4, 4, 4, 4, 4, 4, 2, 2]


def test_each_micro_batch_is_weighted_k_over_its_window_length():
    """Accelerate divides by k afterwards, so a micro-batch's share of its window is 1 / window length."""
    plan = TrainingPlan.build(make_args({"gradient_accumulation_steps": 4}).training, 10, num_processes=1)
    assert [accumulation_weight(plan, i, 4) for i in range(10)] == [1.0] * 8 + [2.0, 2.0]
