"""ResNets with the small-image stem (3x3 stride-1 first convolution, no max-pool), for images of 64 px or less
trained from scratch: the library's model, then the stem swapped in before the weights are loaded.

Loaded by transformers from the model folder (``trust_remote_code=True``); imports only torch, timm and
transformers.
"""

from timm.models.resnet import ResNet
from torch import nn
from transformers import ResNetForImageClassification, TimmWrapperForImageClassification

from .configuration_small_stem_resnet import SmallStemResNetConfig, SmallStemTimmResNetConfig


def small_stem_conv(like: nn.Conv2d) -> nn.Conv2d:
    """The 3x3 stride-1 convolution that replaces a ResNet's first, strided one (same channels, no bias)."""
    return nn.Conv2d(like.in_channels, like.out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class SmallStemTimmResNetForImageClassification(TimmWrapperForImageClassification):
    config_class = SmallStemTimmResNetConfig

    def __init__(self, config: SmallStemTimmResNetConfig):
        super().__init__(config)
        model = self.timm_model
        if not isinstance(model, ResNet):
            raise ValueError(f"the small-image stem is for timm ResNets, not {type(model).__name__}")
        if isinstance(model.conv1, nn.Sequential):  # a 'deep' stem: only its first, strided conv changes
            model.conv1[0] = small_stem_conv(model.conv1[0])
        else:
            model.conv1 = small_stem_conv(model.conv1)
        model.maxpool = nn.Identity()


class SmallStemResNetForImageClassification(ResNetForImageClassification):
    config_class = SmallStemResNetConfig

    def __init__(self, config: SmallStemResNetConfig):
        super().__init__(config)
        embedder = self.resnet.embedder
        embedder.embedder.convolution = small_stem_conv(embedder.embedder.convolution)
        embedder.pooler = nn.Identity()
