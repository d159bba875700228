r"""The polar Student-t likelihood of a target embedding (VJE; docs/vje.md, "The likelihood").

A vector ``h ∈ R^d \ {0}`` is split into its direction ``u = h / ‖h‖ ∈ S^{d-1}`` and its log-norm
``s = log ‖h‖``. The density is taken w.r.t. the base measure

.. math::
    \mu_d = \text{push-forward of } \; U(S^{d-1}) \otimes \text{Leb}(\mathbb R) \; \text{under } (u, s) \mapsto e^s u,

with ``U`` the *uniform probability* measure on the sphere, and is

.. math::
    p(h) = k_\text{dir}(u) \cdot t_{\nu_r}(s;\, m_r, \tau), \qquad
    k_\text{dir}(u) = \Big[1 + \tfrac{1}{\nu} \sum_i \tfrac{(\sqrt d\, u_i - m_i)^2}{\sigma_i^2}\Big]^{-(\nu + d)/2}
    \;\le 1 .

Because ``k_dir ≤ 1`` pointwise and ``U`` has mass 1, ``∫ k_dir dU ≤ 1``: the directional factor is a
subdensity on the sphere, and the radial factor is a normalized 1-D Student-t, so ``∫ p dμ_d ≤ 1`` and
every ELBO built on it lower-bounds the log-evidence of this (sub-normalized) model. The direction is
scaled by ``√d`` so that a N(0, I) latent (whose norm concentrates at ``√d``) lives on the same sphere
as the target. ``gaussian=True`` replaces the kernel by its ν → ∞ limit ``exp(-½ Σ (√d u_i - m_i)² / σ_i²)``,
also bounded by 1.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all


class _NonzeroVector(constraints.Constraint):
    """Finite vectors other than 0 (the polar map is undefined at the origin)."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(value).all(-1) & (value != 0).any(-1)


nonzero_vector = _NonzeroVector()


def polar(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Direction ``(..., d)`` and log-norm ``(...)`` of ``value``, finite for tiny and huge norms.

    The vector is divided by its largest absolute entry first, so squaring can neither underflow
    nor overflow; an all-zero vector gets the log-norm of the smallest positive float.
    """
    tiny = torch.finfo(value.dtype).tiny
    peak = value.abs().amax(-1, keepdim=True).clamp_min(tiny)
    unit = value / peak
    norm = torch.linalg.vector_norm(unit, dim=-1, keepdim=True).clamp_min(tiny)
    return unit / norm, (peak.log() + norm.log()).squeeze(-1)


def student_t_log_prob(x: torch.Tensor, df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Normalized 1-D Student-t log-density (torch's formula, broadcasting all arguments)."""
    y = (x - loc) / scale
    z = scale.log() + 0.5 * df.log() + 0.5 * math.log(math.pi) + torch.lgamma(0.5 * df) - torch.lgamma(0.5 * (df + 1.0))
    return -0.5 * (df + 1.0) * torch.log1p(y**2 / df) - z


class PolarStudentT(TorchDistribution):
    """Directional Student-t subdensity on the sphere times a Student-t on the log-norm.

    Args:
        loc: directional location ``m (..., d)`` (compared with ``√d u``; a latent ``z``).
        scale: directional feature-wise scales ``σ (..., d)``; VJE passes the posterior's scales.
        df: directional degrees of freedom ν (ignored when ``gaussian``).
        radial_loc: location of the log-norm ``(...)``.
        radial_scale: scale τ of the log-norm.
        radial_df: degrees of freedom ν_r of the log-norm.
        gaussian: use the ν → ∞ kernel in the directional factor.

    ``event_shape == (d,)``; ``log_prob`` returns ``batch_shape``. The density is w.r.t. ``μ_d``
    (module docstring), not Lebesgue measure on R^d: it is *not* normalized, only bounded by 1 in
    total mass, so there is no exact sampler of it; `sample` raises.
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "scale": constraints.independent(constraints.positive, 1),
        "df": constraints.positive,
        "radial_loc": constraints.real,
        "radial_scale": constraints.positive,
        "radial_df": constraints.positive,
    }
    support = nonzero_vector

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        df: torch.Tensor | float,
        radial_loc: torch.Tensor | float,
        radial_scale: torch.Tensor | float,
        radial_df: torch.Tensor | float,
        gaussian: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        d = loc.shape[-1]
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1])
        radial_loc, radial_scale, radial_df, df = broadcast_all(radial_loc, radial_scale, radial_df, df)
        batch_shape = torch.broadcast_shapes(batch_shape, radial_loc.shape, df.shape)
        # expand() returns views, so a shared scale stays the very tensor the caller passed in.
        self.loc = loc.expand(*batch_shape, d)
        self.scale = scale.expand(*batch_shape, d)
        self.df = df.expand(batch_shape)
        self.radial_loc = radial_loc.expand(batch_shape)
        self.radial_scale = radial_scale.expand(batch_shape)
        self.radial_df = radial_df.expand(batch_shape)
        self.gaussian = gaussian
        super().__init__(batch_shape, torch.Size([d]), validate_args=validate_args)

    def directional_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log k_dir(u) ≤ 0``: the directional factor w.r.t. the uniform probability measure."""
        u, _ = polar(value)
        d = self.event_shape[0]
        q = (((math.sqrt(d) * u - self.loc) / self.scale) ** 2).sum(-1)
        if self.gaussian:
            return -0.5 * q
        return -0.5 * (self.df + d) * torch.log1p(q / self.df)

    def radial_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Normalized Student-t log-density of ``log ‖value‖``."""
        _, log_norm = polar(value)
        return student_t_log_prob(log_norm, self.radial_df, self.radial_loc, self.radial_scale)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.directional_log_prob(value) + self.radial_log_prob(value)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        raise NotImplementedError(
            "PolarStudentT is a subdensity (total mass <= 1), not a normalized distribution; its "
            "normalized version could be sampled by rejection from the uniform sphere with acceptance "
            "k_dir(u), which is impractical for d >> 1. It is only ever observed in VJE."
        )

    def expand(self, batch_shape: torch.Size, _instance: PolarStudentT | None = None) -> PolarStudentT:
        batch_shape = torch.Size(batch_shape)
        d = self.event_shape[0]
        return PolarStudentT(
            self.loc.expand(*batch_shape, d),
            self.scale.expand(*batch_shape, d),
            self.df.expand(batch_shape),
            self.radial_loc.expand(batch_shape),
            self.radial_scale.expand(batch_shape),
            self.radial_df.expand(batch_shape),
            gaussian=self.gaussian,
            validate_args=False,
        )
