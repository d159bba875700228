"""Scores against a known per-row ambiguity u (SIM, corrupted MNIST): Var-JEPA Figure 3's numbers
and the supervised ceiling that says how high they can go on a given table."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from .metrics import roc_auc, spearman
from .selective import aurc


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


def supervised_ceiling(
    x_train: np.ndarray, u_train: np.ndarray, x_test: np.ndarray, u_test: np.ndarray, quantile: float = 0.75, seed: int = 0
) -> dict[str, float]:
    """How well u can be read off the features at all: a gradient-boosting regressor trained *on u*
    (train rows), scored on test rows by Spearman and by ROC AUC for ``u >= quantile(u)``.

    No label-free score is trained on u, so this is the practical ceiling of any per-row score on the
    table (a better regressor could raise it a little; the Bayes limit is unknown).
    """
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=seed)
    prediction = model.fit(np.asarray(x_train, dtype=np.float64), np.asarray(u_train, dtype=np.float64)).predict(x_test)
    u_test = np.asarray(u_test, dtype=np.float64)
    return {"spearman": spearman(prediction, u_test), "roc_auc": roc_auc(u_test >= np.quantile(u_test, quantile), prediction)}


def feature_predictability(x_train: np.ndarray, x_test: np.ndarray, alpha: float = 1.0) -> float:
    """How much of each feature the rest of its row predicts: every column of ``x_test`` from the
    others by a ridge regression fitted on ``x_train``, scored as ``1 − Σ (x − x̂)² / Σ x²`` over all
    test entries. On columns standardized with training statistics (as `load_dataset` makes them)
    0 means no better than the training mean and 1 means exact.

    A reference for a JEPA predictor's skill on the same columns (see ``experiments/uncertainty.py``):
    the regression sees every other feature where the predictor sees only its context, and it is
    linear, so it is neither an upper nor a lower bound, but a predictor far below it has not learned
    what the table makes predictable.
    """
    x_train, x_test = np.asarray(x_train, dtype=np.float64), np.asarray(x_test, dtype=np.float64)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1] or x_train.shape[1] < 2:
        raise ValueError(f"expected two tables (rows, columns) with the same >= 2 columns, got {x_train.shape} and {x_test.shape}")
    error = 0.0
    for j in range(x_train.shape[1]):
        others = np.delete(np.arange(x_train.shape[1]), j)
        model = Ridge(alpha=alpha).fit(x_train[:, others], x_train[:, j])
        error += float(((x_test[:, j] - model.predict(x_test[:, others])) ** 2).sum())
    return 1.0 - error / float((x_test**2).sum())
