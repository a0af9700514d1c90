"""Optimizers and schedules: decay only on weights, every implementation gives the same step, schedules count
optimizer updates."""

import copy

import pytest
import torch

from accel_recipes.config import make_args
from accel_recipes.optim import create_optimizer, create_scheduler


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_no_weight_decay_on_biases_and_norms(optim):
    optimizer = create_optimizer(make_args({"optim": optim, "weight_decay": 0.1}).training, tiny_model())
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim == 1 for p in plain["params"])


def kernel_flags(optimizer: torch.optim.Optimizer) -> tuple:
    group = optimizer.param_groups[0]
    return bool(group.get("foreach")), bool(group.get("fused"))


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("implementation", ["foreach", "fused", "auto"])
def test_every_implementation_takes_the_same_step(optim, implementation):
    """Each kernel against torch's one-parameter-at-a-time loop: the two really run different code (the flags torch
    dispatches on differ, or for auto, torch's own choice on this machine), and give the same weights."""
    model = tiny_model()
    inputs = torch.randn(16, 4)
    results, flags = [], []
    for choice in ("for_loop", implementation):
        copy_of_model = copy.deepcopy(model)
        args = make_args({"optim": optim, "optimizer_implementation": choice, "learning_rate": 0.01}).training
        optimizer = create_optimizer(args, copy_of_model)
        flags.append(kernel_flags(optimizer))
        for _ in range(3):
            copy_of_model(inputs).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        results.append(torch.cat([p.detach().flatten() for p in copy_of_model.parameters()]))
    expected = {"foreach": (True, False), "fused": (False, True)}
    assert flags[0] == (False, False)
    if implementation in expected:
        assert flags[1] == expected[implementation]
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def learning_rates(schedule: str, total: int = 100, **extra) -> list[float]:
    args = make_args({"lr_scheduler_type": schedule, "learning_rate": 1.0, **extra}).training
    optimizer = torch.optim.SGD(tiny_model().parameters(), lr=1.0)
    scheduler = create_scheduler(args, optimizer, total)
    rates = []
    for _ in range(total):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_warms_up_then_decays_to_zero():
    rates = learning_rates("cosine", warmup_steps=10)
    assert rates[0] < rates[5] < rates[9] <= 1.0
    assert rates[10] == pytest.approx(1.0) and rates[-1] < 0.01
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))


def test_one_cycle_peaks_at_the_end_of_warmup():
    rates = learning_rates("one_cycle", warmup_ratio=0.2)
    assert max(rates) == pytest.approx(1.0, rel=1e-3) and rates.index(max(rates)) in (19, 20)
    assert rates[0] < 0.1 and rates[-1] < 1e-3


def test_constant_and_linear():
    assert set(learning_rates("constant")) == {1.0}
    linear = learning_rates("linear")
    assert linear[0] == 1.0 and linear[50] == pytest.approx(0.5)


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 7])
def test_one_cycle_works_for_tiny_runs(total):
    rates = learning_rates("one_cycle", total=total, warmup_ratio=0.15)
    assert len(rates) == total and all(0 <= rate <= 1.0 for rate in rates)
