from __future__ import annotations

import torch

from accel_recipes.bench.datapath_setup import measure_policy_cost
from accel_recipes.bench.policy_cost import main


def test_the_table_has_the_plain_crop_and_both_policies(capsys):
    rows = measure_policy_cost(torch.device("cpu"), batch_size=8, image_size=16, repeats=2)
    assert [label.split(" (")[0] for label, _ in rows] == [
        "crop_flip",
        "crop_flip + trivial_augment",
        "crop_flip + rand_augment",
    ]
    assert all(milliseconds > 0 for _, milliseconds in rows)
    assert main(["--device", "cpu", "--batch_size", "0"]) == 2
    assert "batch_size >= 1" in capsys.readouterr().err
