"""Latent uncertainty in arviz, and plots of uncertainty scores.

The scores themselves are computed by the models (``method.scores``, `pyro_jepa.models.scores`);
selective prediction and scores against a known ambiguity live in `pyro_jepa.evaluate.selective`
and `pyro_jepa.evaluate.ambiguity`.

arviz 0.23 (Python 3.11) and 1.x (Python >= 3.12) differ in how data is built and summarized;
the small adapters here hide that: 0.x stores iid guide draws as one chain (``chain``, ``draw``),
1.x as a single ``sample`` dimension.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyro.infer import Predictive
from sklearn.metrics import roc_curve

from .evaluate.metrics import roc_auc, spearman, standardize
from .evaluate.selective import risk_coverage
from .report import figure, save_figure

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # 0.23 announces the 1.x refactor on import
    import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
HDI_PROB = 0.9


@torch.no_grad()
def sample_latents(method, rows: torch.Tensor, num_samples: int = 200) -> dict[str, np.ndarray]:
    """Draw ``num_samples`` joint guide samples of ``s_x``, ``z`` and ``s_w`` for each row.

    The whole row is the context and the single "target mask" covers every token, so ``s_w``
    is the posterior of the full-row representation used downstream. Shapes:
    ``s_x (S, N, T, d)``, ``z (S, N, d)``, ``s_w (S, N, T, d)`` (``T`` tokens: one per feature
    unless the model groups them).
    """
    n, t = rows.shape[0], method.n_tokens
    context = torch.arange(t, device=rows.device).expand(n, t)
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
    """arviz data with dims ``row``, ``feature``, ``latent`` (plus the sample dims of the version).

    ``feature_names`` name the model's tokens (`MaskedTabular.token_names`): the features, or
    their groups when the model groups them."""
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


def plot_forest(data, var_name: str, coords: dict, path: Path) -> None:
    """Save arviz's forest plot (posterior means with HDIs) of ``var_name`` at ``coords``."""
    if ARVIZ_1:  # arviz-plots draws and saves its own plot collection
        az.plot_forest(data, var_names=[var_name], coords=coords, combined=True).savefig(path)
        return
    fig, ax = figure(size=(6.0, 8.0))
    az.plot_forest(data, var_names=[var_name], coords=coords, combined=True, hdi_prob=HDI_PROB, ax=ax)
    save_figure(fig, path, bbox_inches="tight")


def plot_uncertainty(uncertainty: np.ndarray, labels: np.ndarray, classes: Sequence[str], ambiguity: np.ndarray | None, path: Path) -> None:
    """Histogram of row uncertainty per class, and against ground-truth ambiguity when it is known."""
    fig, axes = figure(1, 2 if ambiguity is not None else 1, squeeze=False)
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
    save_figure(fig, path)


def plot_figure3(
    ambiguity: np.ndarray, scores: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "", quantile: float = 0.75
) -> None:
    """Var-JEPA Figure 3 for several uncertainty scores: risk–coverage, score vs u, ROC for u >= q.

    ``scores`` maps a name to ``(per-row score, per-row errors of the predictor it abstains for)``.
    """
    fig, axes = figure(1, 3, size=(5.0, 4.2))
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
    save_figure(fig, path)
