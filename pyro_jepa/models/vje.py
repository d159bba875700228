"""VJE: variational joint embedding of two image views as a Pyro model/guide pair (docs/vje.md).

For views a, b of an image with backbone embeddings h_a, h_b ∈ R^d, and each direction
(c, t) ∈ {(a, b), (b, a)}::

    guide:  z_ct ~ q(z | h_c) = N(μ(h_c), diag σ(h_c)²)              amortized inference network g
    model:  z_ct ~ N(0, I)
            h_t  ~ PolarStudentT(loc=z_ct, scale=σ(h_c), ν;           directional scale = the guide's σ
                                 radial_loc=log‖h_c‖, τ, ν_r)

Every site sits in ``poutine.scale(1 / (2B))``, so ``Trace_ELBO`` estimates the negative batch mean
of the symmetric conditional ELBO ``½[ELBO(b|a) + ELBO(a|b)]``. The posterior parameters are
computed once per batch and handed to both model and guide, so with ``shared_variance`` the
likelihood's scale *is* the guide's scale tensor. No projection head: g plays SimSiam's predictor,
and (by default) the target embedding is detached, SimSiam's stop-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.kl import kl_divergence
from torch import nn

from ..distributions.polar import PolarStudentT, polar
from ..nn import GaussianHead, mlp
from .image_ssl import EVAL_CHUNK, EVAL_VIEW_SEED, ImageSSL, ImageSSLConfig
from .var_jepa import standard_normal, weighted

DIRECTIONS = (("ab", 0, 1), ("ba", 1, 0))


@dataclass
class VJEConfig(ImageSSLConfig):
    """VJE's switches (each one of the open points of docs/vje.md) and sizes.

    ``likelihood``: "student-t" or "gaussian" (the ν → ∞ kernel). ``polar``: the polar subdensity
    (default) or a Cartesian product of 1-D Student-t/Normal densities on h_t itself.
    ``shared_variance``: the likelihood's scale is the posterior's σ (default) or its own head.
    ``stop_gradient``: detach the target embedding. ``score_pairs``: view pairs averaged in
    anomaly scores.
    """

    hidden: int = 512
    df: float = 5.0
    radial_df: float = 5.0
    likelihood: str = "student-t"
    polar: bool = True
    shared_variance: bool = True
    stop_gradient: bool = True
    score_pairs: int = 4

    def __post_init__(self) -> None:
        if self.likelihood not in ("student-t", "gaussian"):
            raise ValueError(f"likelihood must be 'student-t' or 'gaussian', got {self.likelihood!r}")


class Posterior(NamedTuple):
    """q(z | h_c) and the directional likelihood scale derived from the same context."""

    loc: torch.Tensor
    scale: torch.Tensor
    likelihood_scale: torch.Tensor
    log_norm: torch.Tensor


class VJE(ImageSSL):
    """Variational joint embedding, trained by ``pyro.infer.Trace_ELBO`` (see module docstring)."""

    name = "VJE"

    def __init__(self, config: VJEConfig | None = None) -> None:
        config = config or VJEConfig()
        super().__init__(config)
        d = self.dim
        self.inference = nn.Sequential(mlp([d, config.hidden]), nn.GELU())
        self.head = GaussianHead(config.hidden, d)
        # Only exists for the separate-variance ablation.
        self.likelihood_logvar = None if config.shared_variance else nn.Linear(config.hidden, d)
        self.log_radial_scale = nn.Parameter(torch.zeros(()))
        self.elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)

    # -- the program ------------------------------------------------------------------------
    def posterior(self, h: torch.Tensor) -> Posterior:
        hidden = self.inference(h)
        loc, scale = self.head(hidden)
        if self.likelihood_logvar is None:
            lik_scale = scale
        else:
            lik_scale = torch.exp(0.5 * self.likelihood_logvar(hidden).clamp(-12.0, 8.0))
        return Posterior(loc, scale, lik_scale, polar(h)[1])

    def target(self, h: torch.Tensor) -> torch.Tensor:
        return h.detach() if self.config.stop_gradient else h

    def likelihood(self, z: torch.Tensor, context: Posterior) -> dist.Distribution:
        """p(h_t | z, h_c): polar Student-t (default), or the Cartesian ablation."""
        c = self.config
        if c.polar:
            df = z.new_tensor(c.df)
            return PolarStudentT(
                z, context.likelihood_scale, df, context.log_norm, self.log_radial_scale.exp(), z.new_tensor(c.radial_df),
                gaussian=c.likelihood == "gaussian",
            )
        if c.likelihood == "gaussian":
            return dist.Normal(z, context.likelihood_scale).to_event(1)
        return dist.StudentT(z.new_tensor(c.df), z, context.likelihood_scale).to_event(1)

    def model(self, h_a: torch.Tensor, h_b: torch.Tensor, post: tuple[Posterior, Posterior]) -> None:
        h, batch = (h_a, h_b), h_a.shape[0]
        with pyro.plate("pairs", batch, dim=-1), weighted(0.5 / batch):
            for name, c, t in DIRECTIONS:
                z = pyro.sample(f"z_{name}", standard_normal((batch, self.dim), h_a))
                pyro.sample(f"h_{name}", self.likelihood(z, post[c]), obs=self.target(h[t]))

    def guide(self, h_a: torch.Tensor, h_b: torch.Tensor, post: tuple[Posterior, Posterior]) -> None:
        batch = h_a.shape[0]
        with pyro.plate("pairs", batch, dim=-1), weighted(0.5 / batch):
            for name, c, _ in DIRECTIONS:
                pyro.sample(f"z_{name}", dist.Normal(post[c].loc, post[c].scale).to_event(1))

    def program_args(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple:
        """The arguments of `model` and `guide`: posteriors computed once, shared by both."""
        return h_a, h_b, (self.posterior(h_a), self.posterior(h_b))

    def two_view_loss(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, *self.program_args(h_a, h_b))

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def elbo_terms(
        self, h_a: torch.Tensor, h_b: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-pair symmetric terms ``(B,)``: expected log-likelihood (``samples`` draws of z from
        ``generator``, else the global RNG), analytic KL, and ``elbo = loglik - kl``."""
        post = self.program_args(h_a, h_b)[2]
        h = (h_a, h_b)
        loglik = kl = 0.0
        for _, c, t in DIRECTIONS:
            q = dist.Normal(post[c].loc, post[c].scale).to_event(1)
            eps = torch.randn((samples, *h_a.shape), generator=generator).to(h_a.device)
            z = post[c].loc + post[c].scale * eps
            loglik = loglik + 0.5 * self.likelihood(z, post[c]).log_prob(h[t]).mean(0)
            kl = kl + 0.5 * kl_divergence(q, standard_normal(tuple(post[c].loc.shape), h_a))
        return {"loglik": loglik, "kl": kl, "elbo": loglik - kl}

    @torch.no_grad()
    def diagnostics(self, rows: torch.Tensor, step: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(EVAL_VIEW_SEED)
        sums = {"loglik": 0.0, "kl": 0.0, "elbo": 0.0, "mean_variance": 0.0}
        for chunk in rows.split(EVAL_CHUNK):
            h_a, h_b = self.views(chunk, generator)
            for key, value in self.elbo_terms(h_a, h_b, generator=generator).items():
                sums[key] += float(value.sum())
            sums["mean_variance"] += float(self.posterior(h_a).scale.pow(2).mean(-1).sum())
        out = {k: v / len(rows) for k, v in sums.items()}
        out["loss"] = -out["elbo"]
        return out

    @torch.no_grad()
    def anomaly_scores(self, rows: torch.Tensor, pairs: int | None = None, samples: int = 8) -> dict[str, torch.Tensor]:
        """Per-image anomaly scores ``(N,)`` (higher = more anomalous), averaged over ``pairs``
        seeded view pairs with ``samples`` draws of z each: ``elbo`` is the negative symmetric
        ELBO, ``loglik`` its negative expected log-likelihood term alone."""
        pairs = pairs or self.config.score_pairs
        generator = torch.Generator().manual_seed(EVAL_VIEW_SEED)
        out = {"elbo": [], "loglik": []}
        for chunk in rows.split(EVAL_CHUNK):
            total = {key: torch.zeros(len(chunk), device=chunk.device) for key in out}
            for _ in range(pairs):
                terms = self.elbo_terms(*self.views(chunk, generator), samples=samples, generator=generator)
                for key in out:
                    total[key] -= terms[key]
            for key in out:
                out[key].append(total[key] / pairs)
        return {key: torch.cat(value) for key, value in out.items()}

    @torch.no_grad()
    def uncertainty(self, rows: torch.Tensor) -> torch.Tensor:
        """Posterior standard deviations ``(N, d)`` of z given the un-augmented image as context."""
        return self.posterior(self.embed(rows)).scale
