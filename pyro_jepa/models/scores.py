"""Per-row aggregates of a diagonal Gaussian posterior's standard deviations (latent uncertainty)."""

from __future__ import annotations

import math

import torch

SCORES = ("mean", "q90", "entropy")


def row_uncertainty(scale: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Aggregate posterior standard deviations ``(N, ...)`` of a diagonal Gaussian to one score per row.

    ``"mean"`` averages all entries (the paper's choice for real data); ``"q90"`` takes their 90th
    percentile (its choice for MNIST and SIM, to capture tail behaviour); ``"entropy"`` is the
    differential entropy of the row's diagonal Gaussian, ``sum_j 0.5 log(2 pi e) + log sigma_j``,
    which weighs relative (log-scale) changes of small and large stds alike.
    """
    flat = scale.flatten(1)
    if how == "mean":
        return flat.mean(1)
    if how == "q90":
        return flat.quantile(0.9, dim=1)
    if how == "entropy":
        return (0.5 * math.log(2 * math.pi * math.e) + flat.log()).sum(1)
    raise ValueError(f"how must be one of {SCORES}, got {how!r}")
