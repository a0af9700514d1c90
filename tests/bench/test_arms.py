"""Arms: switches -> recipe overrides, every arm at the recipe's effective batch."""

from __future__ import annotations

import pytest

from accel_recipes.bench.ablate.arms import ArmContext, ArmError, effective_batch, parse_arms
from accel_recipes.config import make_args
from accel_recipes.errors import ConfigError

from .fakes import CONTEXT


def arms_by_name(text: str, context: ArmContext = CONTEXT) -> dict:
    return {arm.name: arm.overrides for arm in parse_arms(text, context)}


def test_builtin_arms_change_only_their_switch_and_keep_the_effective_batch():
    arms = arms_by_name("baseline,ga,amp,pin,all")
    assert list(arms) == ["baseline", "ga", "amp", "pin", "all"]
    assert arms["baseline"] == {
        "mixed_precision": "no",
        "tf32": False,
        "per_device_train_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "dataloader_pin_memory": False,
        "data_pipeline": "stream",
    }
    assert arms["ga"] == {**arms["baseline"], "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2}
    assert arms["amp"] == {**arms["baseline"], "mixed_precision": "bf16"}
    assert arms["pin"] == {**arms["baseline"], "dataloader_pin_memory": True}
    assert arms["all"] == {**arms["ga"], "mixed_precision": "bf16", "dataloader_pin_memory": True}
    assert {effective_batch(overrides) for overrides in arms.values()} == {32}
    assert all(overrides["tf32"] is False for overrides in arms.values())


def test_combinations_custom_arms_and_field_settings():
    arms = arms_by_name("ga+amp,resident=data_pipeline:resident,fast=all+resident+channels_last:true")
    assert list(arms) == ["baseline", "ga+amp", "resident", "fast"]  # the baseline is added, first
    assert arms["ga+amp"]["mixed_precision"] == "bf16" and arms["ga+amp"]["gradient_accumulation_steps"] == 2
    assert arms["resident"] == {**arms["baseline"], "data_pipeline": "resident"}
    assert arms["fast"]["data_pipeline"] == "resident" and arms["fast"]["channels_last"] is True
    assert arms["fast"]["dataloader_pin_memory"] is True and arms["fast"]["per_device_train_batch_size"] == 16


def test_unknown_arm_names_the_valid_ones():
    with pytest.raises(ArmError) as error:
        parse_arms("baseline,gaa", CONTEXT)
    message = str(error.value)
    assert "'gaa'" in message
    for name in ("baseline", "ga", "amp", "pin", "all"):
        assert f"'{name}'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x=mixed_precision:fp8", "'mixed_precision' must be one of"),
        ("x=learning_rat:0.1", "names no recipe field 'learning_rat'"),
        ("ga,ga", "named twice"),
        ("amp=mixed_precision:fp16", "is a built-in arm"),
        ("", "--arms is empty"),
    ],
)
def test_bad_arms_are_config_errors(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_arms(text, CONTEXT)


def test_ga_needs_a_divisor_of_the_effective_batch():
    with pytest.raises(ArmError, match="30 is not divisible by 4.*--ga_steps"):
        parse_arms("ga", ArmContext(effective_batch=30, ga_steps=4, amp_dtype="fp16"))


@pytest.mark.parametrize(("micro", "steps", "asked", "expected"), [(128, 2, None, (256, 2)), (64, 1, None, (64, 2))])
def test_context_from_the_recipe(micro, steps, asked, expected):
    args = make_args({"per_device_train_batch_size": micro, "gradient_accumulation_steps": steps})
    context = ArmContext.from_args(args, asked, "fp16")
    assert (context.effective_batch, context.ga_steps) == expected
    with pytest.raises(ArmError, match="ga_steps must be at least 2"):
        ArmContext.from_args(args, 1, "fp16")


def test_training_switches_are_arms_that_validate_as_recipes():
    arms = arms_by_name("ema,mixup,cutmix,trivial_augment,rand_augment,erasing,flip_tta,timm=ema+mixup+cutmix+erasing")
    baseline = arms["baseline"]
    assert arms["ema"] == {**baseline, "model_ema": True, "metric_for_best_model": "ema_accuracy"}
    assert arms["mixup"] == {**baseline, "mixup_alpha": 0.8}
    assert arms["rand_augment"] == {**baseline, "augmentation": "rand_augment", "rand_augment_magnitude": 9}
    assert arms["erasing"] == {**baseline, "random_erasing": 0.25}
    assert arms["timm"]["cutmix_alpha"] == 1.0 and arms["timm"]["model_ema"] is True
    for overrides in arms.values():  # each arm is a valid recipe
        make_args(overrides)


def test_time_to_accuracy_methods_are_arms():
    arms = arms_by_name("ema,blurpool,early_stop,fast=ema+blurpool")
    baseline = arms["baseline"]
    assert arms["blurpool"] == {**baseline, "aa_layer": "blur"}
    assert arms["early_stop"] == {**baseline, "early_stopping_patience": 2}
    assert arms["fast"]["aa_layer"] == "blur" and arms["fast"]["model_ema"] is True
    for overrides in arms.values():  # each arm is a valid recipe
        make_args(overrides)


def test_resolution_schedules_are_arms_with_space_separated_sizes():
    # --arms is comma-separated, so a list field's values are separated by spaces inside an arm
    arms = arms_by_name("progressive=train_img_sizes:16 24 32,fixres=image_size:24+eval_image_size:32")
    assert arms["progressive"] == {**arms["baseline"], "train_img_sizes": [16, 24, 32]}
    assert arms["fixres"]["image_size"] == 24 and arms["fixres"]["eval_image_size"] == 32
    for overrides in arms.values():
        make_args(overrides)
