"""VJE's directional likelihoods: the normalized tangent-plane density and subclasses inside Pyro's ELBO."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_jepa.distributions import PolarStudentT, TangentPolarStudentT
from pyro_jepa.distributions.polar import PROJECTIONS


def uniform_sphere(n: int, d: int, seed: int) -> torch.Tensor:
    u = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return u / u.norm(dim=-1, keepdim=True)


def tangent_t(d: int, projection: str, gaussian: bool, scale: float = 1.0, seed: int = 0) -> TangentPolarStudentT:
    g = torch.Generator().manual_seed(seed)
    loc = 2.0 * torch.randn(d, generator=g, dtype=torch.float64)  # off the sphere: only its direction counts
    scales = scale * (0.5 + torch.rand(d, generator=g, dtype=torch.float64))  # anisotropic
    return TangentPolarStudentT(
        loc, scales, torch.tensor(3.0, dtype=torch.float64), 0.3, 0.5, 5.0,
        gaussian=gaussian, projection=projection, validate_args=True,
    )


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_directional_density_is_normalized_on_the_sphere(projection, gaussian, d, scale):
    """Monte Carlo over the uniform probability measure on S^{d-1}: the directional factor integrates to 1."""
    p = tangent_t(d, projection, gaussian, scale, seed=d)
    density = p.directional_log_prob(uniform_sphere(200_000, d, seed=10 + d)).exp()
    mass, stderr = float(density.mean()), float(density.std()) / math.sqrt(len(density))
    assert abs(mass - 1.0) < 4 * stderr + 2e-3, (mass, stderr)


def test_bounded_kernel_is_not_normalized_but_the_tangent_density_is():
    """The paper's kernel loses mass as σ shrinks; the normalized density compensates with −Σ log σ."""
    u = uniform_sphere(200_000, 3, seed=1)
    for scale in (0.5, 1.0):
        args = (torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.full((3,), scale, dtype=torch.float64), 3.0, 0.0, 1.0, 3.0)
        assert PolarStudentT(*args).directional_log_prob(u).exp().mean() < 0.5
        assert TangentPolarStudentT(*args).directional_log_prob(u).exp().mean() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("gaussian", [False, True])
def test_samples_follow_the_density(projection, gaussian):
    """Moments of exact samples match density-weighted Monte Carlo over the uniform sphere."""
    p = tangent_t(3, projection, gaussian, scale=0.8, seed=3)
    u = uniform_sphere(200_000, 3, seed=4)
    weights = p.directional_log_prob(u).exp()

    def moments(v: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        f = torch.stack([v[:, 0], v[:, 1] ** 2, v[:, 1] * v[:, 2]], -1)
        return f.mean(0) if w is None else (f * w[:, None]).mean(0)

    torch.manual_seed(0)
    x = p.sample((100_000,))
    assert x.shape == (100_000, 3)
    torch.testing.assert_close(moments(x / x.norm(dim=-1, keepdim=True)), moments(u, weights), atol=0.01, rtol=0)
    assert float(x.norm(dim=-1).log().median()) == pytest.approx(0.3, abs=0.01)  # radial Student-t located at 0.3


def test_rejects_unknown_projection():
    with pytest.raises(ValueError, match="projection"):
        TangentPolarStudentT(torch.ones(3), torch.ones(3), 3.0, 0.0, 1.0, 3.0, projection="mercator")


def test_finite_in_high_dimension_and_at_the_antipode():
    d = 512
    loc = torch.randn(2, d, requires_grad=True)
    scale = torch.full((2, d), 0.05, requires_grad=True)
    value = torch.stack([-loc[0].detach(), torch.randn(d)])  # row 0 is the stereographic pole
    for projection in PROJECTIONS:
        lp = TangentPolarStudentT(loc, scale, 5.0, torch.zeros(2), 1.0, 5.0, projection=projection).log_prob(value)
        assert torch.isfinite(lp).all()
        lp.sum().backward()
        assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()


class HalfKernel(PolarStudentT):
    """A user's variant that only overrides the directional factor."""

    def directional_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return 0.5 * super().directional_log_prob(value)


@pytest.mark.parametrize(
    "make",
    [
        lambda *a: TangentPolarStudentT(*a, projection="gnomonic"),
        lambda *a: TangentPolarStudentT(*a, gaussian=True),
        lambda *a: HalfKernel(*a),
    ],
    ids=["tangent-gnomonic", "tangent-gaussian", "user-subclass"],
)
def test_subclasses_survive_expand_and_trace_elbo(make):
    """Pyro expands observed sites inside a plate; a subclass must keep its class, settings and log_prob."""
    d, batch = 4, 6
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(d, generator=g), 0.5 + torch.rand(d, generator=g)
    obs = torch.randn(batch, d, generator=g)
    p = make(loc, scale, torch.tensor(3.0), torch.tensor(0.1), torch.tensor(0.7), torch.tensor(4.0))

    expanded = p.expand((batch,))
    assert type(expanded) is type(p) and expanded.batch_shape == (batch,)
    assert getattr(expanded, "projection", None) == getattr(p, "projection", None) and expanded.gaussian == p.gaussian
    torch.testing.assert_close(expanded.log_prob(obs), p.log_prob(obs))

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", batch):
            pyro.sample("h", make(loc + z, scale, torch.tensor(3.0), torch.tensor(0.1), torch.tensor(0.7), torch.tensor(4.0)), obs=obs)

    def guide():
        pyro.sample("z", dist.Normal(0.3, 0.2))

    pyro.set_rng_seed(1)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide)
    pyro.set_rng_seed(1)
    z = 0.3 + 0.2 * torch.randn(())
    expected = -(
        dist.Normal(0.0, 1.0).log_prob(z)
        + make(loc + z, scale, torch.tensor(3.0), torch.tensor(0.1), torch.tensor(0.7), torch.tensor(4.0)).log_prob(obs).sum()
        - dist.Normal(0.3, 0.2).log_prob(z)
    )
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, -(dist.Normal(0.0, 1.0).log_prob(z) + PolarStudentT(
        loc + z, scale, torch.tensor(3.0), torch.tensor(0.1), torch.tensor(0.7), torch.tensor(4.0)).log_prob(obs).sum()
        - dist.Normal(0.3, 0.2).log_prob(z)))  # the base class's log_prob would give another value
