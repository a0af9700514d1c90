"""Data: any image-classification source -> standard ``image``/``label`` datasets -> uint8 DataLoaders."""

from accel_recipes.errors import DataError

from .augmentation import Augmentation, resolve_augmentation
from .bundle import DataBundle, build_data
from .loaders import make_dataloader
from .pipelines import LoaderFactory, Loaders, ModelInput, build_loaders
from .resident import DeviceLoader, ResidentLoader, choose_pipeline, decode_split, fits_in_memory
from .synthetic import SyntheticLoader, first_batch
from .transforms import ImageTransform, make_transform

__all__ = [
    "Augmentation",
    "DataBundle",
    "DataError",
    "DeviceLoader",
    "ImageTransform",
    "LoaderFactory",
    "Loaders",
    "ModelInput",
    "ResidentLoader",
    "SyntheticLoader",
    "build_data",
    "build_loaders",
    "choose_pipeline",
    "decode_split",
    "first_batch",
    "fits_in_memory",
    "make_dataloader",
    "make_transform",
    "resolve_augmentation",
]
