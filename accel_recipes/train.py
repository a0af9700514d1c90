"""The training entry point as a module: ``accelerate launch -m accel_recipes.train --config recipe.yaml`` (what
the ``accel-recipes-train`` command and ``recipes/train.py`` run); the pipeline itself is ``run.py``."""

import sys

from accel_recipes.run import main

if __name__ == "__main__":
    sys.exit(main())
