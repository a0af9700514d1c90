"""The EMA of a model sharded by FSDP2: built, updated, checkpointed, resumed bit for bit, evaluated and exported
whole, equal to the EMA of the same training on one process (tests/fsdp_ema_worker.py, two CPU processes); and in
the real trainer, the sharded EMA is evaluated, wins the best model and is what the run ends with, as on one
process (tests/fsdp_ema_trainer_worker.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from conftest import ROOT, read_jsonl
from fsdp_ema_trainer_worker import FIELDS, MICRO_BATCHES
from loop_harness import make_data, make_trainer, tiny_run_environment, training_args, weights
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # two processes sum the gradients in another order than one


def run_on_two_processes(worker: str, out) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(29100 + os.getpid() % 400), str(ROOT / "tests" / worker), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_ema")
    run_on_two_processes("fsdp_ema_worker.py", out)
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


def evaluations(output_dir) -> list[tuple[int, float, float]]:
    records = read_jsonl(output_dir / "metrics.jsonl")
    return [
        (r["step"], r["eval_accuracy"], r["eval_ema_accuracy"])
        for r in records
        if "eval_ema_accuracy" in r and not r.get("final")
    ]


def test_in_the_trainer_the_sharded_ema_wins_the_best_model_as_on_one_process(tmp_path):
    sharded = tmp_path / "sharded"
    run_on_two_processes("fsdp_ema_trainer_worker.py", sharded)

    after_update = []  # (live, EMA) weights after 0, 1, ... updates of the same run on one process

    def snapshot(epoch, index, batch):
        after_update.append((weights(trainer.step.model), weights(trainer.step.ema.module)))

    with tiny_run_environment():
        trainer = make_trainer(training_args(tmp_path / "one", **FIELDS), make_data(MICRO_BATCHES), on_batch=snapshot)
        result = trainer.fit()
        after_update.append((None, weights(trainer.step.ema.module)))  # the last update's EMA (the live weights
        final = weights(result.model)  # were replaced by the best ones at the end)
    one = tmp_path / "one"
    assert evaluations(sharded / "run") == evaluations(one) and len(evaluations(one)) == 6
    best = load_file(one / "best_model" / "model.safetensors")
    assert_same_tensors(best, after_update[result.metrics["best_update"]][1])  # the EMA weights won
    assert all(not torch.equal(live["1.weight"], ema["1.weight"]) for live, ema in after_update[2:-1])
    assert_same_tensors(load_file(sharded / "run" / "best_model" / "model.safetensors"), best)
    assert_same_tensors(final, best)  # the run ends with the EMA weights that won
    assert_same_tensors(load_file(sharded / "final.safetensors"), final)
