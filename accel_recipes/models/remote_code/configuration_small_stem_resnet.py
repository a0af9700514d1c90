"""Configurations of ResNets with the small-image stem (3x3 stride-1 first convolution, no max-pool), which
neither timm's nor transformers' own configurations can express.

Loaded by transformers from the model folder (``trust_remote_code=True``); imports only transformers.
"""

from transformers import AutoImageProcessor, ResNetConfig, TimmWrapperConfig, ViTImageProcessor


class SmallStemTimmResNetConfig(TimmWrapperConfig):
    """A timm ResNet (``architecture``, ``model_args``) whose stem is the small-image one.

    It keeps TimmWrapperConfig's model type, so the folder's timm-layout weights (``conv1.weight``, ...) load
    into the wrapper's ``timm_model`` as transformers loads any timm folder."""


class SmallStemResNetConfig(ResNetConfig):
    """A transformers ResNet whose embedder is the small-image stem."""


# transformers 4.x's pipeline() loads an image processor only for configuration classes it has registered, so
# without this it builds none for these two. The folder's preprocessor_config.json describes a ViTImageProcessor
# (a plain resize + normalise to the training input); the keywords are those every release since 4.48 accepts.
for _config_class in (SmallStemTimmResNetConfig, SmallStemResNetConfig):
    AutoImageProcessor.register(_config_class, slow_image_processor_class=ViTImageProcessor, exist_ok=True)
