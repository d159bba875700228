"""Tests for pyro_jepa.evaluate: downstream predictors, metrics, selective scoring, diagnostics."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from pyro_jepa.evaluate import (
    PREDICTORS,
    DownstreamConfig,
    classification_metrics,
    collapse_report,
    effective_rank,
    evaluate_embeddings,
    linear_probe_accuracy,
    per_dimension_std,
    train_mlp,
)
from pyro_jepa.evaluate.networks import NETWORKS, FeatureTokens

FAST = DownstreamConfig(epochs=5)


def blobs(n_classes: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Well-separated Gaussian blobs split 600/200/200 into train/val/test."""
    x, y = make_blobs(
        n_samples=1000, centers=n_classes, n_features=8, cluster_std=1.0, center_box=(-8, 8), random_state=seed
    )
    x = x.astype(np.float32)
    return x[:600], y[:600], x[600:800], y[600:800], x[800:], y[800:]


@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
@pytest.mark.parametrize("n_classes", [2, 3])
def test_predictors_learn_blobs(predictor: str, n_classes: int) -> None:
    x_tr, y_tr, x_va, y_va, x_te, y_te = blobs(n_classes)
    # Blobs are easy: a short budget keeps the transformers affordable on CPU. A linear probe
    # trains at the paper's probe learning rate, 1e-2.
    config = DownstreamConfig(epochs=6, patience=3, lr=1e-2 if predictor == "linear" else 1e-3)
    model = PREDICTORS[predictor](x_tr, y_tr, x_va, y_va, n_classes, config, seed=0)
    proba = model.predict_proba(x_te)
    assert proba.shape == (len(x_te), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert classification_metrics(y_te, proba.argmax(axis=1))["accuracy"] > 0.95


@pytest.mark.parametrize("predictor", ["autoint", "ft-transformer"])
def test_attention_predictors_take_one_token_per_feature_embedding(predictor: str) -> None:
    x_tr, y_tr, x_va, y_va, x_te, y_te = blobs(3)
    # Embed each of the 8 features as a 4-dim vector: (N, 8, 4) token embeddings.
    lift = np.random.default_rng(0).normal(size=(1, 1, 4)).astype(np.float32)
    embed = lambda x: x[:, :, None] * lift  # noqa: E731
    rows = evaluate_embeddings({"emb": (embed(x_tr), embed(x_va), embed(x_te))}, y_tr, y_va, y_te, 3,
                               predictors=[predictor], config=DownstreamConfig(epochs=6, patience=3))
    assert rows["accuracy"].iloc[0] > 0.95
    module = NETWORKS[predictor](32, 3, dataclasses.replace(FAST, token_sizes=(4,) * 8))
    assert next(m for m in module.modules() if isinstance(m, FeatureTokens)).n_tokens == 8
    with pytest.raises(ValueError, match="partition"):
        NETWORKS[predictor](32, 3, dataclasses.replace(FAST, token_sizes=(5,) * 8))


def test_feature_tokens_of_mixed_groups_are_linear_maps_of_each_group() -> None:
    torch.manual_seed(0)
    tokens = FeatureTokens(6, (1, 3, 2), d_token=5)
    x = torch.randn(4, 6)
    out = tokens(x)
    assert out.shape == (4, 3, 5)
    w, b = tokens.weight, tokens.bias
    torch.testing.assert_close(out[:, 1], x[:, 1:4] @ w[1:4] + b[1])
    # A one-hot group is an embedding lookup: the token is that category's weight row.
    onehot = torch.zeros(1, 6)
    onehot[0, [0, 2, 5]] = 1.0
    torch.testing.assert_close(tokens(onehot)[0, 1], w[2] + b[1])
    # Equal groups take the batched path; it must agree with the scatter-add path.
    equal = FeatureTokens(6, (2, 2, 2), d_token=5)
    mixed = FeatureTokens(6, (2, 2, 2), d_token=5)
    mixed.load_state_dict(equal.state_dict())
    mixed.width = None
    torch.testing.assert_close(equal(x), mixed(x))


def test_mlp_is_deterministic_and_keeps_global_rng() -> None:
    x_tr, y_tr, x_va, y_va, x_te, _ = blobs(3, seed=1)
    rng_before = torch.get_rng_state()
    a = train_mlp(x_tr, y_tr, x_va, y_va, 3, FAST, seed=7).predict_proba(x_te)
    b = train_mlp(x_tr, y_tr, x_va, y_va, 3, FAST, seed=7).predict_proba(x_te)
    c = train_mlp(x_tr, y_tr, x_va, y_va, 3, FAST, seed=8).predict_proba(x_te)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_mlp_restores_best_epoch() -> None:
    x_tr, y_tr, x_va, y_va, _, _ = blobs(3)
    model = train_mlp(x_tr, y_tr, x_va, y_va, 3, DownstreamConfig(epochs=30, patience=2), seed=0)
    val_acc = classification_metrics(y_va, model.predict_proba(x_va).argmax(axis=1))["accuracy"]
    assert model.best_epoch >= 0
    assert val_acc == pytest.approx(model.best_val_accuracy)


def test_classification_metrics_by_hand() -> None:
    # Per-class F1: class 0 P=R=1/2 -> 1/2; class 1 P=2/3, R=1 -> 4/5; class 2 never hit -> 0.
    metrics = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]))
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)


def test_effective_rank() -> None:
    rng = np.random.default_rng(0)
    assert effective_rank(rng.standard_normal((4000, 16))) == pytest.approx(16, rel=0.02)
    rank_one = np.outer(rng.standard_normal(500), rng.standard_normal(32))
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(np.ones((50, 8))) == 0.0


def test_per_dimension_std_and_collapse_report() -> None:
    np.testing.assert_array_equal(per_dimension_std(np.full((20, 5), 3.0)), np.zeros(5))
    tokens = torch.randn(300, 4, 8, generator=torch.Generator().manual_seed(0))
    assert per_dimension_std(tokens).shape == (32,)
    report = collapse_report(tokens)
    assert set(report) == {"mean_std", "min_std", "effective_rank", "effective_rank_ratio", "mean_cosine"}
    assert report["effective_rank_ratio"] > 0.9
    assert abs(report["mean_cosine"]) < 0.05
    collapsed = collapse_report(np.ones((2000, 8)) + 1e-3 * np.random.default_rng(0).standard_normal((2000, 8)))
    assert collapsed["mean_cosine"] > 0.99


def test_linear_probe_accuracy() -> None:
    x_tr, y_tr, x_va, y_va, _, _ = blobs(3)
    assert linear_probe_accuracy(x_tr, y_tr, x_va, y_va) > 0.95
    uncertainty = np.linspace(0.0, 1.0, len(y_va))
    assert 0.0 <= linear_probe_accuracy(x_tr, y_tr, x_va, y_va, uncertainty=uncertainty) <= 1.0


def test_evaluate_embeddings_rows() -> None:
    x_tr, y_tr, x_va, y_va, x_te, y_te = blobs(3)
    features = {
        "raw": (x_tr, x_va, x_te),
        "Var-T-JEPA": (x_tr.reshape(-1, 4, 2), x_va.reshape(-1, 4, 2), x_te.reshape(-1, 4, 2)),
    }
    uncertainty = {"Var-T-JEPA": np.random.default_rng(0).random(len(y_te))}
    df = evaluate_embeddings(features, y_tr, y_va, y_te, 3, config=FAST, seed=0, uncertainty=uncertainty)
    assert list(df.columns) == ["predictor", "representation", "drop", "coverage", "accuracy", "macro_f1"]
    assert len(df) == 2 * (1 + 4)
    for predictor in ("mlp", "xgboost"):
        rows = df[df.predictor == predictor]
        assert rows[rows.representation == "raw"]["drop"].tolist() == [0.0]
        selective = rows[rows.representation == "Var-T-JEPA"]
        assert selective["drop"].tolist() == [0.0, 0.1, 0.2, 0.5]
        assert selective.coverage.tolist() == pytest.approx([1.0, 0.9, 0.8, 0.5])
    assert df.accuracy.between(0.0, 1.0).all() and df.macro_f1.between(0.0, 1.0).all()
    with pytest.raises(ValueError):
        evaluate_embeddings(features, y_tr, y_va, y_te, 3, predictors=("svm",), config=FAST)


def test_tuned_xgboost_is_never_worse_than_default_on_validation_log_loss() -> None:
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(scale=0.8, size=500) > 0.5).astype(int)
    x_tr, y_tr, x_va, y_va = x[:350], y[:350], x[350:], y[350:]
    default = PREDICTORS["xgboost"](x_tr, y_tr, x_va, y_va, 2, FAST, seed=0)
    tuned = PREDICTORS["xgboost-tuned"](x_tr, y_tr, x_va, y_va, 2, FAST, seed=0)
    assert log_loss(y_va, tuned.predict_proba(x_va)) <= log_loss(y_va, default.predict_proba(x_va)) + 1e-12
