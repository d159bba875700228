"""Var-T-JEPA: the Var-JEPA program for tabular rows (Var-JEPA App. A, D.2).

Data arguments of the Pyro program: packed rows ``w (B, D)``, context indices ``(B, M_ctx)``
and target indices ``(B, K, M_trg)`` (see `pyro_jepa.data.masks`).

Sites and shapes (batch dim B in the ``rows`` plate):

============  ===================  ===============================================================
site          value shape          model / guide
============  ===================  ===============================================================
``s_x``       (B, M_ctx, d)        N(0, I) / context transformer over the context tokens
``z``         (B, d)               N(0, I) / attention pooling of s_x -> MLP
``s_y``       (B, K, T, d)         predictor at target positions / target-posterior transformer
                                   over [CLS, pooled s_x, z, all T feature tokens]; only the K
                                   target masks' tokens enter log p and log q (`TargetTokenNormal`)
``x``         (B, D) observed      context decoder at the context tokens' features
``y``         (B, K, D) observed   target decoder, every feature of w, once per target mask
============  ===================  ===============================================================

There is one token per feature (T = D) unless ``config.group_size > 1`` groups numerical features
into shared tokens; masks select tokens, and the decoders map a token to its features.

The target posterior's input does not depend on the mask, so its parameters are computed once
per row and expanded over the K masks; each mask still draws its own sample (the paper's
effective batch of B*K).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyro.distributions as dist
import torch
from torch import nn

from ..data.masks import Masks
from ..data.tabular import TabularSchema
from ..distributions import MixedTabular, TargetTokenNormal, fit_smoothing, kl_to_mixture_bound, smoothed_scale, typical_rows
from ..distributions.mixture_kl import SMOOTHING_GRID
from ..nn import AttentionPooling, GaussianHead, TabularDecoder, mlp, scatter_tokens
from .scores import aggregate_std, check_score_names
from .tabular import EVAL_CHUNK, EVAL_MASK_SEED, MaskedPredictor, MaskedTabular, TabularJEPAConfig, TokenEncoder
from .var_jepa import VarJEPA, standard_normal

# The `training-kl` score compares a row's posterior with those of at most this many training rows.
N_REFERENCE = 8192
# The share of them, the most typical, whose aggregate posterior the `trimmed-kl` score compares with. Screened at
# 0.5 and 0.25 (docs/results/uncertainty_notes.md, round 14): both met every Figure 3 line; the screen's rule took the
# one with the higher MNIST-7x7 ROC AUC.
TRIMMED_SHARE = 0.25


class VarTJEPA(MaskedTabular, VarJEPA):
    """Var-T-JEPA as a Pyro model/guide pair (see the module docstring).

    The objective (weights, warm-up, estimator, loss, diagnostics) is `VarJEPA`'s; the masks are
    `MaskedTabular`'s; this class holds the networks and the distribution hooks.
    """

    name = "Var-T-JEPA"
    unread_fields = ("ema", "n_aux", "uncertainty")

    def __init__(self, schema: TabularSchema, config: TabularJEPAConfig, seed: int = 0) -> None:
        super().__init__(weights=config.weights, elbo=config.elbo)
        self._setup_masks(schema, config, seed)
        d = config.dim
        self.register_buffer("cardinalities", torch.tensor(schema.cardinalities, dtype=torch.long), persistent=False)
        # q(s_x | x)
        self.context_encoder = TokenEncoder(schema, config)
        self.context_head = GaussianHead(d, d)
        # q(z | s_x)
        self.pool = AttentionPooling(d, config.n_pool, config.heads)
        self.aux_encoder = nn.Sequential(
            mlp([config.n_pool * d] + [d] * config.aux_depth), nn.LayerNorm(d), nn.GELU(), GaussianHead(d, d)
        )
        # q(s_y | s_x, z, y)
        self.target_encoder = TokenEncoder(schema, config)
        self.pooled_proj = nn.Linear(d, d)
        self.z_proj = nn.Linear(d, d)
        self.prefix_type = nn.Parameter(torch.randn(2, d) * 0.02)
        self.target_head = GaussianHead(d, d)
        # p(s_y | s_x, z)
        self.predictor = MaskedPredictor(self.n_tokens, config, conditioned=True)
        self.predictor_head = GaussianHead(config.pred_dim, d)
        # p(x | s_x), p(y | s_y): learned global scales (the paper's) or per-row scales from the latent
        row_scale = config.decoder_scale == "row"
        self.context_decoder = TabularDecoder(schema, d, row_scale, config.group_size)
        self.target_decoder = TabularDecoder(schema, d, row_scale, config.group_size)
        if not row_scale:
            self.log_sigma_x = nn.Parameter(torch.zeros(()))
            self.log_sigma_y = nn.Parameter(torch.zeros(()))
        # Training rows whose posteriors make the aggregate posterior of the `training-kl` score; saved with
        # the weights (`set_reference`), resized to the saved rows on load.
        self.register_buffer("reference_rows", torch.zeros(0, schema.n_features))
        # The width their aggregate posterior is smoothed by, fitted on held-out rows (`set_reference`).
        self.register_buffer("reference_smoothing", torch.zeros(()))
        self.smoothing_curve: dict[float, float] = {}  # the held-out rows' mean KL at each width tried (the last fit)
        self.register_load_state_dict_pre_hook(_load_reference_rows)
        # Their posteriors, computed once for a model in eval mode (scoring a file chunk by chunk asks
        # for them per chunk); dropped whenever the weights may change (`_forget_reference_posterior`).
        self.register_buffer("reference_loc", None, persistent=False)
        self.register_buffer("reference_scale", None, persistent=False)
        self.register_buffer("reference_typical", None, persistent=False)  # the rows `trimmed-kl` keeps, likewise
        self.score_names = ("posterior-mean", "posterior-q90", "posterior-entropy", "prior-std", "predictive-nll", "predictive-kl", "predictive-mse",
                            "reconstruction-nll", "training-kl", "trimmed-kl") + (
            ("predictive-scale", "decoder-scale") if row_scale else ()
        )

    # -- data arguments of the program: rows and their masks ---------------------------------
    def program_args(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (batch, *self.training_masks(batch))

    def eval_batches(self, rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self.eval_masked(rows)

    # -- networks shared by the guide and the embedding path ----------------------------------
    def target_params(self, rows: torch.Tensor, pooled: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(B, T, d)`` of the target posterior q(s_w | s_x, z, w)."""
        prefix = torch.cat(
            [self.pooled_proj(pooled) + self.prefix_type[0], (self.z_proj(z) + self.prefix_type[1]).unsqueeze(1)], dim=1
        )
        return self.target_head(self.target_encoder(rows, prefix=prefix))

    def decode(self, path: str, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Numerical means, their stds and categorical logits of p(x | s_x) (``path="x"``) or
        p(y | s_y) (``"y"``) for token latents ``(..., T, d)``."""
        decoder = self.context_decoder if path == "x" else self.target_decoder
        loc, logits = decoder(latents)
        scale = decoder.scale(latents) if decoder.row_scale else getattr(self, f"log_sigma_{path}").exp()
        return loc, scale, logits

    # -- VarJEPA hooks ----------------------------------------------------------------------
    def term_norms(self, rows, context, target):
        m_ctx, (k, m_trg) = context.shape[1], target.shape[1:]
        # rec is per observed feature: a context token holds n_features / n_tokens of them on average.
        return {"rec": 1 / (m_ctx * (self.n_features / self.n_tokens)), "gen": 1 / (k * self.n_features), "kl_s_x": 1 / m_ctx, "kl_z": 1.0, "kl_s_y": 1 / (k * m_trg)}

    def prior_s_x(self, rows, context, target, cache):
        return standard_normal((rows.shape[0], context.shape[1], self.config.dim), rows)

    def prior_z(self, rows, context, target, cache):
        return standard_normal((rows.shape[0], self.config.dim), rows)

    def conditional_prior(self, s_x, z, rows, context, target, cache):
        loc, scale = self.predictor_head(self.predictor(s_x, context, target, condition=z))
        return TargetTokenNormal(loc, scale, target, self.n_tokens, at_targets=True)

    def context_likelihood(self, s_x, rows, context, target, cache):
        loc, scale, logits = self.decode("x", scatter_tokens(s_x, context, self.n_tokens))
        observed = self.feature_mask(Masks(context, target).context_mask(self.n_tokens))
        fn = MixedTabular(loc, scale, logits, self.cardinalities, feature_mask=observed)
        return fn, rows

    def target_likelihood(self, s_y, rows, context, target, cache):
        loc, scale, logits = self.decode("y", s_y)
        fn = MixedTabular(loc, scale, logits, self.cardinalities).to_event(1)
        return fn, rows.unsqueeze(1).expand(-1, target.shape[1], -1)

    def context_posterior(self, rows, context, target, cache):
        loc, scale = self.context_head(self.context_encoder(rows, index=context))
        return dist.Normal(loc, scale).to_event(2)

    def aux_posterior(self, s_x, rows, context, target, cache):
        cache["pooled"] = self.pool(s_x)
        loc, scale = self.aux_encoder(cache["pooled"].flatten(1))
        return dist.Normal(loc, scale).to_event(1)

    def target_posterior(self, s_x, z, rows, context, target, cache):
        loc, scale = self.target_params(rows, cache["pooled"], z)
        shape = (-1, target.shape[1], -1, -1)
        # Every token is sampled (the target decoder reads them all); only the targets enter log q.
        return TargetTokenNormal(loc.unsqueeze(1).expand(shape), scale.unsqueeze(1).expand(shape), target, self.n_tokens)

    # -- the training rows behind the typicality score ---------------------------------------
    @torch.no_grad()
    def set_reference(self, rows: torch.Tensor, held_out: torch.Tensor | None = None, seed: int = 0) -> None:
        """Keep ``rows`` (packed training rows ``(N, D)``), or a random subset of `N_REFERENCE` of them
        drawn by a private generator seeded by ``seed`` (the training RNG is untouched), for `training_kl`.

        With ``held_out`` rows (validation rows, never trained on) also fit the width their aggregate
        posterior is smoothed by (`fit_smoothing`: the smoothing that gives the held-out rows the best
        ELBO), with the model in eval mode; without, the aggregate posterior is not smoothed."""
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"reference rows must be packed rows of shape (N, {self.n_features}), got {tuple(rows.shape)}")
        self.reference_rows = self._subset(rows, seed).detach().to(self.reference_rows.device, self.reference_rows.dtype).clone()
        self._forget_reference_posterior()
        self.reference_smoothing.zero_()
        if held_out is None or not len(held_out):
            return
        self.fit_reference_smoothing(held_out, seed)

    @torch.no_grad()
    def fit_reference_smoothing(self, held_out: torch.Tensor, seed: int = 0, grid: tuple[float, ...] = SMOOTHING_GRID) -> float:
        """Fit (again) the width of ``grid`` that the kept reference rows' aggregate posterior is smoothed by:
        the one that gives the ``held_out`` rows (or `N_REFERENCE` of them, drawn with ``seed``) the best
        ELBO (`fit_smoothing`), in eval mode. Returns the width; ``smoothing_curve`` keeps the whole curve."""
        if held_out.ndim != 2 or held_out.shape[1] != self.n_features:
            raise ValueError(f"held-out rows must be packed rows of shape (N, {self.n_features}), got {tuple(held_out.shape)}")
        was_training = self.training
        self.eval()
        loc, scale = (t.flatten(1) for t in self.posterior(self._subset(held_out, seed).to(self.reference_rows.device)))
        width, self.smoothing_curve = fit_smoothing(loc, scale, *self.reference_posterior(), grid=grid)
        self.reference_smoothing.fill_(width)
        self.reference_typical = None  # `trimmed-kl` ranks the reference rows at this width
        if was_training:
            self.train()
        return width

    @staticmethod
    def _subset(rows: torch.Tensor, seed: int) -> torch.Tensor:
        """``rows``, or `N_REFERENCE` of them drawn by a private generator (in their original order)."""
        if len(rows) <= N_REFERENCE:
            return rows
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:N_REFERENCE]
        return rows[keep.sort().values.to(rows.device)]

    def _forget_reference_posterior(self) -> None:
        self.reference_loc = self.reference_scale = self.reference_typical = None

    def train(self, mode: bool = True) -> VarTJEPA:
        """`nn.Module.train`; also drops the reference rows' cached posteriors, as training changes the weights."""
        self._forget_reference_posterior()
        return super().train(mode)

    @torch.no_grad()
    def training_kl(self, loc: torch.Tensor, scale: torch.Tensor, width: float | None = None) -> torch.Tensor:
        """``KL(q(s_w | row) || q_agg)`` per row ``(N,)`` for target posteriors ``loc, scale (N, T, d)``, where
        ``q_agg = (1/K) Σ_k q(s_w | w_k)`` is the aggregate posterior of the K reference rows: the prior that
        maximizes the training rows' average ELBO (Hoffman & Johnson, 2016), so the score is the ELBO's KL
        term under the best prior the model could have learned, in closed form as a Jensen upper bound
        (`kl_to_mixture_bound`). ``q_agg`` is smoothed by ``width`` (`smoothed_scale`; default: the width
        `set_reference` fitted on held-out rows). High for rows whose posterior sits where no training row's does."""
        mix_loc, _, mix_scale = self._smoothed_reference(width)
        return kl_to_mixture_bound(loc.flatten(1), scale.flatten(1), mix_loc, mix_scale)

    @torch.no_grad()
    def trimmed_kl(self, loc: torch.Tensor, scale: torch.Tensor, width: float | None = None) -> torch.Tensor:
        """`training_kl` against the aggregate posterior of only the `TRIMMED_SHARE` most typical reference rows
        (`typical_rows`, cross-fitted at the same width), per row ``(N,)``. Corrupted or ambiguous training rows are
        common in some tables; where they sit the full aggregate posterior has mass, and `training_kl` calls a row
        like them typical. The trimmed one keeps rising with the distance from the bulk of the training rows."""
        fitted = width is None
        mix_loc, own_scale, mix_scale = self._smoothed_reference(width)
        keep = self.reference_typical if fitted and not self.training else None
        if keep is None:
            keep = typical_rows(mix_loc, own_scale, mix_scale, TRIMMED_SHARE)
            if fitted:
                self.reference_typical = keep
        return kl_to_mixture_bound(loc.flatten(1), scale.flatten(1), mix_loc[keep], mix_scale[keep])

    def _smoothed_reference(self, width: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The reference rows' posterior loc, own scale and scale smoothed by ``width`` (None: the fitted width)."""
        mix_loc, own_scale = self.reference_posterior()
        return mix_loc, own_scale, smoothed_scale(own_scale, float(self.reference_smoothing) if width is None else width)

    def reference_posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference rows' flattened posterior loc and scale ``(K, T·d)`` (unsmoothed), cached in eval mode."""
        if not len(self.reference_rows):
            raise ValueError("the training-kl and trimmed-kl scores need training rows: call set_reference(train_rows) first "
                             "(the training engine does; a checkpoint written before pyro_jepa kept them has none)")
        if self.reference_loc is None or self.training:
            self.reference_loc, self.reference_scale = (t.flatten(1) for t in self.posterior(self.reference_rows))
        return self.reference_loc, self.reference_scale

    # -- representations ---------------------------------------------------------------------
    @torch.no_grad()
    def posterior(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(N, T, d)`` of q(s_w | s_x, z, w) with the whole row as context and
        posterior means for s_x and z (App. D.5)."""
        locs, scales = [], []
        for chunk in rows.split(EVAL_CHUNK):
            s_x, _ = self.context_head(self.context_encoder(chunk))
            pooled = self.pool(s_x)
            z, _ = self.aux_encoder(pooled.flatten(1))
            loc, scale = self.target_params(chunk, pooled, z)
            locs.append(loc)
            scales.append(scale)
        return torch.cat(locs), torch.cat(scales)

    def _masked_scores(self, rows: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 5)`` for one mask draw with s_x and z at their posterior means: the conditional prior's
        mean std at the target features; the targets' predictive NLL per feature (the predictor's mean
        decoded by the target decoder); the mean log decoder std at numerical targets;
        KL(q(s_y | s_x, z, y) || p(s_y | s_x, z)) per target feature (the ELBO's prediction term); and
        the squared error of the decoded predictor mean at numerical targets."""
        cache: dict = {}
        s_x = self.context_posterior(rows, context, target, cache).mean
        z = self.aux_posterior(s_x, rows, context, target, cache).mean
        prior = self.conditional_prior(s_x, z, rows, context, target, cache)
        k = target.shape[1]
        num_loc, num_scale, logits = self.decode("y", prior.mean)
        lp = MixedTabular(num_loc, num_scale, logits, self.cardinalities).feature_log_prob(rows.unsqueeze(1).expand(-1, k, -1))
        hidden = self.feature_mask(Masks(context, target).target_mask(self.n_tokens)).float()
        nll = -(lp * hidden).sum((1, 2)) / hidden.sum((1, 2))
        hidden_num = hidden[..., : self.schema.n_numerical]
        n_hidden_num = hidden_num.sum((1, 2)).clamp(min=1)
        log_scale = (num_scale.log().expand_as(hidden_num) * hidden_num).sum((1, 2)) / n_hidden_num
        squared_error = (((rows[:, None, : self.schema.n_numerical] - num_loc) ** 2) * hidden_num).sum((1, 2)) / n_hidden_num
        prior_at_targets = dist.Normal(*prior.at_target_tokens())
        posterior_at_targets = dist.Normal(*self.target_posterior(s_x, z, rows, context, target, cache).at_target_tokens())
        kl = torch.distributions.kl_divergence(posterior_at_targets, prior_at_targets).sum(-1).mean((1, 2))
        return torch.stack([prior_at_targets.scale.mean((1, 2, 3)), nll, log_scale, kl, squared_error], dim=1)

    @property
    def default_score(self) -> str:
        return self.config.uncertainty

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, names=None, n_masks: int = 8, seed: int = EVAL_MASK_SEED) -> dict[str, torch.Tensor]:
        """Per-row uncertainty scores ``{name: (N,)}`` (see `pyro_jepa.models.scores.ROW_SCORES`).

        Posterior scores use the whole row (App. D.5); the masked scores (``prior-std``,
        ``predictive-nll``, ``predictive-scale``, ``predictive-kl``, ``predictive-mse``) average ``n_masks`` training-like mask draws seeded by
        ``seed`` (the same rows give the same scores; mask sizes are drawn per chunk of rows)."""
        names = check_score_names(names, self.score_names, self.name)
        needs_posterior = any(n.startswith("posterior-") or n in ("decoder-scale", "reconstruction-nll", "training-kl", "trimmed-kl") for n in names)
        return self._scores(rows, names, n_masks, seed, self.posterior(rows) if needs_posterior else None)

    @torch.no_grad()
    def embed_with_scores(
        self, rows: torch.Tensor, names=None, n_masks: int = 8, seed: int = EVAL_MASK_SEED
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`embed` and `scores` from one pass of the posterior networks."""
        names = check_score_names(names, self.score_names, self.name)
        posterior = self.posterior(rows)
        return posterior[0], self._scores(rows, names, n_masks, seed, posterior)

    def _scores(self, rows, names: list[str], n_masks: int, seed: int, posterior) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if posterior is not None:
            loc, scale = posterior
            for name in names:
                if name.startswith("posterior-"):
                    out[name] = aggregate_std(scale, name.removeprefix("posterior-"))
            if "decoder-scale" in names:
                out["decoder-scale"] = self.target_decoder.scale(loc).log().mean(-1)
            if "reconstruction-nll" in names:
                out["reconstruction-nll"] = -MixedTabular(*self.decode("y", loc), self.cardinalities).feature_log_prob(rows).mean(-1)
            if "training-kl" in names:
                out["training-kl"] = self.training_kl(loc, scale)
            if "trimmed-kl" in names:
                out["trimmed-kl"] = self.trimmed_kl(loc, scale)
        masked = ("prior-std", "predictive-nll", "predictive-scale", "predictive-kl", "predictive-mse")
        if any(n in masked for n in names):
            values = self.mask_average(rows, self._masked_scores, n_masks, seed)
            out |= {n: values[:, i] for i, n in enumerate(masked) if n in names}
        return {n: out[n] for n in names}

    @torch.no_grad()
    def prior_uncertainty(self, rows: torch.Tensor, n_masks: int = 8, seed: int = EVAL_MASK_SEED) -> torch.Tensor:
        """Per-row mean std of the learned conditional prior p(s_y | s_x, z) at the target features,
        averaged over ``n_masks`` seeded mask draws (s_x and z at their posterior means), ``(N,)``.

        The predictor's own spread: how unsure the model is about hidden features given the rest.
        """
        return self.scores(rows, ["prior-std"], n_masks, seed)["prior-std"]

    @torch.no_grad()
    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        return self.posterior(rows)[0]

    @torch.no_grad()
    def uncertainty(self, rows: torch.Tensor) -> torch.Tensor:
        return self.posterior(rows)[1]


def _load_reference_rows(module: VarTJEPA, state_dict: dict, prefix: str, *_) -> None:
    """Make room for the saved reference rows (any number of them); a checkpoint without any leaves none,
    and one without a smoothing width leaves the aggregate posterior unsmoothed."""
    key = prefix + "reference_rows"
    saved = state_dict.get(key)
    module.reference_rows = module.reference_rows.new_empty(saved.shape if saved is not None else (0, module.n_features))
    module._forget_reference_posterior()
    state_dict.setdefault(key, module.reference_rows)
    state_dict.setdefault(prefix + "reference_smoothing", torch.zeros(()))  # saved before the smoothing: none
