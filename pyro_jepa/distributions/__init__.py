"""Pyro distributions the papers need."""

from .polar import PolarStudentT, polar
from .tabular import MixedTabular, mixed_tabular_support

__all__ = ["MixedTabular", "mixed_tabular_support", "PolarStudentT", "polar"]
