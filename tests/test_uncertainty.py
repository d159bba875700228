"""Row uncertainty scores (``method.scores``) and the arviz view of guide samples."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_jepa.data.masks import Masks
from pyro_jepa.distributions import kl_to_mixture_bound, smoothed_scale, typical_rows
from pyro_jepa.distributions.mixture_kl import SMOOTHING_GRID
from pyro_jepa.models import TJEPA, TabularJEPAConfig, VarTJEPA
from pyro_jepa.models.scores import ROW_SCORES, aggregate_std
from pyro_jepa.uncertainty import ARVIZ_1, sample_latents, summarize, to_inference_data

SMALL = TabularJEPAConfig(dim=4, depth=1, heads=2, ff=8, dropout=0.0, n_pool=2, pred_dim=4, pred_depth=1, pred_heads=2, pred_ff=8)


def test_aggregate_std_mean_and_q90():
    scale = torch.arange(1, 21, dtype=torch.float).reshape(1, 4, 5).repeat(2, 1, 1)
    torch.testing.assert_close(aggregate_std(scale, "mean"), torch.full((2,), 10.5))
    torch.testing.assert_close(aggregate_std(scale, "q90"), torch.full((2,), float(np.quantile(np.arange(1, 21), 0.9))))
    with pytest.raises(ValueError):
        aggregate_std(scale, "max")


def test_entropy_score_is_the_closed_form_gaussian_entropy():
    scale = torch.tensor([[[0.5, 2.0], [1.0, 0.1]], [[1.0, 1.0], [1.0, 1.0]]])
    expected = torch.distributions.Normal(torch.zeros_like(scale), scale).entropy().flatten(1).sum(1)
    torch.testing.assert_close(aggregate_std(scale, "entropy"), expected)
    # Unit stds: 4 * 0.5 * log(2 pi e), by hand.
    assert aggregate_std(scale, "entropy")[1].item() == pytest.approx(2 * np.log(2 * np.pi * np.e), rel=1e-6)


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
    # The prior's scale at the target tokens (it puts scale 1 elsewhere), averaged, is the score.
    _, scale = prior.at_target_tokens()
    inside = Masks(masks.context, masks.target).target_mask(model.n_tokens)[..., None].expand(prior.stddev.shape)
    torch.testing.assert_close(score, scale.mean((1, 2, 3)))
    torch.testing.assert_close(score, (prior.stddev * inside).sum((1, 2, 3)) / inside.sum((1, 2, 3)))


@pytest.mark.parametrize("decoder_scale", ["global", "row"])
def test_var_t_jepa_scores_one_api(schema, table, decoder_scale):
    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, decoder_scale=decoder_scale)).eval()
    rows = table.rows[:7]
    for name in ("training-kl", "trimmed-kl"):
        with pytest.raises(ValueError, match="need training rows: call set_reference"):
            model.scores(rows, [name])
    model.set_reference(table.rows[7:20])
    scores = model.scores(rows, n_masks=2, seed=5)
    assert list(scores) == list(model.score_names) and set(model.score_names) <= set(ROW_SCORES)
    assert ("decoder-scale" in scores) == (decoder_scale == "row")
    assert all(v.shape == (7,) and torch.isfinite(v).all() for v in scores.values())
    _, scale = model.posterior(rows)
    torch.testing.assert_close(scores["posterior-q90"], aggregate_std(scale, "q90"))
    # Seeded masks: the same call gives the same scores.
    torch.testing.assert_close(model.scores(rows, ["predictive-nll"], n_masks=2, seed=5)["predictive-nll"], scores["predictive-nll"])
    assert list(model.scores(rows, ["q90", "prior-std"])) == ["posterior-q90", "prior-std"]  # legacy name accepted
    with pytest.raises(ValueError, match="cannot compute"):
        model.scores(rows, ["prediction-error"])
    with pytest.raises(ValueError, match="unknown uncertainty score"):
        model.scores(rows, ["max"])
    assert TJEPA(schema, SMALL).scores(rows, n_masks=1)["prediction-error"].shape == (7,)
    # One posterior pass for both: the same embeddings and scores as the two calls.
    embeddings, both = model.embed_with_scores(rows, ["posterior-q90", "predictive-nll"], n_masks=2, seed=5)
    torch.testing.assert_close(embeddings, model.embed(rows))
    torch.testing.assert_close(both["posterior-q90"], scores["posterior-q90"])
    torch.testing.assert_close(both["predictive-nll"], scores["predictive-nll"])


def test_training_kl_is_the_kl_to_the_aggregate_posterior_of_the_reference_rows(schema, table):
    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, decoder_scale="row")).eval()
    reference, rows = table.rows[:5], table.rows[3:9]
    model.set_reference(reference)
    score = model.scores(rows, ["training-kl"])["training-kl"]
    loc, scale = model.posterior(rows)
    ref_loc, ref_scale = model.posterior(reference)
    # By hand: KL(q_n || (1/K) sum_k q_k) <= log K - log sum_k exp(-KL(q_n || q_k)), each KL over every entry.
    kl = torch.stack([torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale),
                                                        torch.distributions.Normal(ref_loc[k], ref_scale[k])).sum((1, 2))
                      for k in range(5)], dim=1)
    torch.testing.assert_close(score, math.log(5) - torch.logsumexp(-kl, dim=1))
    # Between the nearest component's KL and that plus log K; a reference row's own component is at KL 0.
    nearest = kl.min(1).values
    assert (score >= nearest - 1e-4).all() and (score <= nearest + math.log(5) + 1e-4).all()
    assert nearest[:2].abs().max() < 1e-4 and (nearest[2:] > 0).all()


def test_reference_rows_are_a_seeded_subset_saved_with_the_weights(schema, table, monkeypatch):
    monkeypatch.setattr("pyro_jepa.models.var_t_jepa.N_REFERENCE", 6)
    torch.manual_seed(0)
    model = VarTJEPA(schema, SMALL).eval()
    with pytest.raises(ValueError, match="packed rows of shape"):
        model.set_reference(table.rows[:, :2])
    model.set_reference(table.rows, seed=1)
    kept = model.reference_rows
    assert kept.shape == (6, schema.n_features)
    assert all((table.rows == row).all(1).any() for row in kept)  # rows of the table, each once
    model.set_reference(table.rows, seed=1)
    torch.testing.assert_close(model.reference_rows, kept)  # the same seed keeps the same rows
    # A fresh model takes any number of saved reference rows and scores like the saved one ...
    fresh = VarTJEPA(schema, SMALL).eval()
    fresh.set_reference(table.rows, seed=1)  # the same rows, other weights
    before = fresh.scores(table.rows[:4], ["training-kl"])["training-kl"]  # caches its reference posteriors
    assert fresh.reference_loc is not None
    fresh.load_state_dict(model.state_dict())
    assert fresh.reference_loc is None  # new weights drop the cached posteriors
    torch.testing.assert_close(fresh.scores(table.rows[:4], ["training-kl"]), model.scores(table.rows[:4], ["training-kl"]))
    assert not torch.allclose(before, fresh.scores(table.rows[:4], ["training-kl"])["training-kl"])
    fresh.train()
    assert fresh.reference_loc is None  # training will change the weights
    # ... and a checkpoint written before the reference existed still loads, with none.
    older = {k: v for k, v in model.state_dict().items() if k != "reference_rows"}
    fresh.load_state_dict(older)
    assert fresh.reference_rows.shape == (0, schema.n_features)


def test_training_kl_smooths_the_aggregate_posterior_by_the_width_fitted_on_held_out_rows(schema, table):
    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, decoder_scale="row")).train()
    reference, held_out, rows = table.rows[:20], table.rows[20:40], table.rows[40:46]
    model.set_reference(reference, held_out=held_out)
    assert model.training  # fitted in eval mode, handed back in the mode it came in
    model.eval()
    width = float(model.reference_smoothing)
    assert width in SMOOTHING_GRID and model.smoothing_curve[width] == min(model.smoothing_curve.values())
    # the curve is the held-out rows' mean KL bound under each smoothing, the score the bound under the chosen one
    ref_loc, ref_scale = (t.flatten(1) for t in model.posterior(reference))
    held_loc, held_scale = (t.flatten(1) for t in model.posterior(held_out))
    for w, mean_kl in model.smoothing_curve.items():
        expected = kl_to_mixture_bound(held_loc, held_scale, ref_loc, smoothed_scale(ref_scale, w)).double().mean()
        assert mean_kl == pytest.approx(float(expected))
    loc, scale = (t.flatten(1) for t in model.posterior(rows))
    torch.testing.assert_close(model.scores(rows, ["training-kl"])["training-kl"],
                               kl_to_mixture_bound(loc, scale, ref_loc, smoothed_scale(ref_scale, width)))
    # saved with the weights; a state dict from before the smoothing loads unsmoothed; no held-out rows, no smoothing
    fresh = VarTJEPA(schema, replace(SMALL, decoder_scale="row")).eval()
    fresh.load_state_dict(model.state_dict())
    assert float(fresh.reference_smoothing) == width
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k != "reference_smoothing"})
    assert float(fresh.reference_smoothing) == 0.0
    # fitted again on the same rows and grid, the same width; over another grid, that grid's best width
    assert model.fit_reference_smoothing(held_out) == width and not model.training
    grid = (0.0, 0.5, 64.0)
    refit = model.fit_reference_smoothing(held_out, grid=grid)
    assert set(model.smoothing_curve) == set(grid) and model.smoothing_curve[refit] == min(model.smoothing_curve.values())
    assert float(model.reference_smoothing) == refit
    model.set_reference(reference)
    assert float(model.reference_smoothing) == 0.0
    with pytest.raises(ValueError, match="held-out rows must be packed rows"):
        model.set_reference(reference, held_out=held_out[:, :2])


def test_typical_rows_keeps_the_bulk_and_the_trimmed_mixture_flags_a_common_contaminant():
    # 60 posteriors at the origin (the bulk) and 40 at a distant point (a common contaminant), 3-d, each jittered by
    # much less than its std: every row of a cluster is as typical as the next, so only the clusters' sizes decide.
    gen = torch.Generator().manual_seed(0)
    far = torch.tensor([6.0, 0.0, 0.0])
    loc = torch.cat([0.01 * torch.randn(60, 3, generator=gen), far + 0.01 * torch.randn(40, 3, generator=gen)])
    scale = torch.full((100, 3), 0.3)
    mix_scale = smoothed_scale(scale, 1.0)
    for share in (0.5, 0.25):
        keep = typical_rows(loc, scale, mix_scale, share)
        assert len(keep) == round(100 * share) and (keep < 60).all() and (keep.diff() > 0).all()
    # A row like the contaminants: typical to the whole mixture (about log(100/40) nats), far from the trimmed one.
    rows, row_scale = torch.stack([torch.zeros(3), far]), torch.full((2, 3), 0.3)
    whole = kl_to_mixture_bound(rows, row_scale, loc, mix_scale)
    trimmed = kl_to_mixture_bound(rows, row_scale, loc[keep], mix_scale[keep])
    assert whole[1] - whole[0] < 1.5 and trimmed[1] - trimmed[0] > 50
    same = typical_rows(loc, scale, mix_scale, 0.25, seed=0)
    torch.testing.assert_close(same, keep)  # seeded
    with pytest.raises(ValueError, match="share must be in"):
        typical_rows(loc, scale, mix_scale, 0.0)
    with pytest.raises(ValueError, match="of one shape"):
        typical_rows(loc, scale[:, :2], mix_scale, 0.5)
    with pytest.raises(ValueError, match="of one shape"):
        typical_rows(loc[:0], scale[:0], mix_scale[:0], 0.5)
    assert typical_rows(loc[:1], scale[:1], mix_scale[:1], 0.25).tolist() == [0]  # one row is kept as it is


def test_trimmed_kl_is_training_kl_against_the_typical_reference_rows(schema, table, monkeypatch):
    monkeypatch.setattr("pyro_jepa.models.var_t_jepa.TRIMMED_SHARE", 0.5)
    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, decoder_scale="row")).eval()
    reference, held_out, rows = table.rows[:20], table.rows[20:40], table.rows[40:46]
    model.set_reference(reference, held_out=held_out)
    score = model.scores(rows, ["trimmed-kl"])["trimmed-kl"]
    ref_loc, ref_scale = (t.flatten(1) for t in model.posterior(reference))
    smoothed = smoothed_scale(ref_scale, float(model.reference_smoothing))
    keep = typical_rows(ref_loc, ref_scale, smoothed, 0.5)
    assert len(keep) == 10
    loc, scale = (t.flatten(1) for t in model.posterior(rows))
    torch.testing.assert_close(score, kl_to_mixture_bound(loc, scale, ref_loc[keep], smoothed[keep]))
    torch.testing.assert_close(model.reference_typical, keep)  # kept for the next chunk of rows ...
    model.train()
    assert model.reference_typical is None  # ... until the weights may change
    model.eval()
    unsmoothed = typical_rows(ref_loc, ref_scale, ref_scale, 0.5)
    torch.testing.assert_close(model.trimmed_kl(loc, scale, width=0.0),
                               kl_to_mixture_bound(loc, scale, ref_loc[unsmoothed], ref_scale[unsmoothed]))
    assert model.reference_typical is None  # another width is not cached
    model.trimmed_kl(loc, scale)
    model.fit_reference_smoothing(held_out, grid=(64.0,))  # a refitted width ranks the rows again
    assert model.reference_typical is None
    smoothed = smoothed_scale(ref_scale, 64.0)
    keep = typical_rows(ref_loc, ref_scale, smoothed, 0.5)
    torch.testing.assert_close(model.trimmed_kl(loc, scale), kl_to_mixture_bound(loc, scale, ref_loc[keep], smoothed[keep]))


def test_predictive_nll_is_the_decoded_predictor_mean_scored_at_hidden_features(schema, table):
    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, decoder_scale="row")).eval()
    rows = table.rows[:4]
    scores = model.scores(rows, ["predictive-nll", "predictive-scale", "predictive-mse"], n_masks=1, seed=9)
    masks = SMALL.mask_collator(schema.n_features, 9)(4)
    s_x, _ = model.context_head(model.context_encoder(rows, index=masks.context))
    z, _ = model.aux_encoder(model.pool(s_x).flatten(1))
    loc, _ = model.predictor_head(model.predictor(s_x, masks.context, masks.target, condition=z))
    for i in range(4):
        nll, log_scales, squared = [], [], []
        for k in range(masks.target.shape[1]):
            for m, j in enumerate(masks.target[i, k].tolist()):
                latents = torch.zeros(1, schema.n_features, SMALL.dim)
                latents[0, j] = loc[i, k, m]
                mean, sigma, logits = model.decode("y", latents)
                if j < schema.n_numerical:
                    x = rows[i, j].item()
                    s = sigma[0, j].item()
                    nll.append(0.5 * ((x - mean[0, j].item()) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi))
                    log_scales.append(math.log(s))
                    squared.append((x - mean[0, j].item()) ** 2)
                else:
                    c = j - schema.n_numerical
                    nll.append(-torch.log_softmax(logits[0, c], -1)[int(rows[i, j])].item())
        assert scores["predictive-nll"][i].item() == pytest.approx(np.mean(nll), rel=1e-5)
        assert scores["predictive-scale"][i].item() == pytest.approx(np.mean(log_scales) if log_scales else 0.0, abs=1e-5)
        assert scores["predictive-mse"][i].item() == pytest.approx(np.mean(squared) if squared else 0.0, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("decoder_scale", ["global", "row"])
def test_reconstruction_nll_is_the_rows_own_nll_under_the_decoded_posterior_mean(schema, table, decoder_scale):
    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, decoder_scale=decoder_scale)).eval()
    rows = table.rows[:3]
    score = model.scores(rows, ["reconstruction-nll"])["reconstruction-nll"]
    loc, _ = model.posterior(rows)
    mean, sigma, logits = model.decode("y", loc)
    sigma = sigma.expand_as(mean)
    for i in range(3):
        nll = []
        for j in range(schema.n_features):
            if j < schema.n_numerical:
                x, m, s = rows[i, j].item(), mean[i, j].item(), sigma[i, j].item()
                nll.append(0.5 * ((x - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi))
            else:
                nll.append(-torch.log_softmax(logits[i, j - schema.n_numerical], -1)[int(rows[i, j])].item())
        assert score[i].item() == pytest.approx(np.mean(nll), rel=1e-5)


def test_predictive_kl_is_the_elbo_prediction_term_per_row(schema, table):
    """With one mask and s_x, z at their posterior means, predictive-kl is the row's KL between the
    model's own target posterior and conditional prior (the Pyro sites), per target feature."""
    torch.manual_seed(0)
    model = VarTJEPA(schema, SMALL).eval()
    rows = table.rows[:6]
    score = model.scores(rows, ["predictive-kl"], n_masks=1, seed=2)["predictive-kl"]
    masks = SMALL.mask_collator(schema.n_features, 2)(6)
    s_x, _ = model.context_head(model.context_encoder(rows, index=masks.context))
    pooled = model.pool(s_x)
    z, _ = model.aux_encoder(pooled.flatten(1))
    cache = {"pooled": pooled}
    q = model.target_posterior(s_x, z, rows, masks.context, masks.target, cache)
    p = model.conditional_prior(s_x, z, rows, masks.context, masks.target, cache)
    expected = torch.distributions.kl_divergence(q, p) / (masks.target.shape[1] * masks.target.shape[2])
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-5)
