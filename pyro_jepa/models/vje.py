"""VJE: variational joint embedding of two image views as a Pyro model/guide pair (docs/vje.md).

For views a, b of an image with backbone embeddings h_a, h_b ∈ R^d, and each direction
(c, t) ∈ {(a, b), (b, a)}::

    guide:  z_ct ~ q(z | h_c) = N(μ(h_c), diag σ(h_c)²)              amortized inference network g
    model:  z_ct ~ p_ψ(z)                                            N(0, I), or a learned mixture / VampPrior
            h_t  ~ PolarStudentT(loc=z_ct, scale=σ(h_c), ν;           directional scale = the guide's σ
                                 radial_loc=log‖h_c‖, τ, ν_r)        (bounded kernel or normalized tangent density)

Every site sits in ``poutine.scale(1 / (2B))``, so ``Trace_ELBO`` estimates the negative batch mean
of the symmetric conditional ELBO ``½[ELBO(b|a) + ELBO(a|b)]`` (the z sites also carry β =
``kl_weight``, 0.7 by default, 1 being the ELBO itself; ``particles`` draws of z, 32 by default).
The posterior parameters are computed once per batch and handed to both model and guide, so with
``shared_variance`` the likelihood's scale *is* the guide's scale tensor. No projection head by
default: g plays SimSiam's predictor, and (by default) the target embedding is detached, SimSiam's
stop-gradient.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import kl_to_mixture_bound
from ..distributions.polar import PROJECTIONS, PolarStudentT, TangentPolarStudentT, polar
from ..nn import GaussianHead, mlp
from .image_baselines import bn_mlp
from .image_ssl import EVAL_CHUNK, EVAL_VIEW_SEED, ImageSSL, ImageSSLConfig
from .var_jepa import standard_normal, weighted

DIRECTIONS = (("ab", 0, 1), ("ba", 1, 0))
DIRECTIONAL = ("bounded", *PROJECTIONS)
PRIORS = ("standard", "mixture", "vamp")
# Per-image scores of `VJE.anomaly_scores`, all oriented so that higher = more anomalous.
SCORES = ("neg_elbo", "neg_loglik", "kl", "typicality", "kl_training", "kl_training_gaussian", "neg_evidence", "elbo_two_sided", "mean_sigma", "entropy")
# Entries of one (test chunk × reference × d) block in `VJE.evidence`: bounds its memory.
EVIDENCE_BLOCK = 2**24
# Ridge of `direction_entropy`'s covariance: keeps the log-determinant finite when a batch has fewer
# images than dimensions or the directions collapse.
DIRECTION_ENTROPY_EPS = 1e-4


@dataclass
class VJEConfig(ImageSSLConfig):
    """VJE's switches (each one of the open points of docs/vje.md) and sizes.

    ``likelihood``: "student-t" or "gaussian" (the ν → ∞ kernel). ``polar``: the polar subdensity
    (default) or a Cartesian product of 1-D Student-t/Normal densities on h_t itself.
    ``shared_variance``: the likelihood's scale is the posterior's σ (default) or its own head.
    ``stop_gradient``: detach the target embedding. ``score_pairs``: view pairs averaged in
    anomaly scores. ``directional``: the paper's bounded kernel ("bounded", a subdensity) or an
    exactly normalized density on a tangent-plane projection ("stereographic", "gnomonic";
    `TangentPolarStudentT`). ``prior``: p(z) = N(0, I) ("standard"), a learned mixture of
    ``prior_components`` diagonal Gaussians ("mixture"), or a VampPrior, the mixture of the
    posteriors of ``prior_components`` learned pseudo-embeddings ("vamp"). ``mean_on_sphere``: the
    posterior mean is ``√d`` times a unit vector (where N(0, I) puts its mass), so neither the
    prior nor a direction-only likelihood can shrink it until the noise σ·ε swamps its direction.
    ``kl_weight``: β on the KL term (both z sites scaled in model and guide, as in β-VAE); the paper
    leaves any β open. Below 1 the prior's pull on μ and σ weakens and the posterior sharpens. The
    default 0.7, with ``particles=32``, gave the best likelihood-based anomaly scores on both image
    benchmarks at the CPU presets' budget (docs/results/vje.md §4e); β = 1 is the plain ELBO. The scores keep the unweighted ELBO.
    ``projector_dim``: 0 (default) models the backbone embeddings h themselves, the paper's
    "without auxiliary projection heads"; above 0 the program models ``e = projector(h)``, SimSiam's
    3-layer BN projector of that width, while probes and feature scores still read h.
    ``aggregate_kl``: γ ≥ 0, extra weight on KL(q(z) || p(z)) for the batch's aggregate posterior q(z),
    moment-matched by a Gaussian (β-TCVAE's split of the KL; standard prior only). Measured on CIFAR-10
    it pulls the posteriors towards the prior and lowers the k-NN accuracy (docs/results/vje.md §4g); 0 is off.
    ``marginal_entropy``: γ ≥ 0, weight on the Gaussian maximum-entropy estimate of the marginal entropy of the
    modelled embeddings' directions, ½ log det(Cov_batch(√d·u) + εI) per pair (`direction_entropy`), on the
    online embeddings of both views. The conditional ELBO bounds −H(h_t | h_c) only; γ = 1 adds the marginal
    H(h_t) at the weight the mutual information I(h_c; h_t) = H(h_t) − H(h_t | h_c) gives it. It acts like
    VICReg's covariance term (and is, in that sense, a decorrelation term the paper does not have); 0 is off.
    ``particles``: draws of z per pair in the training ELBO (``Trace_ELBO``'s vectorized
    ``num_particles``); more lower the gradient's variance at the same number of optimizer steps
    (32 make a step about 1.7 × as long as one on the Fashion-MNIST CPU preset, §4e).
    ``target_momentum``: 0 (default) observes the online network's own embedding of the other view,
    detached (SimSiam's stop-gradient); in (0, 1) observes a *target network's* embedding instead,
    an exponential moving average of backbone and projector (BYOL's; the paper leaves stop-gradient
    and EMA open) whose momentum rises from this value to 1 by a cosine schedule over the run. Training
    only: held-out losses, scores and probes read the online network.
    ``likelihood_scale``: 0 (default) learns the directional likelihood's scale (the posterior's σ, or its
    own head without ``shared_variance``); above 0 holds it fixed at that σ for every feature and input,
    so the posterior's variance no longer sets how far apart two views may lie (an ablation of the shared
    variance; docs/results/vje.md §4k, CIFAR-10 seed 0).
    """

    hidden: int = 512
    df: float = 5.0
    radial_df: float = 5.0
    likelihood: str = "student-t"
    polar: bool = True
    shared_variance: bool = True
    stop_gradient: bool = True
    score_pairs: int = 4
    directional: str = "stereographic"
    prior: str = "standard"
    prior_components: int = 16
    mean_on_sphere: bool = False
    kl_weight: float = 0.7
    projector_dim: int = 0
    particles: int = 32
    aggregate_kl: float = 0.0
    marginal_entropy: float = 0.0
    target_momentum: float = 0.0
    likelihood_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.likelihood not in ("student-t", "gaussian"):
            raise ValueError(f"likelihood must be 'student-t' or 'gaussian', got {self.likelihood!r}")
        if self.directional not in DIRECTIONAL:
            raise ValueError(f"directional must be one of {DIRECTIONAL}, got {self.directional!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if not self.kl_weight > 0:
            raise ValueError(f"kl_weight must be > 0, got {self.kl_weight}")
        if self.particles < 1:
            raise ValueError(f"particles must be >= 1, got {self.particles}")
        if self.projector_dim < 0:
            raise ValueError(f"projector_dim must be >= 0 (0: no projector), got {self.projector_dim}")
        if self.prior_components < 1:
            raise ValueError(f"prior_components must be >= 1, got {self.prior_components}")
        if self.aggregate_kl < 0 or (self.aggregate_kl > 0 and self.prior != "standard"):
            raise ValueError(f"aggregate_kl must be >= 0, and needs prior='standard'; got {self.aggregate_kl} with {self.prior!r}")
        if not self.marginal_entropy >= 0:
            raise ValueError(f"marginal_entropy must be >= 0 (0: off), got {self.marginal_entropy}")
        if not self.likelihood_scale >= 0 or (self.likelihood_scale > 0 and not self.shared_variance):
            raise ValueError(f"likelihood_scale must be >= 0 (0: learned), and a fixed scale excludes shared_variance=False "
                             f"(its own head); got {self.likelihood_scale} with shared_variance={self.shared_variance}")
        if not 0 <= self.target_momentum < 1 or (self.target_momentum > 0 and not self.stop_gradient):
            raise ValueError(f"target_momentum must be in [0, 1) (0: no target network), and needs stop_gradient; "
                             f"got {self.target_momentum} with stop_gradient={self.stop_gradient}")


def aggregate_moments(loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``m`` and covariance ``C`` of the mixture (1/B) Σ_b N(loc_b, diag(scale_b²)): the mean of
    the locs, and their covariance plus the mean of the diagonal variances."""
    mean = loc.mean(0)
    centred = loc - mean
    return mean, torch.diag(scale.pow(2).mean(0)) + centred.T @ centred / len(loc)


def gaussian_aggregate_kl(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(m, C) || N(0, I)) for the Gaussian with the `aggregate_moments` of the batch's posteriors."""
    mean, cov = aggregate_moments(loc, scale)
    return 0.5 * (cov.diagonal().sum() + mean.pow(2).sum() - loc.shape[1] - torch.linalg.slogdet(cov)[1])


def direction_entropy(h: torch.Tensor, eps: float = DIRECTION_ENTROPY_EPS) -> torch.Tensor:
    """½ log det(C + εI) for the batch covariance C of the directions √d·h/‖h‖ of ``h (B, d)``: the
    entropy of the Gaussian with the directions' moments, less its constant (d/2) log(2πe). At most
    (d/2) log(1 + ε) ≈ 0, for isotropic directions (C = I); down to (d/2) log ε as they collapse onto one."""
    direction = math.sqrt(h.shape[-1]) * polar(h)[0]
    centred = direction - direction.mean(0)
    cov = centred.T @ centred / len(h)
    return 0.5 * torch.linalg.slogdet(cov + eps * torch.eye(h.shape[-1], dtype=h.dtype, device=h.device))[1]


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
        self.projector = bn_mlp([self.dim, *[config.projector_dim] * 3], last_bn=True) if config.projector_dim else nn.Identity()
        # The latent's dimension: the modelled embedding's, backbone or projector output.
        self.latent_dim = d = config.projector_dim or self.dim
        self.inference = nn.Sequential(mlp([d, config.hidden]), nn.GELU())
        self.head = GaussianHead(config.hidden, d)
        # Only exists for the separate-variance ablation.
        self.likelihood_logvar = None if config.shared_variance else nn.Linear(config.hidden, d)
        self.log_radial_scale = nn.Parameter(torch.zeros(()))
        k = config.prior_components
        if config.prior == "mixture":
            # Means start near 0 with unit scales, so the mixture starts close to N(0, I); the
            # small spread breaks the symmetry between components.
            self.prior_logits = nn.Parameter(torch.zeros(k))
            self.prior_loc = nn.Parameter(0.1 * torch.randn(k, d))
            self.prior_log_scale = nn.Parameter(torch.zeros(k, d))
        elif config.prior == "vamp":
            # Pseudo-embeddings in the modelled space: the backbone's non-negative post-ReLU output, or the projector's.
            self.pseudo_embeddings = nn.Parameter(torch.rand(k, d))
        self.elbo = pyro.infer.Trace_ELBO(num_particles=config.particles, vectorize_particles=config.particles > 1, max_plate_nesting=1)
        # Built last, as a copy: the online network's initial weights do not depend on whether it exists.
        self.target_network = None
        if config.target_momentum:
            self.target_network = copy.deepcopy(self.online_network()).requires_grad_(False)

    # -- the program ------------------------------------------------------------------------
    def posterior(self, h: torch.Tensor) -> Posterior:
        hidden = self.inference(h)
        loc, scale = self.head(hidden)
        if self.config.mean_on_sphere:
            loc = math.sqrt(self.latent_dim) * F.normalize(loc, dim=-1)
        if self.config.likelihood_scale > 0:
            lik_scale = torch.full_like(scale, self.config.likelihood_scale)
        elif self.likelihood_logvar is None:
            lik_scale = scale
        else:
            lik_scale = torch.exp(0.5 * self.likelihood_logvar(hidden).clamp(-12.0, 8.0))
        return Posterior(loc, scale, lik_scale, polar(h)[1])

    def views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The modelled embeddings ``(B, latent_dim)`` of two random views of each image."""
        return tuple(self.projector(h) for h in super().views(images, generator))

    def observed(self, rows: torch.Tensor) -> torch.Tensor:
        """The modelled embeddings of the un-augmented images (`embed`, then the projector if any)."""
        return self.projector(self.embed(rows))

    def clean_posterior(self, rows: torch.Tensor) -> Posterior:
        """q(z | h) with the un-augmented images as context."""
        return self.posterior(self.observed(rows))

    def target(self, h: torch.Tensor) -> torch.Tensor:
        return h.detach() if self.config.stop_gradient else h

    def prior(self, batch: int, like: torch.Tensor) -> dist.Distribution:
        """p_ψ(z) with batch shape ``(batch,)`` and event ``(d,)``."""
        c = self.config
        if c.prior == "standard":
            return standard_normal((batch, self.latent_dim), like)
        if c.prior == "mixture":
            logits, loc, scale = self.prior_logits, self.prior_loc, self.prior_log_scale.clamp(-6.0, 4.0).exp()
        else:
            loc, scale = self.posterior(self.pseudo_embeddings)[:2]
            logits = loc.new_zeros(c.prior_components)
        k, d = loc.shape
        components = dist.Normal(loc.expand(batch, k, d), scale.expand(batch, k, d)).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits.expand(batch, k)), components)

    def likelihood(self, z: torch.Tensor, context: Posterior) -> dist.Distribution:
        """p(h_t | z, h_c): polar Student-t (bounded kernel or normalized), or the Cartesian ablation."""
        c = self.config
        if c.polar:
            args = (z, context.likelihood_scale, z.new_tensor(c.df), context.log_norm, self.log_radial_scale.exp(), z.new_tensor(c.radial_df))
            if c.directional == "bounded":
                return PolarStudentT(*args, gaussian=c.likelihood == "gaussian")
            return TangentPolarStudentT(*args, gaussian=c.likelihood == "gaussian", projection=c.directional)
        if c.likelihood == "gaussian":
            return dist.Normal(z, context.likelihood_scale).to_event(1)
        return dist.StudentT(z.new_tensor(c.df), z, context.likelihood_scale).to_event(1)

    def model(self, h_a: torch.Tensor, h_b: torch.Tensor, post: tuple[Posterior, Posterior], targets: tuple | None = None) -> None:
        """``targets``: the observed embeddings of views a and b (default: ``h_a, h_b`` through `target`)."""
        h, batch = targets or (self.target(h_a), self.target(h_b)), h_a.shape[0]
        with pyro.plate("pairs", batch, dim=-1), weighted(0.5 / batch):
            for name, c, t in DIRECTIONS:
                with weighted(self.config.kl_weight):
                    z = pyro.sample(f"z_{name}", self.prior(batch, h_a))
                pyro.sample(f"h_{name}", self.likelihood(z, post[c]), obs=h[t])
        if self.config.aggregate_kl > 0:
            # The batch mean of the per-pair KL is I(h; z) + KL(q(z) || p(z)); this adds weight to the second part
            # alone (as β-TCVAE does), with the aggregate posterior q(z) moment-matched by a Gaussian.
            agg = 0.5 * (gaussian_aggregate_kl(post[0].loc, post[0].scale) + gaussian_aggregate_kl(post[1].loc, post[1].scale))
            pyro.factor("aggregate_kl", -self.config.aggregate_kl * agg)
        if self.config.marginal_entropy > 0:
            entropy = 0.5 * (direction_entropy(h_a) + direction_entropy(h_b))
            pyro.factor("marginal_entropy", self.config.marginal_entropy * entropy)

    def guide(self, h_a: torch.Tensor, h_b: torch.Tensor, post: tuple[Posterior, Posterior], targets: tuple | None = None) -> None:
        batch = h_a.shape[0]
        with pyro.plate("pairs", batch, dim=-1), weighted(0.5 / batch):
            for name, c, _ in DIRECTIONS:
                with weighted(self.config.kl_weight):
                    pyro.sample(f"z_{name}", dist.Normal(post[c].loc, post[c].scale).to_event(1))

    def program_args(self, h_a: torch.Tensor, h_b: torch.Tensor) -> tuple:
        """The arguments of `model` and `guide`: posteriors computed once, shared by both."""
        return h_a, h_b, (self.posterior(h_a), self.posterior(h_b))

    def two_view_loss(self, h_a: torch.Tensor, h_b: torch.Tensor, targets: tuple | None = None) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, *self.program_args(h_a, h_b), targets)

    def online_network(self) -> nn.Sequential:
        """Backbone then projector: augmented images to the modelled embeddings (what `target_network` averages)."""
        return nn.Sequential(self.backbone, self.projector)

    def loss(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        if self.target_network is None:
            return super().loss(rows, step)
        x_a, x_b = self.augment(rows), self.augment(rows)
        with torch.no_grad():
            targets = (self.target_network(x_a), self.target_network(x_b))
        online = self.online_network()
        return self.two_view_loss(online(x_a), online(x_b), targets)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        if self.target_network is None:
            return
        start = self.config.target_momentum
        momentum = 1 - (1 - start) * (math.cos(math.pi * min(step / max(total_steps, 1), 1.0)) + 1) / 2
        online = self.online_network()
        for target, param in zip(self.target_network.parameters(), online.parameters()):
            target.lerp_(param, 1.0 - momentum)
        for target, buffer in zip(self.target_network.buffers(), online.buffers()):
            target.copy_(buffer)

    # -- evaluation -------------------------------------------------------------------------
    def _sample_z(self, q: Posterior, samples: int, generator: torch.Generator | None) -> torch.Tensor:
        eps = torch.randn((samples, *q.loc.shape), generator=generator).to(q.loc.device)
        return q.loc + q.scale * eps

    def cross_entropy(self, q: Posterior, samples: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
        """``−E_q[log p_ψ(z)]`` per row ``(B,)`` by Monte Carlo: how atypical the posterior is under
        the (learned) prior, i.e. the KL without the posterior's entropy."""
        z = self._sample_z(q, samples, generator)
        return -self.prior(q.loc.shape[0], q.loc).log_prob(z).mean(0)

    @staticmethod
    def entropy(q: Posterior) -> torch.Tensor:
        """Differential entropy of q(z | h) per row ``(B,)``."""
        return dist.Normal(q.loc, q.scale).to_event(1).entropy()

    @torch.no_grad()
    def elbo_terms(
        self, h_a: torch.Tensor, h_b: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-pair symmetric terms ``(B,)``: expected log-likelihood and prior cross-entropy
        (``samples`` draws of z from ``generator``, else the global RNG), the posterior's entropy,
        ``kl = cross_entropy − entropy`` and ``elbo = loglik − kl``."""
        post = self.program_args(h_a, h_b)[2]
        h = (h_a, h_b)
        loglik = cross = ent = 0.0
        for _, c, t in DIRECTIONS:
            z = self._sample_z(post[c], samples, generator)
            loglik = loglik + 0.5 * self.likelihood(z, post[c]).log_prob(h[t]).mean(0)
            cross = cross - 0.5 * self.prior(h_a.shape[0], h_a).log_prob(z).mean(0)
            ent = ent + 0.5 * self.entropy(post[c])
        kl = cross - ent
        return {"loglik": loglik, "cross_entropy": cross, "entropy": ent, "kl": kl, "elbo": loglik - kl}

    @torch.no_grad()
    def diagnostics(self, rows: torch.Tensor, step: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(EVAL_VIEW_SEED)
        sums = {"loglik": 0.0, "kl": 0.0, "elbo": 0.0, "mean_variance": 0.0}
        for chunk in rows.split(EVAL_CHUNK):
            h_a, h_b = self.views(chunk, generator)
            terms = self.elbo_terms(h_a, h_b, generator=generator)
            for key in ("loglik", "kl", "elbo"):
                sums[key] += float(terms[key].sum())
            sums["mean_variance"] += float(self.posterior(h_a).scale.pow(2).mean(-1).sum())
        out = {k: v / len(rows) for k, v in sums.items()}
        out["loss"] = -out["elbo"]
        return out

    @torch.no_grad()
    def evidence(self, reference: torch.Tensor, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``log p(h)`` ``(N,)`` of the un-augmented ``rows`` under VJE's likelihood with the aggregate
        posterior of the ``reference`` images as prior (a VampPrior whose pseudo-inputs are the
        training images): ``log (1/K) Σ_k p(h | z_k, h_k)`` with one draw ``z_k ~ q(z | h_k)`` per
        reference image, whose σ and log-norm are the context. This integrates the target likelihood
        over the training posteriors: high where training images predict h, whatever its own posterior."""
        post = self.clean_posterior(reference)
        z = self._sample_z(post, 1, generator)[0].unsqueeze(0)  # (1, K, d): broadcast over test rows
        context = Posterior(*(t.unsqueeze(0) for t in post))
        h = self.observed(rows)
        chunk = max(1, EVIDENCE_BLOCK // (z.shape[1] * self.latent_dim))
        log_k = math.log(z.shape[1])
        return torch.cat([self.likelihood(z, context).log_prob(c.unsqueeze(1)).logsumexp(-1) - log_k for c in h.split(chunk)])

    def aggregate_prior(self, reference: Posterior) -> dist.Distribution:
        """The aggregate posterior ``p_agg(z) = (1/K) Σ_k q(z | h_k)`` of ``K`` reference images, event
        ``(d,)``: the prior that maximizes the ELBO averaged over those images (Hoffman & Johnson, 2016,
        "ELBO surgery"), i.e. the best ``p_ψ`` the model could have learned from its training data."""
        k = reference.loc.shape[0]
        components = dist.Normal(reference.loc, reference.scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=reference.loc.new_zeros(k)), components)

    @torch.no_grad()
    def training_kl(self, reference: torch.Tensor, rows: torch.Tensor, part: str = "both") -> torch.Tensor:
        """``KL(q(z | h) || p_agg)`` ``(N,)`` of the un-augmented ``rows`` against the `aggregate_prior` of
        the ``reference`` images, in closed form as its Jensen upper bound
        (`pyro_jepa.distributions.kl_to_mixture_bound`): the KL term of the ELBO under the prior fitted
        to the training images. Unlike `evidence` it compares posteriors, not one noisy draw per
        reference image with the target's direction: the posterior noise σ·ε is far longer than μ
        (docs/results/vje.md), so a single draw's direction is mostly noise, while the KL between two
        Gaussians is exact in their means and scales. ``part``: the bound's location or scale term alone
        (see `kl_to_mixture_bound`), a diagnostic."""
        ref = self.clean_posterior(reference)
        post = self.clean_posterior(rows)
        return kl_to_mixture_bound(post.loc, post.scale, ref.loc, ref.scale, part=part)

    @staticmethod
    def gaussian_prior(reference: Posterior) -> dist.MultivariateNormal:
        """The full-covariance Gaussian with the mean and covariance of the `aggregate_prior` of the
        ``reference`` posteriors, ``cov = mean_k diag σ_k² + cov_k(μ_k)`` (float64): among Gaussian
        priors the one that maximizes the reference images' average ELBO, since minimizing
        ``Σ_k KL(q_k ‖ p)`` over Gaussians ``p`` is fitting ``p`` to ``p_agg`` by moment matching."""
        mean, cov = aggregate_moments(reference.loc.double(), reference.scale.double())
        return dist.MultivariateNormal(mean, covariance_matrix=cov)

    @torch.no_grad()
    def training_kl_gaussian(self, reference: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``KL(q(z | h) ‖ N(m, S))`` ``(N,)``, exact, against the `gaussian_prior` of the
        ``reference`` images: the ELBO's KL term under the best Gaussian prior. Where
        `training_kl` is a kernel density over the training posteriors (bandwidth σ_k), this is one
        smooth Gaussian: a Mahalanobis distance of μ plus a term for how σ differs from the data's spread."""
        prior = self.gaussian_prior(self.clean_posterior(reference))
        post = self.clean_posterior(rows)
        q = dist.MultivariateNormal(post.loc.double(), scale_tril=torch.diag_embed(post.scale.double()))
        return torch.distributions.kl_divergence(q, prior).float()

    @torch.no_grad()
    def anomaly_scores(
        self,
        rows: torch.Tensor,
        reference: torch.Tensor | None = None,
        validation: torch.Tensor | None = None,
        pairs: int | None = None,
        samples: int = 8,
    ) -> dict[str, torch.Tensor]:
        """Per-image scores ``(N,)`` named in `SCORES`, higher = more anomalous.

        On ``pairs`` seeded view pairs (``samples`` draws of z each), averaged: ``neg_elbo`` (the
        negative symmetric ELBO), ``neg_loglik`` (its expected log-likelihood term) and ``kl``. On the
        un-augmented image's posterior q(z | h): ``typicality`` = ``−E_q[log p_ψ(z)]``, and the
        posterior's spread, ``mean_sigma`` and ``entropy``. With ``reference`` (normal training
        images) also ``kl_training`` = `training_kl`, ``kl_training_gaussian`` =
        `training_kl_gaussian` and ``neg_evidence`` = ``−`` `evidence`. With
        ``validation`` (held-out normal images) also ``elbo_two_sided`` = ``|−ELBO − mean of −ELBO on validation|``, the typical-set test of
        Nalisnick et al. (2019): an input whose ELBO is atypically *high* is flagged too.
        """
        pairs = pairs or self.config.score_pairs
        generator = torch.Generator().manual_seed(EVAL_VIEW_SEED)
        out: dict[str, list[torch.Tensor]] = {key: [] for key in SCORES}
        for chunk in rows.split(EVAL_CHUNK):
            total = {key: torch.zeros(len(chunk), device=chunk.device) for key in ("elbo", "loglik", "kl")}
            for _ in range(pairs):
                terms = self.elbo_terms(*self.views(chunk, generator), samples=samples, generator=generator)
                for key in total:
                    total[key] += terms[key] / pairs
            out["neg_elbo"].append(-total["elbo"])
            out["neg_loglik"].append(-total["loglik"])
            out["kl"].append(total["kl"])
            clean = self.clean_posterior(chunk)
            out["typicality"].append(self.cross_entropy(clean, samples, generator))
            out["mean_sigma"].append(clean.scale.mean(-1))
            out["entropy"].append(self.entropy(clean))
        scores = {key: torch.cat(value) for key, value in out.items() if value}
        if reference is not None:
            scores["kl_training"] = self.training_kl(reference, rows)
            scores["kl_training_gaussian"] = self.training_kl_gaussian(reference, rows)
            scores["neg_evidence"] = -self.evidence(reference, rows, generator)
        if validation is not None:
            typical = self.anomaly_scores(validation, pairs=pairs, samples=samples)["neg_elbo"].mean()
            scores["elbo_two_sided"] = (scores["neg_elbo"] - typical).abs()
        return scores

    @torch.no_grad()
    def posterior_mean(self, rows: torch.Tensor) -> torch.Tensor:
        """Posterior means μ ``(N, d)`` of z given the un-augmented image as context: the readout the
        paper leaves open beside the backbone features (docs/vje.md)."""
        return torch.cat([self.clean_posterior(chunk).loc for chunk in rows.split(EVAL_CHUNK)])

    @torch.no_grad()
    def uncertainty(self, rows: torch.Tensor) -> torch.Tensor:
        """Posterior standard deviations ``(N, d)`` of z given the un-augmented image as context."""
        return self.clean_posterior(rows).scale
