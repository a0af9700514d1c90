"""Train an image classifier: ``accelerate launch recipes/train.py --config recipes/cifar10/resnet50.yaml``.

Every field of the recipe can be overridden on the command line (``--gradient_accumulation_steps 4``);
``--help`` lists them all.
"""

import sys

from accel_recipes.run import main

if __name__ == "__main__":
    sys.exit(main())
