"""Pyro distributions the papers need."""

from .polar import PolarStudentT, TangentPolarStudentT, polar
from .tabular import MixedTabular, mixed_tabular_support

__all__ = ["MixedTabular", "mixed_tabular_support", "PolarStudentT", "TangentPolarStudentT", "polar"]
