"""Pyro distributions the papers need."""

from .mixture_kl import fit_smoothing, kl_to_mixture_bound, smoothed_scale, typical_rows
from .polar import PolarStudentT, TangentPolarStudentT, polar
from .tabular import MixedTabular, mixed_tabular_support
from .tokens import TargetTokenNormal

__all__ = ["MixedTabular", "fit_smoothing", "kl_to_mixture_bound", "smoothed_scale", "typical_rows", "mixed_tabular_support", "PolarStudentT", "TangentPolarStudentT", "TargetTokenNormal", "polar"]
