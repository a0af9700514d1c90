"""Every GPU measurement in one command, offline, within 8 minutes on one GPU (``make gpu-check``):

python recipes/gpu_check.py --output_dir runs/gpu-check     # then paste runs/gpu-check/gpu_check.md
python recipes/gpu_check.py --smoke                          # one check of each kind, tiny models, on a CPU
"""

import sys

from accel_recipes.bench.gpu_check.cli import main

if __name__ == "__main__":
    sys.exit(main())
