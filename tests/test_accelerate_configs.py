"""Each shipped Accelerate config is one `accelerate launch --config_file` accepts."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[1] / "accelerate_configs"
EXPECTED = {"cpu", "single_gpu", "multi_gpu", "fsdp", "deepspeed", "multi_node"}


def test_every_expected_config_is_shipped():
    assert {path.stem for path in CONFIGS.glob("*.yaml")} >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_own_parser(name):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.num_processes >= 1
    assert config.mixed_precision in {"no", "fp16", "bf16"}
    if name == "multi_node":
        assert config.num_machines == 2
    if name == "fsdp":
        assert str(config.distributed_type).endswith("FSDP")
    if name == "deepspeed":
        assert config.deepspeed_config["zero_stage"] == 2
        # left to the recipe: Accelerate fills DeepSpeed's "auto" from the Accelerator's accumulation steps
        assert "gradient_accumulation_steps" not in config.deepspeed_config
        assert "gradient_clipping" not in config.deepspeed_config
