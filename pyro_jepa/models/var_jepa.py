"""The generic Var-JEPA program (Gögl & Yau, arXiv 2603.20111, Sec. 3) and its MLP instance.

Generative model (Eq. 4-5)::

    s_x ~ N(0, I)                      context latent
    z   ~ N(0, I)                      auxiliary latent
    s_y ~ p_theta(s_y | s_x, z)        learned conditional prior  = the JEPA predictor
    x   ~ p_theta(x | s_x)             context decoder
    y   ~ p_theta(y | s_y)             target decoder

Guide (Eq. 6-7)::

    q(s_x | x) q(z | s_x) q(s_y | s_x, z, y)       the encoders = amortized posteriors

`VarJEPA` writes this program once. An instance supplies six hooks that return Pyro
distributions (their shapes, event dims and masks are the instance's business); the five loss
weights enter through `pyro.poutine.scale`, identically in model and guide, so ``Trace_ELBO`` and
``TraceMeanField_ELBO`` both estimate

    L = a_rec L_rec + a_gen L_gen + a_sx KL_sx + a_z KL_z + a_sy KL_sy      (Eq. 10)

with each term normalized as the instance says (`term_norms`) and averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from torch import nn

from ..infer import make_elbo
from ..nn import GaussianHead, mlp
from .base import SSLMethod

TERMS = ("rec", "gen", "kl_s_x", "kl_z", "kl_s_y")
# Pyro site carrying each term of Eq. 10.
SITE_OF_TERM = {"rec": "x", "gen": "y", "kl_s_x": "s_x", "kl_z": "z", "kl_s_y": "s_y"}


@dataclass
class LossWeights:
    """The five weights of Eq. 10 and the linear KL warm-up (App. D.3.1).

    ``anneal_*`` are warm-up lengths in optimizer steps: ``a_kl(t) = min(t / T, 1) * a_kl_final``.
    A length of 0 means no warm-up. Reconstruction and generation weights are not annealed.
    """

    rec: float = 1.0
    gen: float = 1.0
    kl_s_x: float = 1.0
    kl_z: float = 1.0
    kl_s_y: float = 1.0
    anneal_s_x: int = 0
    anneal_z: int = 0
    anneal_s_y: int = 0

    def at(self, step: int) -> dict[str, float]:
        """The weights in force at optimizer step ``step``."""

        def ramp(length: int) -> float:
            return 1.0 if length <= 0 else min(step / length, 1.0)

        return {
            "rec": self.rec,
            "gen": self.gen,
            "kl_s_x": self.kl_s_x * ramp(self.anneal_s_x),
            "kl_z": self.kl_z * ramp(self.anneal_z),
            "kl_s_y": self.kl_s_y * ramp(self.anneal_s_y),
        }

    @property
    def warmup_steps(self) -> int:
        """The step from which every KL weight has its final value."""
        return max(self.anneal_s_x, self.anneal_z, self.anneal_s_y, 0)

    def to_dict(self) -> dict:
        return asdict(self)


UNIT_WEIGHTS = {term: 1.0 for term in TERMS}


def weighted(scale: float):
    """`poutine.scale` by ``scale``; a zero weight (KL warm-up at step 0, an ablated term)
    masks the site out instead, since Pyro's scale must be positive."""
    return poutine.scale(scale=scale) if scale > 0 else poutine.mask(mask=False)


def standard_normal(shape: tuple[int, ...], like: torch.Tensor) -> dist.Distribution:
    """N(0, I) over ``shape = (B, *event)`` as a distribution with batch ``(B,)``."""
    zero = like.new_zeros(())
    return dist.Normal(zero, 1.0).expand(torch.Size(shape)).to_event(len(shape) - 1)


class VarJEPA(SSLMethod):
    """The Var-JEPA model/guide pair and its whole objective, written once for every instance.

    The base owns the loss weights with their KL warm-up, the ELBO estimator, `loss`,
    `diagnostics` (the five terms on held-out rows) and default `embed`/`uncertainty` (the mean and
    standard deviation of the context posterior q(s_x | x)). A variant subclasses it, builds its
    networks and implements the distribution hooks below; each hook receives the program's data
    arguments ``*data`` and a per-execution ``cache`` dict for sharing intermediate tensors between
    hooks (e.g. pooled context tokens) within one run of the model or the guide. `program_args`
    turns a training batch into those data arguments (e.g. rows plus freshly drawn masks).

    Call `model` and `guide` with ``(*data, weights=...)`` where ``weights`` maps the five
    terms to their current α (see `LossWeights.at`). ``docs/variants.md`` walks through a variant.
    """

    name = "Var-JEPA"
    eval_chunk = 1024  # rows per forward pass when evaluating held-out data

    def __init__(self, weights: LossWeights | None = None, elbo: str = "trace") -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.elbo = make_elbo(elbo)

    # -- hooks: data -------------------------------------------------------------------------
    def program_args(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The program's data arguments for one training batch; by default the batch itself."""
        return (batch,)

    def eval_batches(self, rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
        """Data arguments for held-out ``rows``, chunk by chunk, with any randomness fixed (seeded),
        so that epochs are comparable; by default `program_args` of each chunk."""
        for chunk in rows.split(self.eval_chunk):
            yield self.program_args(chunk)

    # -- hooks: distributions --------------------------------------------------------------
    def batch_size(self, *data: torch.Tensor) -> int:
        return data[0].shape[0]

    def prior_s_x(self, *data: torch.Tensor, cache: dict) -> dist.Distribution:
        raise NotImplementedError

    def prior_z(self, *data: torch.Tensor, cache: dict) -> dist.Distribution:
        raise NotImplementedError

    def conditional_prior(self, s_x: torch.Tensor, z: torch.Tensor, *data: torch.Tensor, cache: dict) -> dist.Distribution:
        """p_theta(s_y | s_x, z): the predictor."""
        raise NotImplementedError

    def context_likelihood(self, s_x: torch.Tensor, *data: torch.Tensor, cache: dict) -> tuple[dist.Distribution, torch.Tensor]:
        """p_theta(x | s_x) and the observed x."""
        raise NotImplementedError

    def target_likelihood(self, s_y: torch.Tensor, *data: torch.Tensor, cache: dict) -> tuple[dist.Distribution, torch.Tensor]:
        """p_theta(y | s_y) and the observed y."""
        raise NotImplementedError

    def context_posterior(self, *data: torch.Tensor, cache: dict) -> dist.Distribution:
        """q_phi(s_x | x): the context encoder."""
        raise NotImplementedError

    def aux_posterior(self, s_x: torch.Tensor, *data: torch.Tensor, cache: dict) -> dist.Distribution:
        """q_phi(z | s_x): the auxiliary encoder (sees only s_x)."""
        raise NotImplementedError

    def target_posterior(self, s_x: torch.Tensor, z: torch.Tensor, *data: torch.Tensor, cache: dict) -> dist.Distribution:
        """q_phi(s_y | s_x, z, y): the target encoder."""
        raise NotImplementedError

    def term_norms(self, *data: torch.Tensor) -> dict[str, float]:
        """Per-row normalizer of each term (e.g. 1/M_ctx for the context terms); default 1."""
        return dict(UNIT_WEIGHTS)

    # -- the program -----------------------------------------------------------------------
    def site_scales(self, *data: torch.Tensor, weights: dict[str, float]) -> dict[str, float]:
        """The `poutine.scale` of each site: α · normalizer / batch size (a batch mean)."""
        norms, batch = self.term_norms(*data), self.batch_size(*data)
        return {SITE_OF_TERM[t]: weights[t] * norms[t] / batch for t in TERMS}

    def model(self, *data: torch.Tensor, weights: dict[str, float] = UNIT_WEIGHTS) -> None:
        scales, cache = self.site_scales(*data, weights=weights), {}
        with pyro.plate("rows", self.batch_size(*data), dim=-1):
            with weighted(scales["s_x"]):
                s_x = pyro.sample("s_x", self.prior_s_x(*data, cache=cache))
            with weighted(scales["z"]):
                z = pyro.sample("z", self.prior_z(*data, cache=cache))
            with weighted(scales["s_y"]):
                s_y = pyro.sample("s_y", self.conditional_prior(s_x, z, *data, cache=cache))
            with weighted(scales["x"]):
                fn, obs = self.context_likelihood(s_x, *data, cache=cache)
                pyro.sample("x", fn, obs=obs)
            with weighted(scales["y"]):
                fn, obs = self.target_likelihood(s_y, *data, cache=cache)
                pyro.sample("y", fn, obs=obs)

    def guide(self, *data: torch.Tensor, weights: dict[str, float] = UNIT_WEIGHTS) -> None:
        scales, cache = self.site_scales(*data, weights=weights), {}
        with pyro.plate("rows", self.batch_size(*data), dim=-1):
            with weighted(scales["s_x"]):
                s_x = pyro.sample("s_x", self.context_posterior(*data, cache=cache))
            with weighted(scales["z"]):
                z = pyro.sample("z", self.aux_posterior(s_x, *data, cache=cache))
            with weighted(scales["s_y"]):
                pyro.sample("s_y", self.target_posterior(s_x, z, *data, cache=cache))

    # -- the objective (SSLMethod) -------------------------------------------------------------
    def loss(self, batch: torch.Tensor, step: int) -> torch.Tensor:
        """The α-weighted negative ELBO (Eq. 10) of one batch at optimizer step ``step``."""
        return self.elbo.differentiable_loss(self.model, self.guide, *self.program_args(batch), weights=self.weights.at(step))

    def loss_weights(self, step: int) -> dict[str, float]:
        return self.weights.at(step)

    def selectable_from(self) -> int:
        return self.weights.warmup_steps

    @torch.no_grad()
    def diagnostics(self, rows: torch.Tensor, step: int) -> dict[str, float]:
        """The five unweighted terms and the weighted loss on held-out ``rows`` (analytic KLs)."""
        weights = self.weights.at(step)
        totals = dict.fromkeys((*TERMS, "loss"), 0.0)
        for data in self.eval_batches(rows):
            terms = elbo_terms(self, *data, analytic_kl=True)
            terms["loss"] = weighted_loss(terms, weights)
            for key, value in terms.items():
                totals[key] += float(value) * self.batch_size(*data) / rows.shape[0]
        return totals

    @torch.no_grad()
    def _context_posteriors(self, rows: torch.Tensor) -> Iterator[dist.Distribution]:
        for data in self.eval_batches(rows):
            yield self.context_posterior(*data, cache={})

    @torch.no_grad()
    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """Posterior means of s_x, the representation of the context (variants may choose another)."""
        return torch.cat([q.mean for q in self._context_posteriors(rows)])

    @torch.no_grad()
    def uncertainty(self, rows: torch.Tensor) -> torch.Tensor:
        """Posterior standard deviations of s_x, matching `embed`."""
        return torch.cat([q.stddev for q in self._context_posteriors(rows)])


def elbo_terms(program: VarJEPA, *data: torch.Tensor, analytic_kl: bool = True) -> dict[str, torch.Tensor]:
    """The five unweighted terms of Eq. 10 (batch means, instance-normalized) from one guide sample.

    KLs are analytic given the sampled parents (as in `TraceMeanField_ELBO`) unless
    ``analytic_kl=False``, which gives the single-sample Monte Carlo estimate log q - log p
    that `Trace_ELBO` uses.
    """
    guide_trace = poutine.trace(program.guide).get_trace(*data, weights=UNIT_WEIGHTS)
    model_trace = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(
        *data, weights=UNIT_WEIGHTS
    )
    terms = {}
    for term in TERMS:
        site = model_trace.nodes[SITE_OF_TERM[term]]
        if site["is_observed"]:
            terms[term] = -site["fn"].log_prob(site["value"]).sum() * site["scale"]
            continue
        q = guide_trace.nodes[site["name"]]
        if analytic_kl:
            kl = kl_divergence(q["fn"], site["fn"])
        else:
            kl = q["fn"].log_prob(q["value"]) - site["fn"].log_prob(site["value"])
        terms[term] = kl.sum() * q["scale"]
    return terms


def weighted_loss(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Eq. 10: the α-weighted sum of the terms."""
    return sum(weights[t] * terms[t] for t in TERMS)


@dataclass
class MLPVarJEPAConfig:
    """Sizes of `MLPVarJEPA`: the context is the first ``x_dim`` columns of a row, the target the next ``y_dim``."""

    x_dim: int
    y_dim: int
    latent_dim: int = 16
    aux_dim: int = 8
    hidden: int = 128
    depth: int = 2


class MLPVarJEPA(VarJEPA):
    """The paper's simulation-study model (App. D.1): MLP encoders, Gaussian everything.

    The smallest complete Var-JEPA: it trains with `pyro_jepa.train.fit` on any table of rows
    whose first ``x_dim`` columns are the context x and the next ``y_dim`` the target y (its
    program's data arguments are ``x (B, x_dim)`` and ``y (B, y_dim)``). Latents:
    ``s_x, s_y in R^latent_dim``, ``z in R^aux_dim``. Decoders are Gaussian with a learned global
    scale per path. `embed` gives the posterior mean of s_x.
    """

    name = "MLP Var-JEPA"

    def __init__(
        self, x_dim: int, y_dim: int, latent_dim: int = 16, aux_dim: int = 8, hidden: int = 128, depth: int = 2,
        weights: LossWeights | None = None, elbo: str = "trace",
    ) -> None:
        super().__init__(weights, elbo)
        self.config = MLPVarJEPAConfig(x_dim, y_dim, latent_dim, aux_dim, hidden, depth)
        self.latent_dim, self.aux_dim = latent_dim, aux_dim
        body = [hidden] * depth
        self.context_encoder = nn.Sequential(mlp([x_dim, *body], norm=True), nn.GELU(), GaussianHead(hidden, latent_dim))
        self.aux_encoder = nn.Sequential(mlp([latent_dim, *body]), nn.GELU(), GaussianHead(hidden, aux_dim))
        self.target_encoder = nn.Sequential(
            mlp([latent_dim + aux_dim + y_dim, *body]), nn.GELU(), GaussianHead(hidden, latent_dim)
        )
        self.predictor = nn.Sequential(mlp([latent_dim + aux_dim, *body]), nn.GELU(), GaussianHead(hidden, latent_dim))
        self.context_decoder = mlp([latent_dim, *body, x_dim])
        self.target_decoder = mlp([latent_dim, *body, y_dim])
        self.log_sigma_x = nn.Parameter(torch.zeros(()))
        self.log_sigma_y = nn.Parameter(torch.zeros(()))

    @staticmethod
    def _normal(loc_scale: tuple[torch.Tensor, torch.Tensor]) -> dist.Distribution:
        return dist.Normal(*loc_scale).to_event(1)

    def program_args(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_dim, y_dim = self.config.x_dim, self.config.y_dim
        return batch[:, :x_dim], batch[:, x_dim : x_dim + y_dim]

    def prior_s_x(self, x, y, cache):
        return standard_normal((x.shape[0], self.latent_dim), x)

    def prior_z(self, x, y, cache):
        return standard_normal((x.shape[0], self.aux_dim), x)

    def conditional_prior(self, s_x, z, x, y, cache):
        return self._normal(self.predictor(torch.cat([s_x, z], -1)))

    def context_likelihood(self, s_x, x, y, cache):
        return dist.Normal(self.context_decoder(s_x), self.log_sigma_x.exp()).to_event(1), x

    def target_likelihood(self, s_y, x, y, cache):
        return dist.Normal(self.target_decoder(s_y), self.log_sigma_y.exp()).to_event(1), y

    def context_posterior(self, x, y, cache):
        return self._normal(self.context_encoder(x))

    def aux_posterior(self, s_x, x, y, cache):
        return self._normal(self.aux_encoder(s_x))

    def target_posterior(self, s_x, z, x, y, cache):
        return self._normal(self.target_encoder(torch.cat([s_x, z, y], -1)))
