"""Selective prediction: abstain on the rows a score ranks most uncertain, and judge that honestly.

* `selective_metrics`, `risk_coverage`, `aurc`: accuracy / macro-F1 / risk of the kept rows.
* `confidence_scores`, `random_abstention`, `error_auroc`: the baselines every latent score is
  compared with (the downstream predictor's own confidence, abstaining at random) and how well a
  score ranks the predictor's errors.
* `CombinedAbstention`: one rule from the predictor's confidence and a latent score, fitted on
  validation rows; it keeps the latent score only where the validation rows show, cross-fitted and
  bootstrapped, that it makes abstaining more accurate at the judged coverages.
* `RiskControlledAbstention`: the user names a target error rate; the rule is calibrated on
  validation rows so that the error rate of the kept rows stays at or below it with a stated
  probability (Clopper–Pearson bounds, Bonferroni over a fixed grid of thresholds).

Uncertainty scores are "higher = less sure" throughout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import beta, chi2
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import QuantileTransformer

from .metrics import classification_metrics

DROP_FRACTIONS = (0.1, 0.2, 0.5)
COMBINED_ALPHA = 0.05


def as_scores(uncertainty, n: int) -> np.ndarray:
    """``uncertainty`` as a finite float64 vector of length ``n`` (a clear error otherwise)."""
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
    drop_fractions: Sequence[float] = DROP_FRACTIONS,
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
    order = most_uncertain_first(as_scores(uncertainty, n))
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
    order = most_uncertain_first(as_scores(uncertainty, len(errors)))[::-1]
    kept = np.arange(1, len(errors) + 1)
    return kept / len(errors), np.cumsum(errors[order]) / kept


def aurc(errors: np.ndarray, uncertainty: np.ndarray) -> float:
    """Area under the risk–coverage curve: the mean risk over the coverages ``1/n, ..., 1``."""
    return float(risk_coverage(errors, uncertainty)[1].mean())


def error_auroc(errors: np.ndarray, uncertainty: np.ndarray) -> float:
    """ROC AUC of ``uncertainty`` for detecting the predictor's errors (0.5: no information; below
    0.5: the score ranks errors the wrong way). NaN when every row or no row is an error."""
    errors = np.asarray(errors).astype(bool)
    scores = as_scores(uncertainty, len(errors))
    if errors.all() or not errors.any():
        return float("nan")
    return float(roc_auc_score(errors, scores))


def confidence_scores(proba: np.ndarray) -> dict[str, np.ndarray]:
    """The downstream predictor's own uncertainty per row from its class probabilities ``(N, C)``:
    ``"max-prob"`` = 1 − the largest probability, ``"entropy"`` = predictive entropy (nats)."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"expected class probabilities of shape (N, C), got {proba.shape}")
    return {"max-prob": 1.0 - proba.max(1), "entropy": -(proba * np.log(np.clip(proba, 1e-12, None))).sum(1)}


def random_abstention(
    y_true: np.ndarray, y_pred: np.ndarray, drop_fractions: Sequence[float] = DROP_FRACTIONS, draws: int = 50, seed: int = 0
) -> dict[float, dict[str, float]]:
    """`selective_metrics` of abstaining on random rows, averaged over ``draws`` random orders: the
    baseline a score must beat (its expected accuracy equals full coverage's)."""
    rng = np.random.default_rng(seed)
    runs = [selective_metrics(y_true, y_pred, rng.permutation(len(y_true)).astype(float), drop_fractions) for _ in range(draws)]
    return {f: {k: float(np.mean([r[f][k] for r in runs])) for k in runs[0][f]} for f in drop_fractions}


def selective_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: Mapping[str, np.ndarray],
    drop_fractions: Sequence[float] = DROP_FRACTIONS,
    random_draws: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (abstention score, drop fraction) plus the random-abstention baseline
    (score ``"random"``): ``score, drop, coverage, accuracy, macro_f1, error_auroc``.

    ``drop = 0`` rows give full coverage; ``error_auroc`` is that score's AUROC for the errors of
    ``y_pred`` (NaN for the random baseline, whose expected AUROC is 0.5).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    errors = y_true != y_pred
    full = {**classification_metrics(y_true, y_pred), "coverage": 1.0}
    rows = []
    for name, score in {**scores, "random": None}.items():
        metrics = random_abstention(y_true, y_pred, drop_fractions, random_draws, seed) if score is None else selective_metrics(
            y_true, y_pred, score, drop_fractions
        )
        auroc = float("nan") if score is None else error_auroc(errors, score)
        rows += [{"score": name, "drop": f, **m, "error_auroc": auroc} for f, m in {0.0: full, **metrics}.items()]
    return pd.DataFrame(rows, columns=["score", "drop", "coverage", "accuracy", "macro_f1", "error_auroc"])


def _gaussianizer(values: np.ndarray) -> QuantileTransformer:
    """Monotone map of a score to a standard normal, fitted on validation values: makes scores of any
    scale (entropies, NLLs with heavy tails) comparable inputs of a logistic model."""
    return QuantileTransformer(n_quantiles=min(1000, len(values)), output_distribution="normal").fit(values.reshape(-1, 1))


def _log_likelihood(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(model.predict_proba(x)[:, 1], 1e-12, 1 - 1e-12)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))


def bootstrap_selective_accuracy(
    correct: np.ndarray, uncertainty: np.ndarray, weights: np.ndarray, drop_fractions: Sequence[float]
) -> np.ndarray:
    """Accuracy of the kept rows after abstaining on the most uncertain ``f`` of each bootstrap resample.

    ``weights`` holds one resample per row of the matrix (how often each validation row was drawn);
    a resample keeps its least uncertain rows up to ``(1 - f)`` of its draws. Returns an array of
    shape (resamples, len(drop_fractions)).
    """
    order = most_uncertain_first(uncertainty)[::-1]  # least uncertain first
    drawn = weights[:, order].astype(np.float64)
    hits = drawn * np.asarray(correct, dtype=np.float64)[order]
    cumulative = np.cumsum(drawn, axis=1)
    accuracy = np.empty((len(weights), len(drop_fractions)))
    for j, f in enumerate(drop_fractions):
        kept = cumulative <= (1.0 - f) * weights.sum(1, keepdims=True)
        accuracy[:, j] = (hits * kept).sum(1) / np.maximum((drawn * kept).sum(1), 1.0)
    return accuracy


@dataclass
class CombinedAbstention:
    """Abstain by the predicted probability of an error from a logistic model on the predictor's
    confidence and a latent score, both fitted on validation rows.

    The latent score enters only if the validation rows show that it helps where the rule is
    judged. The two-input model and the confidence-only one are cross-fitted (each validation row
    scored by models fitted on the other ``folds``), and a paired bootstrap over the validation rows
    counts the resamples in which the two-input ranking is *not* more accurate on average over
    ``drop_fractions``; the latent score is kept (``use_latent``) if that share (``p_value``) is below
    ``alpha``. Otherwise the rule *is* the confidence-only model, so it cannot be worse than
    confidence alone except by the test's false positives. ``test="likelihood-ratio"`` instead keeps
    it when a likelihood-ratio test of the two models at level ``alpha`` does (the earlier rule, kept
    for comparison): that asks whether the latent score improves the predicted error probabilities
    anywhere, not whether it improves the ranking at the judged coverages.
    """

    confidence_map: QuantileTransformer
    latent_map: QuantileTransformer
    model: LogisticRegression
    use_latent: bool
    p_value: float

    @classmethod
    def fit(
        cls,
        confidence: np.ndarray,
        latent: np.ndarray,
        errors: np.ndarray,
        alpha: float = COMBINED_ALPHA,
        test: str = "coverage",
        drop_fractions: Sequence[float] = DROP_FRACTIONS,
        folds: int = 5,
        resamples: int = 2000,
        seed: int = 0,
    ) -> CombinedAbstention:
        """Fit on validation rows: the predictor's confidence score, the latent score, its 0/1 errors."""
        if test not in ("coverage", "likelihood-ratio"):
            raise ValueError(f"test must be 'coverage' or 'likelihood-ratio', got {test!r}")
        errors = np.asarray(errors).astype(int)
        confidence, latent = as_scores(confidence, len(errors)), as_scores(latent, len(errors))
        if errors.all() or not errors.any():
            raise ValueError("the validation rows need both errors and correct predictions to fit an abstention rule")
        confidence_map, latent_map = _gaussianizer(confidence), _gaussianizer(latent)
        x = np.column_stack([confidence_map.transform(confidence[:, None])[:, 0], latent_map.transform(latent[:, None])[:, 0]])
        alone = LogisticRegression(C=np.inf).fit(x[:, :1], errors)
        both = LogisticRegression(C=np.inf).fit(x, errors)
        if test == "likelihood-ratio":
            deviance = 2.0 * (_log_likelihood(both, x, errors) - _log_likelihood(alone, x[:, :1], errors))
            p_value = float(chi2.sf(max(deviance, 0.0), df=1))
        else:
            p_value = _coverage_test(x, errors, drop_fractions, folds, resamples, seed)
        use_latent = p_value < alpha
        return cls(confidence_map, latent_map, both if use_latent else alone, use_latent, p_value)

    def score(self, confidence: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Predicted error probability per row (higher = abstain first)."""
        confidence = np.asarray(confidence, dtype=np.float64)
        columns = [self.confidence_map.transform(confidence[:, None])[:, 0]]
        if self.use_latent:
            columns.append(self.latent_map.transform(np.asarray(latent, dtype=np.float64)[:, None])[:, 0])
        return self.model.predict_proba(np.column_stack(columns))[:, 1]


def describe_coverage_test(drop_fractions: Sequence[float] = DROP_FRACTIONS, alpha: float = COMBINED_ALPHA) -> str:
    """The coverage test of `CombinedAbstention` in words, for reports: "cross-fitted on the validation
    rows, it makes abstaining more accurate on average over 10/20/50 % dropped in at least 95 % of
    bootstrap resamples" for the defaults."""
    shares = "/".join(f"{100 * f:g}" for f in drop_fractions)
    return (f"cross-fitted on the validation rows, it makes abstaining more accurate on average over {shares} % dropped "
            f"in at least {100 * (1 - alpha):g} % of bootstrap resamples")


def _coverage_test(x: np.ndarray, errors: np.ndarray, drop_fractions: Sequence[float], folds: int, resamples: int, seed: int) -> float:
    """Share of bootstrap resamples of the validation rows in which the cross-fitted two-input rule is
    *not* more accurate than the confidence-only rule on average over ``drop_fractions``."""
    if errors.sum() < folds or (1 - errors).sum() < folds:
        return 1.0  # too few errors (or correct rows) to cross-fit: no evidence for the latent score
    held_out = {1: np.empty(len(errors)), 2: np.empty(len(errors))}
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, errors):
        for inputs in held_out:
            model = LogisticRegression(C=np.inf).fit(x[train, :inputs], errors[train])
            held_out[inputs][test] = model.predict_proba(x[test, :inputs])[:, 1]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(errors), np.full(len(errors), 1.0 / len(errors)), size=resamples)
    correct = 1 - errors
    gain = bootstrap_selective_accuracy(correct, held_out[2], weights, drop_fractions) - bootstrap_selective_accuracy(
        correct, held_out[1], weights, drop_fractions
    )
    return float((gain.mean(1) <= 0).mean())


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """One-sided (1 − delta) Clopper–Pearson upper bound on a binomial error rate from ``errors`` of ``n``."""
    if n == 0:
        return 1.0
    return 1.0 if errors >= n else float(beta.ppf(1.0 - delta, errors + 1, n - errors))


@dataclass
class RiskControlledAbstention:
    """Keep the rows whose uncertainty is at most ``threshold``, chosen on validation rows so that
    the error rate among kept rows is at most ``target`` with probability at least 1 − ``delta``.

    Calibration (Learn-then-Test with a Bonferroni correction, Angelopoulos et al. 2021): candidate
    thresholds are the validation-score quantiles at ``grid`` coverages 1/grid, 2/grid, ..., 1 (fixed
    in advance); each gets a one-sided Clopper–Pearson bound on the error rate of the rows it keeps at
    level ``delta / grid``, and the largest threshold whose bound is at most ``target`` is kept
    (``-inf``, abstaining on everything, if none is). All bounds hold together with probability at
    least 1 − ``delta``, so the *population* error rate of the kept rows is at most ``target`` with that
    probability; the realised rate on a finite test split scatters around it. (A binary search or a
    fixed sequence tests fewer thresholds, but one unlucky early test then ends with nothing kept.)
    """

    target: float
    delta: float
    threshold: float
    calibration_coverage: float
    calibration_bound: float

    @classmethod
    def fit(cls, uncertainty: np.ndarray, errors: np.ndarray, target: float, delta: float = 0.1, grid: int = 20) -> RiskControlledAbstention:
        """Calibrate on validation rows (uncertainty score, 0/1 errors of the predictor)."""
        if not 0.0 < target < 1.0 or not 0.0 < delta < 1.0 or grid < 1:
            raise ValueError(f"target and delta must be in (0, 1) and grid >= 1, got {target}, {delta}, {grid}")
        errors = np.asarray(errors).astype(int)
        scores = as_scores(uncertainty, len(errors))
        order = np.argsort(scores, kind="stable")
        sorted_scores, cumulative = scores[order], np.cumsum(errors[order])
        chosen = cls(target, delta, -np.inf, 0.0, 1.0)
        for coverage in np.arange(1, grid + 1) / grid:
            threshold = float(np.quantile(scores, coverage, method="inverted_cdf"))
            kept = int(np.searchsorted(sorted_scores, threshold, side="right"))
            bound = clopper_pearson_upper(int(cumulative[kept - 1]), kept, delta / grid)
            if bound <= target and threshold > chosen.threshold:
                chosen = cls(target, delta, threshold, kept / len(scores), bound)
        return chosen

    def keep(self, uncertainty: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows the rule predicts on."""
        return np.asarray(uncertainty, dtype=np.float64) <= self.threshold

    def evaluate(self, uncertainty: np.ndarray, errors: np.ndarray) -> dict[str, float]:
        """Realised coverage and error rate of the kept test rows, and whether the target holds."""
        keep = self.keep(uncertainty)
        errors = np.asarray(errors, dtype=np.float64)
        error = float(errors[keep].mean()) if keep.any() else 0.0
        return {"target": self.target, "delta": self.delta, "coverage": float(keep.mean()), "error": error,
                "met": bool(error <= self.target), "calibration_coverage": self.calibration_coverage,
                "calibration_bound": self.calibration_bound}


# The confidence score the combined and risk-controlled rules use (for two classes it ranks rows as the entropy does).
CONFIDENCE = "max-prob"


def abstention_study(
    y_val: np.ndarray,
    proba_val: np.ndarray,
    y_test: np.ndarray,
    proba_test: np.ndarray,
    latent_val: np.ndarray | None = None,
    latent_test: np.ndarray | None = None,
    risk_target: float | None = None,
    delta: float = 0.1,
    drop_fractions: Sequence[float] = DROP_FRACTIONS,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict | None]:
    """Every abstention rule for one trained predictor, judged on the test rows.

    Rules: the predictor's confidence (``"max-prob"``, ``"entropy"``), the latent score alone
    (``"latent"``), `CombinedAbstention` of max-prob and the latent score fitted on the validation rows
    (``"combined"``, the default rule where a latent score exists; ``"combined-lrt"``, the same with the
    likelihood-ratio test, for comparison) and ``"random"``; see `selective_report` for the columns, plus
    ``uses_latent`` (whether a combined rule kept the latent score; empty for the other rules). With
    ``risk_target`` the default rule (combined, else max-prob) is also calibrated on validation rows by
    `RiskControlledAbstention` and its test outcome returned (else None).
    """
    errors_val = np.asarray(y_val) != proba_val.argmax(1)
    confidence_val, confidence_test = confidence_scores(proba_val), confidence_scores(proba_test)
    scores = dict(confidence_test)
    default_val, default_test, uses_latent = confidence_val[CONFIDENCE], confidence_test[CONFIDENCE], {}
    if latent_val is not None and latent_test is not None:
        rules = {name: CombinedAbstention.fit(confidence_val[CONFIDENCE], latent_val, errors_val, test=test,
                                              drop_fractions=drop_fractions, seed=seed)
                 for name, test in (("combined", "coverage"), ("combined-lrt", "likelihood-ratio"))}
        scores["latent"] = np.asarray(latent_test, dtype=np.float64)
        scores |= {name: rule.score(confidence_test[CONFIDENCE], latent_test) for name, rule in rules.items()}
        uses_latent = {name: rule.use_latent for name, rule in rules.items()}
        default_val, default_test = rules["combined"].score(confidence_val[CONFIDENCE], latent_val), scores["combined"]
    report = selective_report(y_test, proba_test.argmax(1), scores, drop_fractions, seed=seed)
    report["uses_latent"] = pd.Series([uses_latent.get(name) for name in report["score"]], index=report.index, dtype=object)
    if risk_target is None:
        return report, None
    risk = RiskControlledAbstention.fit(default_val, errors_val, risk_target, delta)
    return report, risk.evaluate(default_test, np.asarray(y_test) != proba_test.argmax(1))
