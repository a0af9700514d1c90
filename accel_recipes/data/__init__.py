"""Data: any image-classification source -> standard ``image``/``label`` datasets -> uint8 DataLoaders."""

from accel_recipes.errors import DataError

from .bundle import DataBundle, build_data
from .loaders import make_dataloader
from .pipelines import LoaderFactory, Loaders, ModelInput, build_loaders
from .resident import DeviceLoader, ResidentLoader, choose_pipeline, decode_split, fits_in_memory
from .synthetic import SyntheticLoader, first_batch
from .transforms import make_transform, resolve_augmentation

__all__ = [
    "DataBundle",
    "DataError",
    "DeviceLoader",
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
