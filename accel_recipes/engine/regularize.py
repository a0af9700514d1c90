"""What a training batch goes through after normalisation and what the loss sees: timm's random erasing (per
sample, on the device) and timm's mixup / cutmix (on the whole micro-batch, label smoothing folded into the soft
targets, scored with ``SoftTargetCrossEntropy``). The EMA of the weights is in ``ema``.

Both data paths hand the step the same kind of batch, so both get exactly these operations. Each micro-batch of an
accumulation window is erased and mixed on its own (its own coefficient and pairing), as timm's train.py does.

timm's erasing and mixup draw from Python's ``random``, NumPy's and torch's global generators. Here each micro-batch
runs them inside ``seeded_global_rngs(seed, epoch, micro-batch, process)``, so what a micro-batch gets depends on
nothing else: a resumed run repeats the uninterrupted one exactly, and each process draws its own.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy

from accel_recipes.config import TrainingArguments


@contextmanager
def seeded_global_rngs(device: torch.device, *keys: int) -> Iterator[None]:
    """Python's, NumPy's and torch's global generators (CPU and ``device``) seeded from ``keys`` inside the block,
    and put back as they were after it, so the code inside draws reproducibly and the code outside is unaffected."""
    seed = hash(keys) % 2**63  # the same in every process and run: ints are not hash-randomised
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class BatchRegularizer:
    """Random erasing and mixup / cutmix of normalised training micro-batches, and the loss on their targets."""

    def __init__(self, training: TrainingArguments, num_classes: int, device: torch.device) -> None:
        self.training, self.num_classes, self.device = training, num_classes, device
        self.erasing = (
            RandomErasing(training.random_erasing, mode="pixel", device=device) if training.random_erasing > 0 else None
        )
        self.mixup = None
        if training.mixup_alpha > 0 or training.cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=training.mixup_alpha,
                cutmix_alpha=training.cutmix_alpha,
                prob=training.mixup_prob,
                switch_prob=training.mixup_switch_prob,
                mode="batch",
                label_smoothing=training.label_smoothing_factor,
                num_classes=num_classes,
            )
        self.soft_loss = SoftTargetCrossEntropy()

    @property
    def active(self) -> bool:
        return self.erasing is not None or self.mixup is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *keys: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, targets): ``images`` float and normalised, modified in place; targets are the labels, or
        (N, num_classes) soft targets with mixup. ``keys`` (epoch, micro-batch, process) seed the draws."""
        if not self.active:
            return images, labels
        with seeded_global_rngs(self.device, self.training.seed, *keys):
            if self.erasing is not None:
                images = self.erasing(images)
            if self.mixup is None:
                return images, labels
            return images, self._mix(images, labels)

    def _mix(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # timm's Mixup pairs image i with image N-1-i and needs an even N. Training micro-batches are full and
        # even (validated), but one can come out odd (skipped undecodable images, or a halved batch after an
        # out-of-memory retry): its last image is left unmixed, with a (smoothed) one-hot target.
        even = len(images) - len(images) % 2
        if even == 0:
            return self._one_hot(labels)
        _, targets = self.mixup(images[:even], labels[:even])
        if even == len(images):
            return targets
        return torch.cat([targets, self._one_hot(labels[even:])])

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return mixup_target(labels, self.num_classes, lam=1.0, smoothing=self.training.label_smoothing_factor)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy: on soft targets (mixup, smoothing already in them), else on hard labels."""
        if targets.ndim == 2:
            return self.soft_loss(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.training.label_smoothing_factor)
