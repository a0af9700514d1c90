"""The custom code a model folder carries when neither timm nor transformers can express its architecture (today:
the small-image-stem ResNets), for transformers' ``trust_remote_code`` mechanism.

``models.folder`` copies these two files into such a folder and points ``auto_map`` in its ``config.json`` at
their classes. They import only torch, timm and transformers, never accel_recipes: the folder must load where
accel_recipes is not installed. Nothing imports them inside accel_recipes except the tests.
"""

CONFIGURATION_FILE = "configuration_small_stem_resnet.py"
MODELING_FILE = "modeling_small_stem_resnet.py"
