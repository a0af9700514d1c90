"""Top-k labels of images: ``python recipes/predict.py --model runs/cifar10-resnet50/model cat.png dog.jpg --top_k 3``.

``--model`` takes a run's model folder or a Hub id (``me/cifar10-resnet50``); inputs are image files and folders
(searched recursively). ``--json`` prints JSON. Unreadable files are reported on stderr and skipped; the exit
status is 0 when at least one image was predicted, 1 when none was.
"""

import sys

from accel_recipes.predict import main

if __name__ == "__main__":
    sys.exit(main())
