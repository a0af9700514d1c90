"""What each speed-up buys, alone and combined: ``python recipes/ablate.py --config recipes/cifar10/resnet50.yaml``.

Runs every arm (baseline, ga, amp, pin, all, or any '+'-combination) ``--repeats`` times, each in its own
``accelerate launch recipes/train.py``, then writes ablation.md/.csv/.json, learning_curves.png and speedup.png
into ``--output_dir``. Any recipe field can be overridden for every arm (``--max_steps 200``); ``--help`` for more.
"""

import sys

from accel_recipes.bench.ablate.cli import main

if __name__ == "__main__":
    sys.exit(main())
