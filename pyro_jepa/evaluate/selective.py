"""Selective prediction: abstain on the most uncertain rows, risk–coverage curves and their summaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import classification_metrics, roc_auc, spearman


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
