"""Push a finished run to the Hub: ``python recipes/push.py runs/cifar10-resnet50 --hub_model_id me/cifar10-resnet50``.

Renders the model card again (for that repository) and uploads the model folder, the card, the metrics and the
TensorBoard logs in one commit. The token is the one of ``hf auth login`` or ``HF_TOKEN``.
"""

import sys

from accel_recipes.hub import push_main

if __name__ == "__main__":
    sys.exit(push_main())
