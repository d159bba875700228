"""Paired views of a shared latent: the data of Var-JEPA's simulation study (App. D.1), for vector models.

A row holds two views side by side, ``[x | y]``: ``x = h_x(s) + noise`` and ``y = h_y(s) + noise``
of one latent ``s`` drawn from a Gaussian mixture, with random one-hidden-layer maps ``h_x, h_y``
(a new draw per seed, as the paper's runs draw new maps). The mixture component is the label, so a
linear probe on a representation tells whether it kept what the views share (the paper's Acc(s)).
`PairedViews` has what `pyro_jepa.train.fit` reads (``rows``, ``y``, ``len``, ``to``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PairedViews:
    """``rows (N, x_dim + y_dim)`` float32 (x first), component labels ``y (N,)`` int64."""

    rows: torch.Tensor
    y: torch.Tensor
    x_dim: int

    def __post_init__(self) -> None:
        if self.rows.ndim != 2 or not 0 < self.x_dim < self.rows.shape[1]:
            raise ValueError(f"rows must be (N, x_dim + y_dim) with 0 < x_dim={self.x_dim} < {self.rows.shape[-1]}")
        if self.y.shape != (self.rows.shape[0],):
            raise ValueError(f"y must have shape ({self.rows.shape[0]},), got {tuple(self.y.shape)}")

    @property
    def y_dim(self) -> int:
        return self.rows.shape[1] - self.x_dim

    def __len__(self) -> int:
        return self.rows.shape[0]

    def subset(self, index) -> PairedViews:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.rows.device)
        return PairedViews(self.rows[index], self.y[index], self.x_dim)

    def to(self, device: torch.device | str) -> PairedViews:
        return PairedViews(self.rows.to(device), self.y.to(device), self.x_dim)


def make_paired_views(
    n_rows: int = 2000, x_dim: int = 16, y_dim: int = 16, latent_dim: int = 4, n_components: int = 4,
    noise: float = 0.3, seed: int = 0,
) -> PairedViews:
    """Draw ``n_rows`` paired views (see the module docstring); components in equal proportions."""
    if n_rows < n_components:
        raise ValueError(f"n_rows must be >= n_components ({n_components}), got {n_rows}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_rows) % n_components)
    centres = rng.normal(scale=2.0, size=(n_components, latent_dim))
    latent = centres[labels] + rng.normal(size=(n_rows, latent_dim))

    def random_map(out_dim: int) -> np.ndarray:
        hidden = np.tanh(latent @ rng.normal(size=(latent_dim, 32)) / np.sqrt(latent_dim))
        return hidden @ rng.normal(size=(32, out_dim)) / np.sqrt(32) + noise * rng.normal(size=(n_rows, out_dim))

    rows = np.concatenate([random_map(x_dim), random_map(y_dim)], axis=1)
    return PairedViews(torch.as_tensor(rows, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long), x_dim)
