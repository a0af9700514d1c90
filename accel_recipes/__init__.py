"""Fast and correct image-classification training recipes on Accelerate."""

__version__ = "0.1.0"
