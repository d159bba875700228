"""Metrics shared by the evaluations: classification scores, rank correlation, ROC AUC."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 (over the classes present in ``y_true`` or ``y_pred``)."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get average ranks; scipy)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two equally long samples of at least 2 values, got shapes {a.shape} and {b.shape}")
    return float(spearmanr(a, b).statistic)


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for the boolean ``positive``: P(score_pos > score_neg) + P(tie) / 2 (sklearn)."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("ROC AUC needs both positive and negative rows")
    return float(roc_auc_score(positive, np.asarray(score, dtype=np.float64)))


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (the paper's "standardized latent uncertainty")."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / (x.std() or 1.0)
