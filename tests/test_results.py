"""The results contract (accel_recipes/results.py): the keys of all_results.json, named once for every reader."""

from __future__ import annotations

import pytest

from accel_recipes.results import RESULT_KEYS, TRAINING_KEYS, RunResults, check_results, evaluation_key, key


def test_readers_name_keys_through_the_contract():
    assert key("train_runtime") == "train_runtime"
    assert evaluation_key("test", "accuracy", ema=True) == "test_ema_accuracy"
    assert evaluation_key("eval", "f1", ema=True, tta=True) == "eval_ema_tta_f1"
    with pytest.raises(KeyError, match="'train_runtime_s' is not a key of all_results.json"):
        key("train_runtime_s")
    with pytest.raises(KeyError, match="'valid_accuracy'"):
        evaluation_key("valid", "accuracy")


def test_results_outside_the_contract_are_refused():
    complete = dict.fromkeys(TRAINING_KEYS, 0)
    assert check_results(complete) == complete
    with pytest.raises(KeyError, match=r"unknown keys \['train_seconds'\]"):
        check_results({**complete, "train_seconds": 1.0})
    without = {name: value for name, value in complete.items() if name != "time_to_target_seconds"}
    with pytest.raises(KeyError, match=r"missing keys \['time_to_target_seconds'\]"):
        check_results(without)


def test_the_typed_definition_holds_every_key():
    assert set(RunResults.__annotations__) == set(RESULT_KEYS)
