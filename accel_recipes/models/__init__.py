"""Backbones: a timm or transformers image classifier with its head sized to the labels, and the folder it is
exported to.

``build_model`` decides which library builds the named model (``resolve``), sizes the head and the input, fits
the model to small images when it trains from scratch (``surgery``: the CIFAR ResNet stem, a small ViT patch)
and says which normalisation and resize the data transforms must use (``preprocess``). The Hub is asked only
for what is not local or cached, and an unreachable Hub fails at once (``hub_fetch``). ``save_model_folder`` and
``load_model_folder`` write and read the exported folder (``folder``).

Modules: ``factory`` (build_model), ``resolve``, ``hub_fetch``, ``timm_backbone``, ``transformers_backbone``,
``surgery``, ``preprocess``, ``folder``, ``spec`` (ModelSpec).
"""

from accel_recipes.errors import ExportError, ModelError
from accel_recipes.models.factory import build_model
from accel_recipes.models.folder import load_model_folder, recorded_facts, save_model_folder
from accel_recipes.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalizer
from accel_recipes.models.resolve import is_hub_repo_id, local_folder, resolve_library
from accel_recipes.models.spec import ModelSpec, logits_of
from accel_recipes.models.surgery import apply_small_image_stem, is_resnet

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ExportError",
    "ModelError",
    "ModelSpec",
    "Normalizer",
    "apply_small_image_stem",
    "build_model",
    "is_hub_repo_id",
    "is_resnet",
    "load_model_folder",
    "local_folder",
    "logits_of",
    "recorded_facts",
    "resolve_library",
    "save_model_folder",
]
