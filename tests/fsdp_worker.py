"""Run under ``torchrun --nproc_per_node 2`` by tests/test_checkpoints.py: a timm model sharded with FSDP2's
``fully_shard`` over gloo (Accelerate enables its FSDP plugin only on accelerators, so the sharding is applied here
by hand, as the plugin would) goes through the project's export, best-model save and load code.

Writes into the folder given as the only argument: ``model/`` (the exported folder), ``best.safetensors``,
``images.pt`` and ``logits.pt`` (the sharded model's outputs), ``reloaded_logits.pt`` (after the best weights were
loaded back into the sharded model over changed weights) and ``shard_shapes.json`` (each process's local shards).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.fsdp import fully_shard

from accel_recipes.checkpoints import full_state_dict, is_sharded, load_weights, save_weights
from accel_recipes.config import make_args
from accel_recipes.models import build_model, save_model_folder

LABELS = ["a", "b", "c"]


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True)  # torchrun's environment: two CPU processes over gloo
    assert accelerator.num_processes == 2
    torch.manual_seed(0)
    spec = build_model(make_args({"model_name_or_path": "test_vit"}).model, LABELS, (0.5,) * 3, (0.25,) * 3, 32)
    model = spec.model
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)  # not accelerator.prepare(model): on a CPU that would wrap the shards in DDP
    local = {name: list(parameter.to_local().shape) for name, parameter in model.named_parameters()}
    with torch.no_grad():  # weights no initialiser gives, the same on both processes
        for parameter in model.parameters():
            parameter.add_(0.05)
    model.eval()
    images = torch.randn(4, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
    assert is_sharded(accelerator.unwrap_model(model))

    weights = full_state_dict(accelerator, model)  # collective, as run.py calls it
    save_weights(accelerator, model, out / "best.safetensors")
    if accelerator.is_main_process:
        save_model_folder(spec, accelerator.unwrap_model(model), out / "model", LABELS, state_dict=weights)
        torch.save({"images": images, "logits": logits}, out / "logits.pt")
    (out / f"shard_shapes_{accelerator.process_index}.json").write_text(json.dumps(local))

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    load_weights(accelerator, model, out / "best.safetensors")
    with torch.no_grad():
        reloaded = model(images)
    if accelerator.is_main_process:
        torch.save(reloaded, out / "reloaded_logits.pt")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
