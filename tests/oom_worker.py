"""``recipes/train.py`` with less memory on one process, run by ``accelerate launch`` from
tests/e2e/test_out_of_memory.py: the model's training forward raises CUDA's out-of-memory error on process 1 only,
for micro-batches over 4, as a smaller GPU beside a larger one would; process 0 never runs out."""

from __future__ import annotations

import os
import sys

import torch

from accel_recipes import run

LIMITED_PROCESS, LARGEST_BATCH = 1, 4


def build_model_with_less_memory_on_one_process(*args, **kwargs):
    spec = real_build_model(*args, **kwargs)
    forward = spec.model.forward

    def limited_forward(images, *rest, **options):
        over = spec.model.training and images.shape[0] > LARGEST_BATCH
        if over and int(os.environ["RANK"]) == LIMITED_PROCESS:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(images, *rest, **options)

    spec.model.forward = limited_forward
    return spec


real_build_model = run.build_model

if __name__ == "__main__":
    run.build_model = build_model_with_less_memory_on_one_process
    sys.exit(run.main(sys.argv[1:]))
