"""The EMA of a model sharded by FSDP2: built, updated, checkpointed, resumed bit for bit, evaluated and exported
whole, equal to the EMA of the same training on one process (tests/fsdp_ema_worker.py, two CPU processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from conftest import ROOT
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # two processes sum the gradients in another order than one


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_ema")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(29100 + os.getpid() % 400), str(ROOT / "tests" / "fsdp_ema_worker.py"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    reference = torch.load(out / "reference.pt")
    processes = [torch.load(out / f"sharded_{rank}.pt") for rank in (0, 1)]
    return out, reference, processes


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert actual[name].shape == tensor.shape, name  # whole, not one process's shard
        torch.testing.assert_close(actual[name], tensor, **TOLERANCE, msg=name)


def test_the_sharded_ema_is_the_one_process_ema_and_resumes_bit_for_bit(sharded_run):
    out, reference, processes = sharded_run
    assert all(process["sharded"] for process in processes), "each process averaged its own shards"
    assert all(process["resumed_bitwise"] for process in processes)
    # the checkpoint holds the whole EMA of update 2 under ModelEmaV3's own keys, as an unsharded run's does
    saved = torch.load(out / "checkpoints" / "checkpoint-2" / "custom_checkpoint_0.pkl")
    assert_same_tensors({name.removeprefix("module."): t for name, t in saved.items()}, reference["states"][2])


def test_the_sharded_ema_is_evaluated_in_the_model_and_leaves_its_weights_as_they_were(sharded_run):
    _, reference, processes = sharded_run
    for process in processes:
        torch.testing.assert_close(process["ema_logits"], reference["logits"], **TOLERANCE)
        assert torch.equal(process["live_after"], process["live_before"])
        assert not torch.allclose(process["ema_logits"], process["live_before"]), "the EMA differs from the weights"


def test_the_sharded_ema_is_saved_as_the_best_model_and_exported_whole(sharded_run):
    out, reference, _ = sharded_run
    final = reference["states"][3]
    assert_same_tensors(load_file(out / "best.safetensors"), final)
    assert_same_tensors(load_file(out / "model" / "model.safetensors"), final)
    model = timm.create_model(f"local-dir:{out / 'model'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(reference["images"]), reference["logits"], **TOLERANCE)
