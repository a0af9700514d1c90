"""``recipes/train.py`` with less memory on one process, run by ``accelerate launch`` from
tests/e2e/test_out_of_memory.py as ``oom_worker.py forward|backward ARGS``: on process 1 only, training micro-batches
over 4 raise CUDA's out-of-memory error in the model's forward pass, or at the start of its backward pass, as a
smaller GPU beside a larger one would; process 0 never runs out."""

from __future__ import annotations

import os
import sys

import torch

from accel_recipes import run

LIMITED_PROCESS, LARGEST_BATCH = 1, 4


def out_of_memory(*_) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def build_model_with_less_memory_on_one_process(where: str):
    real_build_model = run.build_model

    def build_model(*args, **kwargs):
        spec = real_build_model(*args, **kwargs)
        forward = spec.model.forward

        def limited_forward(images, *rest, **options):
            over = spec.model.training and images.shape[0] > LARGEST_BATCH
            limited = over and int(os.environ["RANK"]) == LIMITED_PROCESS
            if limited and where == "forward":
                out_of_memory()
            output = forward(images, *rest, **options)
            if limited and where == "backward":
                # the gradient of the logits comes first in the backward pass: the weights' gradients, and DDP's
                # all-reduce of them, would follow
                output.register_hook(out_of_memory)
            return output

        spec.model.forward = limited_forward
        return spec

    return build_model


if __name__ == "__main__":
    run.build_model = build_model_with_less_memory_on_one_process(sys.argv[1])
    sys.exit(run.main(sys.argv[2:]))
