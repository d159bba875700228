"""Latent uncertainty: per-row scores and arviz summaries of the guide's posterior samples.

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

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # 0.23 announces the 1.x refactor on import
    import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
HDI_PROB = 0.9


def row_uncertainty(scale: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Aggregate posterior standard deviations ``(N, ...)`` to one score per row.

    ``how="mean"`` averages all entries (the paper's choice for real data); ``"q90"`` takes their
    90th percentile (its choice for MNIST and SIM, to capture tail behaviour).
    """
    flat = scale.flatten(1)
    if how == "mean":
        return flat.mean(1)
    if how == "q90":
        return flat.quantile(0.9, dim=1)
    raise ValueError(f"how must be 'mean' or 'q90', got {how!r}")


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


def plot_forest(data, var_name: str, coords: dict, path: Path) -> None:
    """Save arviz's forest plot (posterior means with HDIs) of ``var_name`` at ``coords``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ARVIZ_1:
        az.plot_forest(data, var_names=[var_name], coords=coords, combined=True).savefig(path)
        return
    axes = az.plot_forest(data, var_names=[var_name], coords=coords, combined=True, hdi_prob=HDI_PROB)
    fig = np.ravel(axes)[0].get_figure()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
