"""Run under ``torchrun --nproc_per_node 2`` by tests/engine/test_ema.py: the EMA of a timm model sharded with FSDP2's
``fully_shard`` over gloo (sharded by hand, as tests/fsdp_worker.py explains), next to the EMA of the same training
on one process.

Both processes train the sharded model on their half of each global batch of 8; the main process also trains an
unsharded copy on the whole batch with the same optimizer: the same maths on one process. Each model gets the EMA
the trainer builds (``create_ema``) and updates it after every update. After update 2 a checkpoint is saved with the
project's ``save_checkpoint``; after update 3 it is restored (``restore_checkpoint``) and update 3 is repeated.

Writes into the folder given as the only argument: ``reference.pt`` (the one-process EMA after updates 2 and 3, its
logits), ``sharded.pt`` (what the sharded EMA gave: its logits while swapped into the model, the model's logits
before and after the swap, whether the resumed EMA matched bit for bit), ``best.safetensors`` (the EMA saved as the
trainer saves a best model), ``model/`` (the folder exported after the EMA was copied into the model) and
``checkpoints/`` (the checkpoint of update 2).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from accel_recipes.checkpoints import RunState, full_state_dict, restore_checkpoint, save_checkpoint, save_weights
from accel_recipes.config import make_args
from accel_recipes.engine.ema import ShardedModelEma, copy_ema_into, create_ema
from accel_recipes.models import build_model, save_model_folder

LABELS = ["a", "b", "c"]
GLOBAL_BATCH = 8
UPDATES = 3
CHECKPOINT_AT = 2


def local_shards(ema: ShardedModelEma) -> list[torch.Tensor]:
    return [
        (tensor.to_local() if isinstance(tensor, DTensor) else tensor).clone()
        for tensor in ema.module.state_dict().values()
    ]


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True)  # torchrun's environment: two CPU processes over gloo
    rank = accelerator.process_index
    args = make_args({"model_name_or_path": "test_vit", "model_ema": True, "model_ema_decay": 0.7})
    torch.manual_seed(0)
    spec = build_model(args.model, LABELS, (0.5,) * 3, (0.25,) * 3, 32)
    model = spec.model
    reference = copy.deepcopy(model)  # the same weights, unsharded, on one process
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator),
            torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator),
        )
        for _ in range(UPDATES)
    ]
    ema, reference_ema = create_ema(args.training, model), create_ema(args.training, reference)
    assert isinstance(ema, ShardedModelEma), "a sharded model gets the sharded EMA"
    accelerator.register_for_checkpointing(ema)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    half = GLOBAL_BATCH // accelerator.num_processes

    def update(number: int) -> None:
        images, labels = batches[number - 1]
        mine = slice(rank * half, (rank + 1) * half)
        F.cross_entropy(model(images[mine]), labels[mine]).backward()  # FSDP2 averages the gradients
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model, step=number)

    def reference_update(number: int) -> None:
        images, labels = batches[number - 1]
        F.cross_entropy(reference(images), labels).backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        reference_ema.update(reference, step=number)

    reference_states = {}
    for number in range(1, UPDATES + 1):
        update(number)
        reference_update(number)
        reference_states[number] = {name: tensor.clone() for name, tensor in reference_ema.module.state_dict().items()}
        if number == CHECKPOINT_AT:
            checkpoint = save_checkpoint(accelerator, out / "checkpoints", RunState(update=number, num_classes=3), None)
            weights_at_checkpoint = [parameter.detach().clone() for parameter in model.parameters()]
    ema_after_updates = local_shards(ema)

    # resume: the EMA of update 2 comes back from the checkpoint; update 3 again gives the same EMA bit for bit
    restore_checkpoint(accelerator, checkpoint, 3, "random")
    with torch.no_grad():
        for parameter, saved in zip(model.parameters(), weights_at_checkpoint, strict=True):
            parameter.copy_(saved)
    update(UPDATES)
    resumed_bitwise = all(torch.equal(a, b) for a, b in zip(local_shards(ema), ema_after_updates, strict=True))

    # evaluation: the EMA swapped into the sharded model, and the model's own weights back after it
    model.eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        live_before = model(images)
        with ema.swapped_into(model):
            ema_logits = model(images)
        live_after = model(images)
        reference_logits = reference_ema.module(images)

    save_weights(accelerator, ema.module, out / "best.safetensors")  # as the trainer keeps an EMA best model
    copy_ema_into(ema, model)  # as the trainer's end exports the EMA when no best model was kept
    weights = full_state_dict(accelerator, model)
    if accelerator.is_main_process:
        save_model_folder(spec, model, out / "model", LABELS, state_dict=weights)
        torch.save({"states": reference_states, "logits": reference_logits, "images": images}, out / "reference.pt")
    torch.save(
        {
            "ema_logits": ema_logits,
            "live_before": live_before,
            "live_after": live_after,
            "resumed_bitwise": resumed_bitwise,
            "sharded": any(isinstance(tensor, DTensor) for tensor in ema.module.state_dict().values()),
        },
        out / f"sharded_{rank}.pt",
    )
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
