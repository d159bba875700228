"""Per-row uncertainty scores of the tabular JEPAs: one name per score, one API.

Every method lists the scores it can compute (``method.score_names``) and computes any of them with
``method.scores(rows, names)`` -> ``{name: (N,) tensor}`` (higher = less sure). `ROW_SCORES`
describes each name; `PAPER_SCORES` are the paper's own choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

POSTERIOR_AGGREGATES = ("mean", "q90", "entropy")

ROW_SCORES: dict[str, str] = {
    "posterior-mean": "mean of the target posterior's standard deviations of s_w (the paper's score on real tables)",
    "posterior-q90": "90th percentile of the target posterior's standard deviations of s_w (the paper's score on MNIST and SIM)",
    "posterior-entropy": "differential entropy of the target posterior q(s_w | ...) (its log-stds summed)",
    "prior-std": "mean std of the learned conditional prior p(s_y | s_x, z) at hidden features, over masks",
    "predictive-nll": "masked-feature predictive NLL in observation space: context -> predictor mean -> target decoder, "
    "negative log-likelihood of the hidden features' true values per feature, over masks",
    "predictive-mse": "squared error of the predictor's mean, decoded, at hidden numerical features, over masks (features "
    "are standardized, so predicting the training mean scores each row's mean squared feature)",
    "predictive-kl": "KL(q(s_y | s_x, z, y) || p(s_y | s_x, z)) per hidden feature, over masks: the nats the row's hidden "
    "features cost beyond what the predictor expected (the ELBO's prediction term, per row)",
    "predictive-scale": "mean log of the decoder std predicted for hidden numerical features from the context alone, over "
    "masks (heteroscedastic decoders only)",
    "decoder-scale": "mean log of the decoder std of the row's numerical features decoded from its posterior mean "
    "(heteroscedastic decoders only)",
    "reconstruction-nll": "negative log-likelihood per feature of the row's own values under the target decoder at its "
    "posterior mean (the whole row as context): how badly the row's latent explains the row",
    "training-kl": "KL from the row's target posterior to the aggregate posterior of (up to 8,192) training rows, smoothed "
    "by the width that gives the validation rows the best ELBO: the ELBO's KL term under the best prior of that family "
    "(a Jensen bound); how far the row's latent sits from every training row's",
    "trimmed-kl": "training-kl against the aggregate posterior of only the most typical quarter of those training rows "
    "(cross-fitted: each row's training-kl to the other half's mixture ranks them): rows unlike the bulk of the training "
    "rows score high even where many atypical training rows sit (the default's score)",
    "prediction-error": "T-JEPA's squared latent prediction error at hidden features, over masks",
}
PAPER_SCORES = ("posterior-mean", "posterior-q90")
# Names of the first release ("mean", "q90", "entropy" of the posterior stds), still accepted in configs.
LEGACY_NAMES = {how: f"posterior-{how}" for how in POSTERIOR_AGGREGATES}


def aggregate_std(scale: torch.Tensor, how: str = "mean") -> torch.Tensor:
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
    raise ValueError(f"how must be one of {POSTERIOR_AGGREGATES}, got {how!r}")


def canonical_score_name(name: str) -> str:
    """``name`` with legacy spellings mapped to today's; ValueError for an unknown name."""
    name = LEGACY_NAMES.get(name, name)
    if name not in ROW_SCORES:
        raise ValueError(f"unknown uncertainty score {name!r}; known: {sorted(ROW_SCORES)}")
    return name


def check_score_names(names: Sequence[str] | str | None, available: Sequence[str], method: str) -> list[str]:
    """The requested score names (all ``available`` ones for None), each checked against ``available``."""
    if names is None:
        return list(available)
    names = [canonical_score_name(n) for n in ([names] if isinstance(names, str) else names)]
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"{method} cannot compute the score(s) {missing}; it has {list(available)}")
    return names
