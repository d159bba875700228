"""Row uncertainty scores and the arviz view of guide samples."""

import numpy as np
import pytest
import torch

from pyro_jepa.models import TJEPA, TabularJEPAConfig, VarTJEPA
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pyro_jepa.evaluate import ambiguity_scores, aurc, classification_metrics, risk_coverage, roc_auc, selective_metrics, spearman
from pyro_jepa.models import row_uncertainty
from pyro_jepa.uncertainty import ARVIZ_1, sample_latents, summarize, to_inference_data

SMALL = TabularJEPAConfig(dim=4, depth=1, heads=2, ff=8, dropout=0.0, n_pool=2, pred_dim=4, pred_depth=1, pred_heads=2, pred_ff=8)


def test_row_uncertainty_mean_and_q90():
    scale = torch.arange(1, 21, dtype=torch.float).reshape(1, 4, 5).repeat(2, 1, 1)
    torch.testing.assert_close(row_uncertainty(scale, "mean"), torch.full((2,), 10.5))
    torch.testing.assert_close(row_uncertainty(scale, "q90"), torch.full((2,), float(np.quantile(np.arange(1, 21), 0.9))))
    with pytest.raises(ValueError):
        row_uncertainty(scale, "max")


def test_entropy_score_is_the_closed_form_gaussian_entropy():
    scale = torch.tensor([[[0.5, 2.0], [1.0, 0.1]], [[1.0, 1.0], [1.0, 1.0]]])
    expected = torch.distributions.Normal(torch.zeros_like(scale), scale).entropy().flatten(1).sum(1)
    torch.testing.assert_close(row_uncertainty(scale, "entropy"), expected)
    # Unit stds: 4 * 0.5 * log(2 pi e), by hand.
    assert row_uncertainty(scale, "entropy")[1].item() == pytest.approx(2 * np.log(2 * np.pi * np.e), rel=1e-6)


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


def test_inference_data_has_named_dims_and_matches_the_posterior(schema, table):
    torch.manual_seed(0)
    model = VarTJEPA(schema, SMALL).eval()
    rows = table.rows[:3]
    samples = sample_latents(model, rows, num_samples=400)
    assert samples["s_w"].shape == (400, 3, schema.n_features, 4)
    data = to_inference_data(samples, ["r0", "r1", "r2"], schema.feature_names)
    posterior = data.posterior if not ARVIZ_1 else data["posterior"]
    assert set(posterior["s_w"].dims) >= {"row", "feature", "latent"}
    assert list(posterior["s_w"].coords["feature"].values) == list(schema.feature_names)
    assert list(posterior["s_w"].coords["row"].values) == ["r0", "r1", "r2"]
    summary = summarize(data, ["z"])
    assert len(summary) == 3 * 4 and {"mean", "sd"} <= set(summary.columns)
    # s_w's guide samples given z ~ q(z|s_x) spread at least as widely as the conditional posterior at the means.
    _, scale = model.posterior(rows)
    assert (samples["s_w"].std(0) > 0.8 * scale.numpy()).mean() > 0.9


def test_t_jepa_prediction_error_is_the_masked_mse_per_row(schema, table):
    torch.manual_seed(0)
    model = TJEPA(schema, SMALL).eval()
    rows = table.rows[:6]
    error = model.prediction_error(rows, n_masks=1, seed=3)
    assert error.shape == (6,) and (error > 0).all()
    masks = SMALL.mask_collator(schema.n_features, 3)(6)
    # Every mask of a batch has the same size, so the batch MSE is the mean of the row errors.
    torch.testing.assert_close(error.mean(), model._mse(rows, masks.context, masks.target))
    torch.testing.assert_close(model.prediction_error(rows, n_masks=4, seed=3), model.prediction_error(rows, n_masks=4, seed=3))


def test_var_t_jepa_prior_uncertainty_is_the_predictor_std_per_row(schema, table):
    torch.manual_seed(0)
    model = VarTJEPA(schema, SMALL).eval()
    rows = table.rows[:5]
    score = model.prior_uncertainty(rows, n_masks=1, seed=4)
    assert score.shape == (5,) and (score > 0).all()
    masks = SMALL.mask_collator(schema.n_features, 4)(5)
    s_x, _ = model.context_head(model.context_encoder(rows, index=masks.context))
    z, _ = model.aux_encoder(model.pool(s_x).flatten(1))
    prior = model.conditional_prior(s_x, z, rows, masks.context, masks.target, {})
    # The masked prior puts scale 1 outside the targets: the mean over target entries is the score.
    inside = model._target_mask(masks.context, masks.target).expand(prior.base_dist.base_dist.scale.shape)
    expected = (prior.base_dist.base_dist.scale * inside).sum((1, 2, 3)) / inside.sum((1, 2, 3))
    torch.testing.assert_close(score, expected)
