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
        # type(self), not PolarStudentT: Pyro expands every observed site inside a plate, and a
        # hard-coded class would silently swap a subclass's log_prob for this one's. Copying the
        # instance dict carries a subclass's non-tensor settings (kernel, projection) along.
        batch_shape = torch.Size(batch_shape)
        d = self.event_shape[0]
        new = _instance if _instance is not None else type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.loc, new.scale = self.loc.expand(*batch_shape, d), self.scale.expand(*batch_shape, d)
        for name in ("df", "radial_loc", "radial_scale", "radial_df"):
            setattr(new, name, getattr(self, name).expand(batch_shape))
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


PROJECTIONS = ("stereographic", "gnomonic")


def log_sphere_area(d: int) -> float:
    """``log |S^{d-1}|``, the surface area of the unit sphere in R^d."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


class TangentPolarStudentT(PolarStudentT):
    r"""`PolarStudentT` with an exactly normalized directional factor (docs/vje.md, "normalized").

    The direction ``u`` is mapped to the tangent plane ``T = m^⊥`` of the unit sphere at the
    location's direction ``m = loc / ‖loc‖`` and scaled by ``√d`` (the radius of a N(0, I) latent):

    - ``"stereographic"`` (default): ``w = 2 (u − c m) / (1 + c)``, ``c = u·m``, a bijection of
      ``S^{d-1} \ {−m}`` onto ``T`` with ``dA = (1 + ‖w‖²/4)^{-(d-1)} dw``;
    - ``"gnomonic"``: ``w = (u − c m) / |c|`` with ``dA = |c|^d dw``, one copy per hemisphere with
      half the mass each (an axial density: ``u`` and ``−u`` are equally likely).

    On ``T`` (dimension ``k = d − 1``) ``x = √d w`` follows a centred multivariate Student-t (ν) whose
    precision is ``diag(σ)^{-2}`` restricted to ``T``: quadratic form ``Σ x_i²/σ_i²`` and determinant
    ``det(diag σ^{-2}) · Σ m_i² σ_i²`` (restriction of a matrix to a hyperplane). Mapped back with the
    exact Jacobian and multiplied by ``|S^{d-1}|``, the directional factor is a normalized density
    w.r.t. the uniform probability measure on the sphere, so ``log_prob`` is w.r.t. the same base
    measure ``μ_d`` as `PolarStudentT` and the two are directly comparable. Unlike the bounded
    kernel it carries the ``−Σ log σ_i`` term, and it can be sampled.
    """

    def __init__(self, *args, projection: str = "stereographic", **kwargs) -> None:
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.projection = projection
        super().__init__(*args, **kwargs)

    def _tangent(self, u: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tangent coordinates ``w`` of ``u`` on the unit sphere and ``log |dw/dA|``."""
        k = self.event_shape[0] - 1
        c = (u * m).sum(-1, keepdim=True)
        tiny = torch.finfo(u.dtype).tiny
        if self.projection == "stereographic":
            w = 2.0 * (u - c * m) / (1.0 + c).clamp_min(tiny)
            log_jacobian = k * torch.log1p(w.pow(2).sum(-1) / 4.0)
        else:
            w = (u - c * m) / c.abs().clamp_min(tiny)
            log_jacobian = -(k + 1) * c.abs().clamp_min(tiny).log().squeeze(-1) - math.log(2.0)
        return w, log_jacobian

    def _unit_loc(self) -> torch.Tensor:
        return polar(self.loc)[0]

    def directional_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Normalized log-density of the direction w.r.t. the uniform probability measure on the sphere."""
        d = self.event_shape[0]
        k = d - 1
        u, _ = polar(value)
        m = self._unit_loc()
        w, log_jacobian = self._tangent(u, m)
        q = d * (w / self.scale).pow(2).sum(-1)
        # 1/2 log det of the restricted precision, plus the Jacobian of x = √d w (k dimensions).
        log_det = -self.scale.log().sum(-1) + 0.5 * (m.pow(2) * self.scale.pow(2)).sum(-1).log()
        log_norm = log_det + 0.5 * k * math.log(d) + log_jacobian + log_sphere_area(d)
        if self.gaussian:
            return log_norm - 0.5 * k * math.log(2 * math.pi) - 0.5 * q
        df = self.df
        t_norm = torch.lgamma(0.5 * (df + k)) - torch.lgamma(0.5 * df) - 0.5 * k * (df.log() + math.log(math.pi))
        return log_norm + t_norm - 0.5 * (df + k) * torch.log1p(q / df)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Exact draws: a Student-t on the tangent plane mapped back to the sphere, times ``exp`` of a
        Student-t log-norm."""
        shape = self._extended_shape(sample_shape)
        d = self.event_shape[0]
        with torch.no_grad():
            m = self._unit_loc().expand(shape)
            var = self.scale.pow(2).expand(shape)
            g = torch.randn(shape, dtype=m.dtype, device=m.device) * var.sqrt()
            # A Gaussian conditioned on m·g = 0 has the restricted precision on the tangent plane.
            g = g - var * m * (m * g).sum(-1, keepdim=True) / (m.pow(2) * var).sum(-1, keepdim=True)
            if not self.gaussian:
                chi2 = torch.distributions.Chi2(self.df.expand(shape[:-1])).sample()
                g = g / (chi2 / self.df).sqrt().unsqueeze(-1)
            w = g / math.sqrt(d)
            if self.projection == "stereographic":
                r2 = w.pow(2).sum(-1, keepdim=True) / 4.0
                u = ((1.0 - r2) * m + w) / (1.0 + r2)
            else:
                u = (m + w) / (1.0 + w.pow(2).sum(-1, keepdim=True)).sqrt()
                sign = torch.randint(0, 2, shape[:-1], device=m.device).unsqueeze(-1) * 2 - 1
                u = u * sign
            log_norm = torch.distributions.StudentT(self.radial_df, self.radial_loc, self.radial_scale).sample(sample_shape)
            return u * log_norm.exp().unsqueeze(-1)
