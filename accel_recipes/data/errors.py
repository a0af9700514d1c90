"""DataError lives in accel_recipes.errors with every other user error; re-exported here for data/'s modules."""

from accel_recipes.errors import DataError

__all__ = ["DataError"]
