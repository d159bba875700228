"""pyro_jepa.sklearn: the embedders follow scikit-learn's estimator conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.estimator_checks import check_estimator

from pyro_jepa import load_run
from pyro_jepa.data import make_sim
from pyro_jepa.run import SavedRunError
from pyro_jepa.sklearn import TJEPAEmbedder, VarTJEPAEmbedder

TINY = {"epochs": 1, "dim": 8, "depth": 1}
# Checks of sklearn.utils.estimator_checks that do not pass, and why (also listed in docs/run_api.md).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@pytest.fixture(scope="module")
def sim():
    df = make_sim(300, seed=0)
    return df.drop(columns=["label", "u"]), df["label"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small networks: one thread is faster and keeps results independent of the machine's load."""


def test_a_pipeline_through_cross_val_score_beats_chance(sim):
    X, y = sim
    model = make_pipeline(VarTJEPAEmbedder(epochs=2, dim=8, depth=1, random_state=0), LogisticRegression(max_iter=500))
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.5  # three balanced classes: chance is 1/3


def test_params_clone_and_set_params():
    embedder = VarTJEPAEmbedder(epochs=3, drop=["id"], random_state=7)
    params = embedder.get_params()
    assert params["epochs"] == 3 and params["random_state"] == 7 and params["preset"] == "cpu"
    twin = clone(embedder)
    assert twin is not embedder and twin.get_params() == params
    assert twin.set_params(epochs=5, dim=16) is twin and twin.epochs == 5 and twin.dim == 16 and embedder.epochs == 3
    assert not hasattr(clone(embedder), "model_")  # clone never copies a fit
    assert "epochs=3" in repr(embedder)


def test_random_state_fixes_the_fit_and_leaves_global_streams_alone(sim):
    X, _ = sim
    X = X.iloc[:120]
    before = np.random.get_state()[1].copy(), torch.get_rng_state()
    first = VarTJEPAEmbedder(**TINY, random_state=3).fit_transform(X)
    assert (np.random.get_state()[1] == before[0]).all() and torch.equal(torch.get_rng_state(), before[1])
    np.testing.assert_array_equal(first, VarTJEPAEmbedder(**TINY, random_state=3).fit_transform(X))
    assert not np.allclose(first, VarTJEPAEmbedder(**TINY, random_state=4).fit_transform(X))


def test_pandas_output_and_feature_names(sim):
    X, _ = sim
    X = X.iloc[:100].set_index(pd.Index([f"r{i}" for i in range(100)]))
    embedder = VarTJEPAEmbedder(**TINY, random_state=0).set_output(transform="pandas").fit(X)
    out = embedder.transform(X)
    assert isinstance(out, pd.DataFrame) and out.index.equals(X.index)
    assert list(out.columns) == list(embedder.get_feature_names_out()) and out.shape == (100, 32 * 8)
    assert out.columns[0] == "x0__0" and out.columns[-1] == "cat3__7"
    with pytest.raises(ValueError, match="feature names"):
        embedder.transform(X.rename(columns={"x0": "renamed"}))


def test_grouped_features_take_fewer_tokens_and_name_them(sim, tmp_path):
    X, _ = sim  # 28 numerical columns x0..x27, then 4 categorical
    embedder = VarTJEPAEmbedder(**TINY, group_size=5, random_state=0).fit(X.iloc[:100])
    names = embedder.get_feature_names_out()
    assert embedder.transform(X.iloc[:10]).shape == (10, (6 + 4) * 8) and len(names) == (6 + 4) * 8
    assert names[0] == "x0..x4__0" and names[5 * 8] == "x25..x27__0" and names[-1] == "cat3__7"
    run = load_run(embedder.save(tmp_path / "grouped"))
    assert run.embedding_names == list(names)
    tokens = run.sample_latents(X.iloc[:2], n=3).posterior["s_w"].coords["feature"].values
    assert list(tokens[:2]) == ["x0..x4", "x5..x9"] and len(tokens) == 10
    baseline = TJEPAEmbedder(**TINY, group_size=5, random_state=0).fit(X.iloc[:100])
    assert baseline.transform(X.iloc[:10]).shape == (10, (6 + 4) * 8)


def test_inside_a_column_transformer(sim):
    X, y = sim
    columns = ColumnTransformer([
        ("jepa", TJEPAEmbedder(**TINY, random_state=0), [f"x{i}" for i in range(12)]),
        ("onehot", OneHotEncoder(), ["cat0", "cat1"]),
    ])
    out = columns.fit_transform(X.iloc[:150])
    assert out.shape == (150, 12 * 8 + 3 + 4)
    names = columns.get_feature_names_out()
    assert names[0] == "jepa__x0__0" and names[-1] == "onehot__cat1_b3"


def test_save_and_load_through_a_run_folder(sim, tmp_path):
    X, _ = sim
    embedder = VarTJEPAEmbedder(**TINY, random_state=0).fit(X.iloc[:150])
    folder = embedder.save(tmp_path / "embedder")
    again = VarTJEPAEmbedder.load(folder)
    assert again.get_params() == embedder.get_params() and again.best_epoch_ == embedder.best_epoch_
    np.testing.assert_array_equal(again.transform(X.iloc[150:]), embedder.transform(X.iloc[150:]))
    assert list(again.feature_names_in_) == list(X.columns)
    run = load_run(folder)  # the same run-folder format as the main job's
    np.testing.assert_array_equal(run.embed(X.iloc[150:]), embedder.transform(X.iloc[150:]))
    assert run.uncertainty(X.iloc[150:160]).shape == (10,)
    with pytest.raises(SavedRunError, match="holds no saved t-jepa model"):
        TJEPAEmbedder.load(folder)
    with pytest.raises(ValueError, match="already holds results; pass --overwrite"):
        embedder.save(folder)


def test_fit_needs_enough_rows_and_features():
    with pytest.raises(ValueError, match=r"1 feature\(s\)"):
        VarTJEPAEmbedder(**TINY).fit(np.random.default_rng(0).normal(size=(20, 1)))
    with pytest.raises(ValueError, match=r"2 sample\(s\) .* minimum of 3"):
        VarTJEPAEmbedder(**TINY).fit(np.random.default_rng(0).normal(size=(2, 4)))


def test_scikit_learn_estimator_checks_pass():
    results = check_estimator(VarTJEPAEmbedder(**TINY, random_state=0), on_fail=None, on_skip=None,
                              expected_failed_checks=EXPECTED_FAILED_CHECKS)
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed, failed
    assert skipped <= {"check_array_api_input"}, skipped  # sklearn skips it unless SCIPY_ARRAY_API=1
    assert len(results) >= 40


@pytest.mark.slow
def test_scikit_learn_estimator_checks_pass_for_t_jepa():
    results = check_estimator(TJEPAEmbedder(**TINY, random_state=0), on_fail=None, on_skip=None)
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed, failed
