"""The run's Accelerator: the precision it resolves is recorded, and a CPU precision that trains many times slower
than fp32 is named at start, with what to pass instead."""

from __future__ import annotations

import logging

import pytest
from accelerate.state import AcceleratorState, GradientState

import accel_recipes.engine.accelerator as accelerator_module
from accel_recipes.config import make_args
from accel_recipes.engine import create_accelerator


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test builds its own Accelerator with its own precision (Accelerate's own tests reset it the same way)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def training_args(tmp_path, precision: str):
    return make_args({"mixed_precision": precision, "output_dir": str(tmp_path)}).training


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, caplog, monkeypatch, native):
    monkeypatch.setattr(accelerator_module, "cpu_has_native_bf16", lambda: native)
    caplog.set_level(logging.WARNING, logger=accelerator_module.__name__)
    training = training_args(tmp_path, "bf16")
    accelerator = create_accelerator(training)
    assert accelerator.device.type == "cpu" and training.mixed_precision == "bf16"
    warned = "bf16 on a CPU without native bf16" in caplog.text
    assert warned == (not native)
    if warned:
        assert "--mixed_precision no" in caplog.text


def test_fp32_gives_no_precision_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(accelerator_module, "cpu_has_native_bf16", lambda: False)
    caplog.set_level(logging.WARNING, logger=accelerator_module.__name__)
    training = training_args(tmp_path, "no")
    create_accelerator(training)
    assert training.mixed_precision == "no" and caplog.text == ""


def test_fp16_on_a_cpu_gets_a_loss_scaler_and_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=accelerator_module.__name__)
    accelerator = create_accelerator(training_args(tmp_path, "fp16"))
    assert accelerator.scaler is not None and accelerator.native_amp
    assert "mixed_precision fp16 on a CPU" in caplog.text


@pytest.mark.parametrize(
    ("variable", "name"), [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")]
)
def test_a_sharding_config_on_a_machine_without_accelerators_says_it_runs_unsharded(
    tmp_path, caplog, monkeypatch, variable, name
):
    if accelerator_module.torch.accelerator.is_available():
        pytest.skip("a machine with an accelerator shards for real")
    if name == "DeepSpeed":
        pytest.importorskip("deepspeed")  # without it, Accelerate (and its launcher) refuse at once, saying so
    monkeypatch.setenv(variable, "true")  # what `accelerate launch --config_file accelerate_configs/...` sets
    caplog.set_level(logging.WARNING, logger=accelerator_module.__name__)
    accelerator = create_accelerator(training_args(tmp_path, "no"))
    assert str(accelerator.distributed_type) == "DistributedType.NO" and accelerator.device.type == "cpu"
    assert f"asks for {name}" in caplog.text and "one process on the CPU" in caplog.text


def test_no_sharding_config_no_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=accelerator_module.__name__)
    create_accelerator(training_args(tmp_path, "no"))
    assert "asks for" not in caplog.text


@pytest.mark.parametrize("tracker", ["trackio", "wandb", "tensorboard"])
def test_a_tracker_that_is_not_installed_stops_the_run_before_training_with_the_pip_command(
    tracker, monkeypatch, capsys, tmp_path
):
    from accelerate.utils import imports

    from accel_recipes.run import main

    monkeypatch.setattr(imports, f"is_{tracker}_available", lambda: False)
    code = main(["--report_to", tracker, "--output_dir", str(tmp_path / "run")])
    message = capsys.readouterr().err.strip()
    assert code == 2 and message.count("\n") == 0
    assert f'pip install "accel-recipes[{tracker}]"' in message and f"report_to {tracker!r}" in message
    assert not (tmp_path / "run").exists(), "stopped before anything was written"
