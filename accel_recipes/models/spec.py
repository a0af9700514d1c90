"""What ``build_model`` returns: the model and every fact about it that the data transforms, the engine and the
exported folder need, and how to read logits from either library's forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ModelSpec:
    model: nn.Module
    library: str
    name: str
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    pretrained: bool
    small_image_stem: bool
    patch_size: int | None
    num_parameters: int

    def describe(self) -> str:
        """One line for logs."""
        if self.small_image_stem:
            shape = "small-image stem (3x3 stride 1, no max-pool)"
        elif self.patch_size:
            shape = f"patch {self.patch_size}"
        else:
            shape = "standard stem"
        origin = "pretrained" if self.pretrained else "from scratch"
        return (
            f"{self.library} {self.architecture} ({self.name}): {self.num_parameters / 1e6:.2f}M params, "
            f"input {self.input_size}px, {shape}, {origin}"
        )


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model call: a Tensor as is, else ``output.logits`` (transformers ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"model output {type(output).__name__} is neither a Tensor nor has a .logits Tensor")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
