"""Pyro distributions the papers need."""

from .tabular import MixedTabular, mixed_tabular_support

__all__ = ["MixedTabular", "mixed_tabular_support"]
