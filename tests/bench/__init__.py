"""Tests of accel_recipes.bench, one file per module."""
