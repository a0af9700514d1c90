"""Run under ``torchrun --nproc_per_node 2`` by tests/engine/test_ema.py: the real ``Trainer`` of a tiny run
(tests/engine/loop_harness.py) on a model sharded with FSDP2's ``fully_shard`` over gloo, keeping an EMA that
competes for the best model (``metric_for_best_model: ema_accuracy``).

Accelerate applies FSDP2 in ``prepare`` only on accelerators; here the model is sharded by hand before the trainer
prepares it, and ``prepare_model`` leaves it unwrapped (``evaluation_mode``), as the FSDP2 plugin does, instead of
wrapping the shards in DDP. The harness's loaders are not split between processes: both train on the same batches,
so the run is the same maths as the harness's run on one process. Checkpoints are off (Accelerate's ``save_state``
of a hand-sharded model is not the plugin's); tests/fsdp_ema_worker.py checkpoints the EMA.

Writes ``run/`` (the trainer's output_dir: metrics.jsonl, best_model/) and ``final.safetensors`` (the whole weights
the run ends with) into the folder given as the only argument.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from safetensors.torch import save_file
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).parent / "engine"))
import loop_harness  # noqa: E402

from accel_recipes.checkpoints import full_state_dict  # noqa: E402
from accel_recipes.engine import Trainer  # noqa: E402
from accel_recipes.engine.ema import ShardedModelEma  # noqa: E402

# shared with tests/engine/test_ema.py, which trains the same run on one process
FIELDS = {
    "model_ema": True,
    "model_ema_decay": 0.5,
    "eval_strategy": "steps",
    "eval_steps": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "ema_accuracy",
}
MICRO_BATCHES = 6


def main(out: Path) -> None:
    training = loop_harness.training_args(out / "run", **FIELDS)
    with loop_harness.tiny_run_environment():
        pieces = loop_harness._pieces(training, loop_harness.make_data(MICRO_BATCHES), None, None)
        spec, accelerator = pieces[1], pieces[-1]
        for layer in (spec.model[1], spec.model[3]):
            fully_shard(layer)
        fully_shard(spec.model)
        accelerator.prepare_model = functools.partial(accelerator.prepare_model, evaluation_mode=True)
        trainer = Trainer(*pieces)
        assert isinstance(trainer.step.ema, ShardedModelEma), "the sharded model got the sharded EMA"
        result = trainer.fit()
        weights = full_state_dict(accelerator, result.model)
        if accelerator.is_main_process:
            save_file(weights, out / "final.safetensors")
        accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
