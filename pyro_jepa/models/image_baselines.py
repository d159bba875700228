"""Deterministic non-contrastive image baselines on VJE's backbone, augmentations and engine.

- SimSiam (Chen & He, CVPR 2021): projector (3 layers with BN), bottleneck predictor,
  symmetric negative cosine with stop-gradient on the target branch.
- VICReg (Bardes et al., ICLR 2022): expander (3 layers with BN), invariance + variance +
  covariance terms with the paper's weights 25 / 25 / 1.

Both evaluate the backbone output (before projector/expander), as their papers and VJE do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .image_ssl import ImageSSL, ImageSSLConfig


def bn_mlp(sizes: list[int], last_bn: bool) -> nn.Sequential:
    """Linear-BN-ReLU blocks; the last Linear optionally followed by a BatchNorm (SimSiam's projector)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(n_in, n_out, bias=False))
        if not last:
            layers += [nn.BatchNorm1d(n_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(n_out, affine=False))
    return nn.Sequential(*layers)


@dataclass
class SimSiamConfig(ImageSSLConfig):
    proj_dim: int = 512
    pred_hidden: int = 128


class SimSiam(ImageSSL):
    name = "SimSiam"

    def __init__(self, config: SimSiamConfig | None = None) -> None:
        config = config or SimSiamConfig()
        super().__init__(config)
        self.projector = bn_mlp([self.dim, config.proj_dim, config.proj_dim, config.proj_dim], last_bn=True)
        self.predictor = nn.Sequential(
            nn.Linear(config.proj_dim, config.pred_hidden, bias=False),
            nn.BatchNorm1d(config.pred_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.pred_hidden, config.proj_dim),
        )

    def two_view_loss(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        z_a, z_b = self.projector(h_a), self.projector(h_b)
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        cos = F.cosine_similarity
        return -0.5 * (cos(p_a, z_b.detach(), dim=-1).mean() + cos(p_b, z_a.detach(), dim=-1).mean())


@dataclass
class VICRegConfig(ImageSSLConfig):
    expander_dim: int = 1024
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0


class VICReg(ImageSSL):
    name = "VICReg"

    def __init__(self, config: VICRegConfig | None = None) -> None:
        config = config or VICRegConfig()
        super().__init__(config)
        e = config.expander_dim
        self.expander = bn_mlp([self.dim, e, e, e], last_bn=False)

    def two_view_loss(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        c = self.config
        x, y = self.expander(h_a), self.expander(h_b)
        n, e = x.shape
        invariance = F.mse_loss(x, y)
        x, y = x - x.mean(0), y - y.mean(0)
        std_x, std_y = (x.var(0) + 1e-4).sqrt(), (y.var(0) + 1e-4).sqrt()
        variance = 0.5 * (F.relu(1 - std_x).mean() + F.relu(1 - std_y).mean())

        def off_diagonal_sq(m: torch.Tensor) -> torch.Tensor:
            return m.pow(2).sum() - m.diagonal().pow(2).sum()

        covariance = (off_diagonal_sq(x.T @ x / (n - 1)) + off_diagonal_sq(y.T @ y / (n - 1))) / e
        return c.sim_coeff * invariance + c.std_coeff * variance + c.cov_coeff * covariance
