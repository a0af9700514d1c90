"""Every GPU measurement in one command, offline, within 8 minutes on one GPU (``make gpu-check``):

python recipes/gpu_check.py --preflight                      # seconds: what is missing or outside the tested range
python recipes/gpu_check.py --output_dir runs/gpu-check     # then paste runs/gpu-check/gpu_check.md
python recipes/gpu_check.py --smoke                          # one check of each kind, tiny models, on a CPU

It runs on the Python a GPU node already has (README.md: Machines without network): the checkout's accel_recipes
is imported from here, installed or not, and the preflight runs first, before torch is imported.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's accel_recipes, pip-installed or not

from accel_recipes.bench.gpu_check import preflight  # noqa: E402  (the standard library only: seconds)

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--preflight" in argv:
        sys.exit(preflight.main())
    if not {"-h", "--help"} & set(argv) and preflight.main() != 0:
        sys.exit(2)  # every run would fail on what the lines above name: nothing is started
    from accel_recipes.bench.gpu_check.cli import main

    sys.exit(main(argv))
