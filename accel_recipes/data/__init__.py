"""Data: any image-classification source -> standard ``image``/``label`` datasets -> uint8 DataLoaders."""

from .bundle import DataBundle, build_data
from .errors import DataError
from .loaders import make_dataloader
from .transforms import make_transform, resolve_augmentation

__all__ = ["DataBundle", "DataError", "build_data", "make_dataloader", "make_transform", "resolve_augmentation"]
