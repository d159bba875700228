"""Representation-collapse diagnostics and a fast linear probe for checkpoint selection.

Every function accepts an ``(N, F)`` matrix or ``(N, D, d)`` token embeddings (numpy or torch);
token embeddings are flattened to ``(N, D * d)``, the representation the downstream models see.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import RidgeClassifier
from sklearn.preprocessing import StandardScaler

from .downstream import as_feature_matrix
from .metrics import classification_metrics
from .selective import selective_metrics


def per_dimension_std(emb: np.ndarray | torch.Tensor) -> np.ndarray:
    """Standard deviation (ddof=0) of every flattened feature over the rows, shape ``(F,)``."""
    return as_feature_matrix(emb).std(axis=0, dtype=np.float64)


def effective_rank(emb: np.ndarray | torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli, 2007) of the column-centered embedding matrix.

    ``exp(H(p))`` with ``p`` the singular values normalized to sum to 1; it lies in
    ``[1, min(N - 1, F)]``, and is 0.0 for a constant (fully collapsed) matrix.
    Costs one SVD, ``O(N * F * min(N, F))``: subsample rows first for large embeddings.
    """
    x = as_feature_matrix(emb).astype(np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    total = s.sum()
    if total <= 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_cosine_similarity(emb: np.ndarray | torch.Tensor, max_rows: int = 1000, seed: int = 0) -> float:
    """Mean cosine similarity over distinct pairs of (uncentered) rows.

    Rows are subsampled to at most ``max_rows`` (without replacement, seeded) to bound the
    quadratic cost. Zero rows count as orthogonal to everything; NaN if fewer than two rows.
    """
    x = as_feature_matrix(emb).astype(np.float64)
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), size=max_rows, replace=False)]
    m = len(x)
    if m < 2:
        return float("nan")
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    gram = z @ z.T
    return float((gram.sum() - np.trace(gram)) / (m * (m - 1)))


def collapse_report(emb: np.ndarray | torch.Tensor, max_rows: int = 1000, seed: int = 0) -> dict[str, float]:
    """Summary of complete and dimensional collapse.

    Returns:
        ``mean_std`` and ``min_std`` of the per-dimension std, ``effective_rank``,
        ``effective_rank_ratio`` (effective rank / F; note it cannot exceed ``(N - 1) / F``),
        and ``mean_cosine`` (`mean_cosine_similarity` on up to ``max_rows`` rows).
    """
    x = as_feature_matrix(emb)
    std = per_dimension_std(x)
    rank = effective_rank(x)
    return {
        "mean_std": float(std.mean()),
        "min_std": float(std.min()),
        "effective_rank": rank,
        "effective_rank_ratio": rank / x.shape[1],
        "mean_cosine": mean_cosine_similarity(x, max_rows=max_rows, seed=seed),
    }


def linear_probe_accuracy(
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray,
    x_val: np.ndarray | torch.Tensor,
    y_val: np.ndarray,
    uncertainty: np.ndarray | None = None,
    drop_fraction: float = 0.2,
) -> float:
    """Validation accuracy of a closed-form ridge classifier on train-standardized embeddings.

    Meant for label-based checkpoint selection (reference §8.2): fast and deterministic. With
    ``uncertainty`` (per validation row) the ``drop_fraction`` most uncertain validation rows are
    discarded before scoring, the *filtered* accuracy the reference uses to select Var-T-JEPA checkpoints.
    """
    scaler = StandardScaler().fit(as_feature_matrix(x_train))
    with warnings.catch_warnings():
        # Flattened token embeddings are often nearly collinear; the ridge penalty keeps the solve
        # well-defined, so scipy's ill-conditioning warning is noise here.
        warnings.simplefilter("ignore", LinAlgWarning)
        probe = RidgeClassifier(alpha=1.0).fit(scaler.transform(as_feature_matrix(x_train)), np.asarray(y_train))
    y_pred = probe.predict(scaler.transform(as_feature_matrix(x_val)))
    if uncertainty is None:
        return classification_metrics(y_val, y_pred)["accuracy"]
    return selective_metrics(y_val, y_pred, uncertainty, (drop_fraction,))[drop_fraction]["accuracy"]
