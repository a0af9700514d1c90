"""The EMA of the weights (timm's ``ModelEmaV3``), on one process, under DDP and on a model sharded by FSDP2.

timm's EMA deep-copies the model, and FSDP2 refuses to deep-copy a sharded module. For a sharded model the EMA
therefore averages a mirror of its state dict instead: a plain module holding, under the same names, this process's
shards (the parameters' ``DTensor`` s) and the buffers. timm's own update runs on it unchanged (each process averages
its shards, with no communication: the update is element-wise), torch's state-dict helpers gather it whole for
checkpoints and the best model, and the EMA is evaluated and exported by copying its shards into the live model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

from accel_recipes.checkpoints import is_sharded
from accel_recipes.config import TrainingArguments

PREFIX = "module."  # the keys of ModelEmaV3's own state dict: a checkpoint's EMA reads the same sharded or not


class ShardedModelEma(ModelEmaV3):
    """timm's ``ModelEmaV3`` of a model sharded by FSDP2 (``fully_shard``, or Accelerate's FSDP2 plugin): ``module``
    is a mirror of the model's state dict holding this process's shards, and has no forward (evaluate through
    ``swapped_into``). Its ``state_dict`` is the whole EMA on the main process (what Accelerate saves there) and
    ``load_state_dict`` takes the whole EMA on every process (what Accelerate loads on each), so a checkpoint holds
    the same file as one of an unsharded run."""

    def __init__(self, model: torch.nn.Module, **options: Any) -> None:
        # foreach off: torch's foreach ops refuse lists that mix DTensor (the sharded parameters) and plain tensors
        # (the buffers, which FSDP2 leaves whole); timm's per-tensor update is the same arithmetic.
        super().__init__(state_dict_mirror(model), foreach=False, **options)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        # collective: every process calls it (Accelerate's save_state does); the main process gets the whole EMA
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return {PREFIX + name: tensor for name, tensor in get_model_state_dict(self.module, options=options).items()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:
        # every process holds the whole EMA (Accelerate loads the file on each) and keeps its own shards of it
        whole = {name.removeprefix(PREFIX): tensor for name, tensor in state_dict.items()}
        options = StateDictOptions(full_state_dict=True, strict=strict)
        return set_model_state_dict(self.module, whole, options=options)

    @contextmanager
    def swapped_into(self, model: torch.nn.Module) -> Iterator[None]:
        """``model`` (the live sharded model) holds the EMA weights inside the block and its own again after it,
        bit for bit; a copy of its shards is kept meanwhile. Collective."""
        live = {name: tensor.detach().clone() for name, tensor in get_model_state_dict(model).items()}
        copy_ema_into(self, model)
        try:
            yield
        finally:
            set_model_state_dict(model, live)


def state_dict_mirror(model: torch.nn.Module) -> torch.nn.Module:
    """A plain module whose state dict has ``model`` 's names, order and tensors (this process's shards, the same
    storage): parameters as frozen parameters, buffers as buffers. timm's EMA deep-copies it into its average."""
    mirror = torch.nn.Module()
    parameters = dict(model.named_parameters())
    for name, tensor in model.state_dict().items():
        *path, leaf = name.split(".")
        owner = mirror
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        if name in parameters:
            owner.register_parameter(leaf, torch.nn.Parameter(tensor.detach(), requires_grad=False))
        else:
            owner.register_buffer(leaf, tensor.detach())
    return mirror


def create_ema(training: TrainingArguments, model: torch.nn.Module) -> ModelEmaV3 | None:
    """timm's ``ModelEmaV3`` of ``model`` (the unwrapped module: under DDP every process holds the same copy; a
    sharded model gets a ``ShardedModelEma`` of its shards) when ``model_ema`` is on. Its update is
    ``ema = decay * ema + (1 - decay) * weights`` (floating-point buffers too; integer ones are copied). As in timm's
    train.py, ``update`` counts updates from 1 and the first one copies the weights; after it ``decay`` is
    ``model_ema_decay``, or with ``model_ema_warmup`` ``min(model_ema_decay, 1 - update ** -2/3)`` (timm's warm-up,
    gamma 1, power 2/3)."""
    if not training.model_ema:
        return None
    options = {"decay": training.model_ema_decay, "use_warmup": training.model_ema_warmup}
    return ShardedModelEma(model, **options) if is_sharded(model) else ModelEmaV3(model, **options)


def copy_ema_into(ema: ModelEmaV3, model: torch.nn.Module) -> None:
    """Load the EMA weights into ``model`` (the unwrapped live model), sharded or not: each process copies its own
    shards, with no gather. Collective for a sharded model."""
    set_model_state_dict(model, get_model_state_dict(ema.module))
