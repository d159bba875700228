"""Pyro distributions the papers need."""

from .mixture_kl import kl_to_mixture_bound
from .polar import PolarStudentT, TangentPolarStudentT, polar
from .tabular import MixedTabular, mixed_tabular_support
from .tokens import TargetTokenNormal

__all__ = ["MixedTabular", "kl_to_mixture_bound", "mixed_tabular_support", "PolarStudentT", "TangentPolarStudentT", "TargetTokenNormal", "polar"]
