"""Latent uncertainty: per-row scores and arviz summaries of the guide's posterior samples.

arviz 0.23 (Python 3.11) and 1.x (Python >= 3.12) differ in how data is built and summarized;
the small adapters here hide that: 0.x stores iid guide draws as one chain (``chain``, ``draw``),
1.x as a single ``sample`` dimension.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyro.infer import Predictive

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # 0.23 announces the 1.x refactor on import
    import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
HDI_PROB = 0.9


SCORES = ("mean", "q90", "entropy")


def row_uncertainty(scale: torch.Tensor, how: str = "mean") -> torch.Tensor:
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
    raise ValueError(f"how must be one of {SCORES}, got {how!r}")


def _as_scores(uncertainty, n: int) -> np.ndarray:
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    if uncertainty.shape != (n,):
        raise ValueError(f"expected {n} uncertainties (one per row), got shape {uncertainty.shape}")
    if not np.isfinite(uncertainty).all():
        raise ValueError("uncertainty contains NaN or inf")
    return uncertainty


def most_uncertain_first(uncertainty: np.ndarray) -> np.ndarray:
    """Row order by decreasing uncertainty; among equal scores the lower index comes first."""
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    return np.lexsort((np.arange(len(uncertainty)), -uncertainty))  # last key is primary


def selective_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    uncertainty: np.ndarray,
    drop_fractions: Sequence[float] = (0.1, 0.2, 0.5),
) -> dict[float, dict[str, float]]:
    """Score the predictions left after abstaining on the most uncertain rows.

    For each fraction ``f`` the ``round(f * n)`` rows first in `most_uncertain_first` are dropped.

    Returns:
        ``{f: {"accuracy", "macro_f1", "coverage"}}`` where coverage is the kept fraction of rows.
    """
    from .evaluate.metrics import classification_metrics

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if len(y_pred) != n:
        raise ValueError(f"length mismatch: {n} labels, {len(y_pred)} predictions")
    order = most_uncertain_first(_as_scores(uncertainty, n))
    results: dict[float, dict[str, float]] = {}
    for f in drop_fractions:
        if not 0.0 <= f < 1.0:
            raise ValueError(f"drop fractions must be in [0, 1), got {f}")
        keep = np.sort(order[round(f * n) :])
        if len(keep) == 0:
            raise ValueError(f"dropping {f:.0%} of {n} rows leaves nothing to score")
        results[f] = {**classification_metrics(y_true[keep], y_pred[keep]), "coverage": len(keep) / n}
    return results


def risk_coverage(errors: np.ndarray, uncertainty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The risk–coverage curve of abstaining on the most uncertain rows.

    ``errors`` are per-row losses (0/1 for misclassification). Keeping the ``k`` least uncertain
    rows gives coverage ``k / n`` and risk = their mean error, for ``k = 1..n``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    order = most_uncertain_first(_as_scores(uncertainty, len(errors)))[::-1]
    kept = np.arange(1, len(errors) + 1)
    return kept / len(errors), np.cumsum(errors[order]) / kept


def aurc(errors: np.ndarray, uncertainty: np.ndarray) -> float:
    """Area under the risk–coverage curve: the mean risk over the coverages ``1/n, ..., 1``."""
    return float(risk_coverage(errors, uncertainty)[1].mean())


def _ranks(x: np.ndarray) -> np.ndarray:
    return pd.Series(np.asarray(x, dtype=np.float64)).rank(method="average").to_numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get average ranks)."""
    ra, rb = _ranks(a), _ranks(b)
    if len(ra) != len(rb) or len(ra) < 2:
        raise ValueError(f"need two equally long samples of at least 2 values, got {len(ra)} and {len(rb)}")
    return float(np.corrcoef(ra, rb)[0, 1])


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for the boolean ``positive``: P(score_pos > score_neg) + P(tie) / 2."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative rows")
    ranks = _ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (the paper's "standardized latent uncertainty")."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / (x.std() or 1.0)


def ambiguity_scores(uncertainty: np.ndarray, ambiguity: np.ndarray, errors: np.ndarray, quantile: float = 0.75) -> dict[str, float]:
    """Var-JEPA Figure 3's three numbers for one uncertainty score.

    ``aurc`` of abstaining by ``uncertainty`` given the per-row ``errors`` of a predictor,
    ``spearman`` between uncertainty and the true ambiguity ``u``, and ``roc_auc`` of detecting
    rows with ``u >= quantile(u)`` by their uncertainty.
    """
    ambiguity = np.asarray(ambiguity, dtype=np.float64)
    return {
        "aurc": aurc(errors, uncertainty),
        "spearman": spearman(uncertainty, ambiguity),
        "roc_auc": roc_auc(ambiguity >= np.quantile(ambiguity, quantile), uncertainty),
    }


@torch.no_grad()
def sample_latents(method, rows: torch.Tensor, num_samples: int = 200) -> dict[str, np.ndarray]:
    """Draw ``num_samples`` joint guide samples of ``s_x``, ``z`` and ``s_w`` for each row.

    The whole row is the context and the single "target mask" covers every feature, so ``s_w``
    is the posterior of the full-row representation used downstream. Shapes:
    ``s_x (S, N, D, d)``, ``z (S, N, d)``, ``s_w (S, N, D, d)``.
    """
    n, d = rows.shape
    context = torch.arange(d, device=rows.device).expand(n, d)
    target = context.unsqueeze(1)
    was_training = method.training
    method.eval()
    predictive = Predictive(method.guide, num_samples=num_samples, return_sites=["s_x", "z", "s_y"])
    samples = predictive(rows, context, target)
    method.train(was_training)
    return {
        "s_x": samples["s_x"].cpu().numpy(),
        "z": samples["z"].cpu().numpy(),
        "s_w": samples["s_y"][:, :, 0].cpu().numpy(),
    }


def to_inference_data(
    samples: dict[str, np.ndarray], row_ids: Sequence, feature_names: Sequence[str]
):
    """arviz data with dims ``row``, ``feature``, ``latent`` (plus the sample dims of the version)."""
    dims = {"s_x": ["row", "feature", "latent"], "z": ["row", "latent_z"], "s_w": ["row", "feature", "latent"]}
    d, d_z = samples["s_w"].shape[-1], samples["z"].shape[-1]
    coords = {"row": list(row_ids), "feature": list(feature_names), "latent": list(range(d)), "latent_z": list(range(d_z))}
    if ARVIZ_1:
        return az.from_dict({"posterior": samples}, sample_dims=["sample"], coords=coords, dims=dims)
    return az.from_dict(posterior={k: v[None] for k, v in samples.items()}, coords=coords, dims=dims)


def summarize(data, var_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Posterior mean, sd and the 90 % HDI of each latent entry."""
    if ARVIZ_1:
        return az.summary(data, var_names=var_names, kind="stats", ci_kind="hdi", ci_prob=HDI_PROB)
    return az.summary(data, var_names=var_names, kind="stats", hdi_prob=HDI_PROB)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_forest(data, var_name: str, coords: dict, path: Path) -> None:
    """Save arviz's forest plot (posterior means with HDIs) of ``var_name`` at ``coords``."""
    plt = _pyplot()
    if ARVIZ_1:
        az.plot_forest(data, var_names=[var_name], coords=coords, combined=True).savefig(path)
        return
    axes = az.plot_forest(data, var_names=[var_name], coords=coords, combined=True, hdi_prob=HDI_PROB)
    fig = np.ravel(axes)[0].get_figure()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_uncertainty(uncertainty: np.ndarray, labels: np.ndarray, classes: Sequence[str], ambiguity: np.ndarray | None, path: Path) -> None:
    """Histogram of row uncertainty per class, and against ground-truth ambiguity when it is known."""
    plt = _pyplot()
    panels = 2 if ambiguity is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    bins = np.linspace(uncertainty.min(), uncertainty.max(), 40)
    for class_id, name in enumerate(classes):
        ax.hist(uncertainty[labels == class_id], bins=bins, alpha=0.5, density=True, label=str(name))
    ax.set(title="test rows: latent uncertainty by class", xlabel="row uncertainty", ylabel="density")
    ax.legend(fontsize=7)
    if ambiguity is not None:
        ax = axes[0, 1]
        ax.scatter(ambiguity, standardize(uncertainty), s=3, alpha=0.4)
        ax.set(title=f"Spearman {spearman(uncertainty, ambiguity):.3f}", xlabel="true ambiguity u",
               ylabel="standardized latent uncertainty")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_figure3(
    ambiguity: np.ndarray, scores: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "", quantile: float = 0.75
) -> None:
    """Var-JEPA Figure 3 for several uncertainty scores: risk–coverage, score vs u, ROC for u >= q.

    ``scores`` maps a name to ``(per-row score, per-row errors of the predictor it abstains for)``.
    """
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    high = ambiguity >= np.quantile(ambiguity, quantile)
    for name, (score, errors) in scores.items():
        coverage, risk = risk_coverage(errors, score)
        axes[0].plot(coverage, risk, label=f"{name} (AURC {risk.mean():.3f})")
        axes[1].scatter(ambiguity, standardize(score), s=2, alpha=0.3, label=f"{name} (ρ {spearman(score, ambiguity):.2f})")
        fpr, tpr, _ = roc_curve(high, score)
        axes[2].plot(fpr, tpr, label=f"{name} (AUC {roc_auc(high, score):.3f})")
    axes[0].set(xlabel="coverage", ylabel="risk (error rate)", title="risk–coverage")
    axes[1].set(xlabel="true ambiguity u", ylabel="standardized uncertainty", title="uncertainty vs u")
    axes[2].plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    axes[2].set(xlabel="false positive rate", ylabel="true positive rate", title=f"detecting u ≥ q{int(quantile * 100)}")
    for ax in axes:
        ax.legend(fontsize=7, markerscale=4)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
