"""``recipes/train.py`` with less memory on one process, run by ``accelerate launch`` from
tests/e2e/test_out_of_memory.py as ``oom_worker.py ARGS``: on process 1 only, training micro-batches over 8 raise
CUDA's out-of-memory error in the model's forward pass and micro-batches of 5 to 8 at the start of its backward
pass, as a smaller GPU beside a larger one would; process 0 never runs out. A run from 16 images meets both."""

from __future__ import annotations

import os
import sys

import torch

from accel_recipes import run

LIMITED_PROCESS, LARGEST_BATCH = 1, 4


def out_of_memory(*_) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def build_model_with_less_memory_on_one_process():
    real_build_model = run.build_model

    def build_model(*args, **kwargs):
        spec = real_build_model(*args, **kwargs)
        forward = spec.model.forward

        def limited_forward(images, *rest, **options):
            limited = spec.model.training and int(os.environ["RANK"]) == LIMITED_PROCESS
            if limited and images.shape[0] > 2 * LARGEST_BATCH:
                out_of_memory()
            output = forward(images, *rest, **options)
            if limited and images.shape[0] > LARGEST_BATCH:
                # the gradient of the logits comes first in the backward pass: the weights' gradients, and DDP's
                # all-reduce of them, would follow
                output.register_hook(out_of_memory)
            return output

        spec.model.forward = limited_forward
        return spec

    return build_model


if __name__ == "__main__":
    run.build_model = build_model_with_less_memory_on_one_process()
    sys.exit(run.main(sys.argv[1:]))
