"""Selective prediction (pyro_jepa.evaluate.selective) and scores against a known ambiguity (evaluate.ambiguity)."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pyro_jepa.evaluate import classification_metrics
from pyro_jepa.evaluate.ambiguity import ambiguity_scores, feature_predictability, supervised_ceiling
from pyro_jepa.evaluate.metrics import roc_auc, spearman
from pyro_jepa.evaluate.selective import (
    CombinedAbstention,
    RiskControlledAbstention,
    abstention_study,
    aurc,
    bootstrap_selective_accuracy,
    clopper_pearson_upper,
    confidence_scores,
    describe_coverage_test,
    error_auroc,
    random_abstention,
    risk_coverage,
    selective_metrics,
    selective_report,
)


def test_risk_coverage_and_aurc_by_hand():
    errors = np.array([0, 1, 0, 1])
    uncertainty = np.array([0.1, 0.4, 0.2, 0.3])
    # Keep least uncertain first: rows 0, 2, 3, 1 -> errors 0, 0, 1, 1.
    coverage, risk = risk_coverage(errors, uncertainty)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 0, 1 / 3, 1 / 2])
    assert aurc(errors, uncertainty) == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    # This ranking is perfect (both errors are the most uncertain rows): the lowest possible area;
    # the reversed ranking gives the highest, (1 + 1 + 2/3 + 1/2) / 4.
    assert aurc(errors, errors) == aurc(errors, uncertainty)
    assert aurc(errors, -uncertainty) == pytest.approx((1 + 1 + 2 / 3 + 1 / 2) / 4)
    with pytest.raises(ValueError, match="NaN"):
        aurc(errors, np.array([0.1, np.nan, 0.2, 0.3]))
    with pytest.raises(ValueError, match="one per row"):
        aurc(errors, uncertainty[:3])


def test_spearman_and_roc_auc_agree_with_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    b = a + rng.normal(size=300)
    b[::7] = b[0]  # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    positive = rng.uniform(size=300) < 0.3
    score = np.round(a + positive, 1)  # coarse: many ties
    assert roc_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.ones(5, dtype=bool), np.arange(5.0))


def test_ambiguity_scores_of_a_perfect_score():
    u = np.linspace(0, 1, 101)
    errors = (u > 0.8).astype(float)
    scores = ambiguity_scores(2 * u + 1, u, errors)
    assert scores["spearman"] == pytest.approx(1.0)
    assert scores["roc_auc"] == pytest.approx(1.0)
    assert scores["aurc"] == pytest.approx(aurc(errors, u))


def test_supervised_ceiling_reads_u_off_informative_features_only():
    rng = np.random.default_rng(0)
    u = rng.uniform(size=1500)
    informative = np.column_stack([u + 0.05 * rng.normal(size=1500), rng.normal(size=1500)])
    noise = rng.normal(size=(1500, 2))
    high = supervised_ceiling(informative[:1000], u[:1000], informative[1000:], u[1000:])
    low = supervised_ceiling(noise[:1000], u[:1000], noise[1000:], u[1000:])
    assert high["spearman"] > 0.95 and high["roc_auc"] > 0.95
    assert abs(low["spearman"]) < 0.15 and abs(low["roc_auc"] - 0.5) < 0.1


def test_feature_predictability_known_answer():
    # Columns 0 and 1 determine each other up to noise of variance 0.01; column 2 is independent, so
    # the pooled score is (0.99 + 0.99 + 0) / 3 for unit-variance columns.
    rng = np.random.default_rng(0)
    a = rng.normal(size=20_000)
    x = np.column_stack([a, a + 0.1 * rng.normal(size=20_000), rng.normal(size=20_000)])
    x = (x - x[:10_000].mean(0)) / x[:10_000].std(0)
    assert feature_predictability(x[:10_000], x[10_000:]) == pytest.approx(2 * (1 - 0.01 / 1.01) / 3, abs=0.01)
    noise = rng.normal(size=(2000, 4))
    assert abs(feature_predictability(noise[:1000], noise[1000:])) < 0.01
    with pytest.raises(ValueError, match="same >= 2 columns"):
        feature_predictability(x[:10, :2], x[:10])


def test_selective_metrics_by_hand() -> None:
    y_true = np.zeros(10, dtype=int)
    y_pred = np.zeros(10, dtype=int)
    y_pred[[1, 3, 6]] = 1  # the wrong predictions
    # Drop order: 1 (.9), 3 (.8), 7 (.5), 8 (.4), then the .3 tie {4, 5, 6} from the lowest index.
    uncertainty = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.3, 0.3, 0.5, 0.4, 0.0])
    result = selective_metrics(y_true, y_pred, uncertainty)
    assert sorted(result) == [0.1, 0.2, 0.5]
    assert result[0.1]["accuracy"] == pytest.approx(7 / 9)  # dropped {1}
    assert result[0.2]["accuracy"] == pytest.approx(7 / 8)  # dropped {1, 3}
    assert result[0.5]["accuracy"] == pytest.approx(4 / 5)  # dropped {1, 3, 7, 8, 4}: wrong row 6 kept
    assert [result[f]["coverage"] for f in (0.1, 0.2, 0.5)] == pytest.approx([0.9, 0.8, 0.5])
    kept = [0, 2, 5, 6, 9]
    assert result[0.5]["macro_f1"] == pytest.approx(classification_metrics(y_true[kept], y_pred[kept])["macro_f1"])


def test_selective_metrics_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError):
        selective_metrics(np.zeros(4), np.zeros(4), np.zeros(4), drop_fractions=(1.0,))


def test_confidence_scores_and_error_auroc_by_hand():
    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    conf = confidence_scores(proba)
    np.testing.assert_allclose(conf["max-prob"], [0.1, 0.5, 0.2])
    np.testing.assert_allclose(conf["entropy"], [-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)), np.log(2), -(0.2 * np.log(0.2) + 0.8 * np.log(0.8))])
    errors = np.array([0, 1, 0, 1])
    assert error_auroc(errors, np.array([0.1, 0.9, 0.2, 0.8])) == 1.0
    assert error_auroc(errors, np.array([0.9, 0.1, 0.8, 0.2])) == 0.0
    assert error_auroc(errors, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(error_auroc(np.zeros(4), np.arange(4.0)))


def test_random_abstention_keeps_the_full_coverage_accuracy_on_average():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 2000)
    y_pred = np.where(rng.uniform(size=2000) < 0.8, y_true, 1 - y_true)
    full = classification_metrics(y_true, y_pred)["accuracy"]
    result = random_abstention(y_true, y_pred, (0.1, 0.5), draws=100)
    for f in (0.1, 0.5):
        assert result[f]["accuracy"] == pytest.approx(full, abs=0.005)
        assert result[f]["coverage"] == pytest.approx(1 - f)


def test_selective_report_rows():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 500)
    y_pred = np.where(rng.uniform(size=500) < 0.7, y_true, (y_true + 1) % 3)
    errors = (y_true != y_pred).astype(float)
    report = selective_report(y_true, y_pred, {"oracle": errors + 0.01 * rng.uniform(size=500), "noise": rng.uniform(size=500)})
    assert set(report["score"]) == {"oracle", "noise", "random"}
    oracle = report[report["score"] == "oracle"].set_index("drop")
    assert oracle.loc[0.0, "accuracy"] == pytest.approx(1 - errors.mean())
    assert list(oracle["accuracy"]) == sorted(oracle["accuracy"])  # rises as the errors are dropped first
    assert oracle["error_auroc"].iloc[0] == pytest.approx(1.0)
    assert report.loc[report["score"] == "random", "error_auroc"].isna().all()


def test_clopper_pearson_upper_bound_by_hand():
    # Zero errors in n rows: the bound solves (1 - p)^n = delta.
    assert clopper_pearson_upper(0, 100, 0.1) == pytest.approx(1 - 0.1 ** (1 / 100))
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0 and clopper_pearson_upper(0, 0, 0.1) == 1.0
    assert clopper_pearson_upper(10, 100, 0.05) > clopper_pearson_upper(10, 100, 0.2) > 0.1


def synthetic_errors(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores s ~ U(0, 1) with a known error probability 0.02 + 0.3 s^2: the error rate of the rows
    with s <= t is 0.02 + 0.1 t^2."""
    s = rng.uniform(size=n)
    return s, (rng.uniform(size=n) < 0.02 + 0.3 * s**2).astype(int)


def test_risk_controlled_rule_holds_its_bound_over_repeated_draws():
    rng = np.random.default_rng(3)
    target, delta = 0.08, 0.1
    population_risks, realised, coverages = [], [], []
    for _ in range(300):
        rule = RiskControlledAbstention.fit(*synthetic_errors(rng, 1000), target=target, delta=delta)
        t = min(max(rule.threshold, 0.0), 1.0)
        population_risks.append(0.02 + 0.1 * t**2 if t > 0 else 0.0)
        outcome = rule.evaluate(*synthetic_errors(rng, 2000))
        realised.append(outcome["error"])
        coverages.append(outcome["coverage"])
    population_risks = np.array(population_risks)
    # The guarantee: P(risk of the chosen rule > target) <= delta (allowing for 300 draws' noise).
    assert (population_risks > target).mean() <= delta + 0.03
    assert (np.array(realised) > target).mean() <= 0.2
    # ... and it is not vacuous: the best threshold keeps sqrt(0.6) = 77 % of the rows.
    assert 0.4 < np.mean(coverages) < 0.775 and (np.array(coverages) < 0.2).mean() < 0.05


def test_risk_controlled_rule_abstains_on_everything_when_the_target_is_out_of_reach():
    rng = np.random.default_rng(4)
    rule = RiskControlledAbstention.fit(*synthetic_errors(rng, 1000), target=0.005, delta=0.1)
    assert rule.threshold == -np.inf and rule.keep(np.array([0.0, 0.5])).sum() == 0
    assert rule.evaluate(np.array([0.1, 0.2]), np.array([1, 0]))["coverage"] == 0.0


def toy_selective_problem(rng: np.random.Generator, n: int, latent_signal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Errors driven by a hidden difficulty; the confidence sees part of it, the latent score sees
    another part (``latent_signal`` = 0: pure noise)."""
    a, b = rng.normal(size=n), rng.normal(size=n)
    errors = (rng.uniform(size=n) < 1 / (1 + np.exp(-(-2.0 + 1.2 * a + latent_signal * b)))).astype(int)
    confidence = np.exp(0.5 * a)  # any monotone scale: the rule gaussianizes its inputs
    latent = b + 0.3 * rng.normal(size=n) if latent_signal else rng.normal(size=n)
    return confidence, latent, errors


def test_bootstrap_selective_accuracy_by_hand_and_against_selective_metrics():
    correct = np.array([1, 0, 1, 1, 0])
    uncertainty = np.array([0.1, 0.9, 0.3, 0.2, 0.5])
    # Least uncertain first: rows 0, 3, 2, 4, 1 (correct 1, 1, 1, 0, 0).
    # Resample 1 draws row 4 three times and row 0 twice: keeping 60 % of 5 draws keeps row 0's two.
    # Resample 2 draws rows 0, 3, 2, 4, 1 once each: 60 % keeps rows 0, 3, 2.
    weights = np.array([[2, 0, 0, 0, 3], [1, 1, 1, 1, 1]])
    accuracy = bootstrap_selective_accuracy(correct, uncertainty, weights, [0.4, 0.0])
    np.testing.assert_allclose(accuracy, [[1.0, 2 / 5], [1.0, 3 / 5]])
    rng = np.random.default_rng(3)
    scores, hits = rng.normal(size=200), rng.integers(0, 2, 200)
    y_true, y_pred = np.zeros(200, int), 1 - hits
    expected = [selective_metrics(y_true, y_pred, scores, [f])[f]["accuracy"] for f in (0.1, 0.2, 0.5)]
    np.testing.assert_allclose(bootstrap_selective_accuracy(hits, scores, np.ones((1, 200), int), (0.1, 0.2, 0.5))[0], expected)


@pytest.mark.parametrize("test", ["coverage", "likelihood-ratio"])
@pytest.mark.parametrize("latent_signal", [0.0, 1.0])
def test_combined_rule_vs_confidence_alone(latent_signal, test):
    rng = np.random.default_rng(5)
    gains, accuracy_gains, used = [], [], []
    for _ in range(40):
        confidence, latent, errors = toy_selective_problem(rng, 1000, latent_signal)
        rule = CombinedAbstention.fit(confidence, latent, errors, test=test)
        test_conf, test_latent, test_errors = toy_selective_problem(rng, 2000, latent_signal)
        gains.append(error_auroc(test_errors, rule.score(test_conf, test_latent)) - error_auroc(test_errors, test_conf))
        accuracy = [bootstrap_selective_accuracy(1 - test_errors, score, np.ones((1, 2000), int), (0.1, 0.2, 0.5))[0]
                    for score in (rule.score(test_conf, test_latent), test_conf)]
        accuracy_gains.append(accuracy[0] - accuracy[1])
        used.append(rule.use_latent)
    if latent_signal:
        assert np.mean(used) == 1.0 and np.mean(gains) > 0.05
        assert (np.mean(accuracy_gains, axis=0) > 0.01).all()
    else:
        # Pure noise: the test keeps it out at about its 5 % level, and the rule is never worse
        # than confidence alone beyond sampling noise.
        assert np.mean(used) <= 0.15
        assert np.mean(gains) > -0.003 and min(gains) > -0.02
        if test == "coverage":  # the cross-fitted noise model ranks worse, so the bootstrap never keeps it here
            assert not any(used) and np.abs(accuracy_gains).max() < 1e-12


def test_combined_rule_refuses_an_unknown_test():
    confidence, latent, errors = toy_selective_problem(np.random.default_rng(0), 100, 1.0)
    with pytest.raises(ValueError, match="test must be"):
        CombinedAbstention.fit(confidence, latent, errors, test="t-test")


def test_coverage_test_description_follows_its_settings():
    assert "over 10/20/50 % dropped in at least 95 % of bootstrap resamples" in describe_coverage_test()
    assert "over 5/30 % dropped in at least 99 % of bootstrap resamples" in describe_coverage_test((0.05, 0.3), alpha=0.01)


def test_abstention_study_rows_and_risk_outcome():
    rng = np.random.default_rng(6)

    def split(n):
        confidence, latent, errors = toy_selective_problem(rng, n, 1.0)
        y = rng.integers(0, 2, n)
        p_pred = 0.5 + 0.5 / (1 + confidence)  # probability of the predicted class, falling with the confidence score
        pred = np.where(errors == 1, 1 - y, y)
        proba = np.where(pred[:, None] == np.arange(2), p_pred[:, None], 1 - p_pred[:, None])
        return y, proba, latent

    (y_val, p_val, l_val), (y_test, p_test, l_test) = split(2000), split(2000)
    report, risk = abstention_study(y_val, p_val, y_test, p_test, l_val, l_test, risk_target=0.05)
    assert set(report["score"]) == {"max-prob", "entropy", "latent", "combined", "combined-lrt", "random"}
    uses_latent = report.drop_duplicates("score").set_index("score")["uses_latent"]
    assert uses_latent["combined"] is True and uses_latent["combined-lrt"] is True and uses_latent[["max-prob", "latent"]].isna().all()
    auroc = report[report["drop"] == 0].set_index("score")["error_auroc"]
    assert auroc["combined"] > auroc["max-prob"] and auroc["combined"] > auroc["latent"]
    assert risk["target"] == 0.05 and 0 < risk["coverage"] < 1 and risk["error"] <= 0.05 + 0.01
    report, risk = abstention_study(y_val, p_val, y_test, p_test)
    assert set(report["score"]) == {"max-prob", "entropy", "random"} and risk is None
