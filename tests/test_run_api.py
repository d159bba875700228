"""Using a trained model again: saved preprocessing, load_run, abstention, the command line, bad input.

The round trip through the main job itself (same embeddings, same test accuracy) is in
tests/test_experiment.py, on the run that file's tests already make.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_jepa import io, load_run
from pyro_jepa.__main__ import main as cli_main
from pyro_jepa.data import NO_LABEL, TabularPreprocessor, UnseenCategoriesWarning, iter_table, make_sim, read_table
from pyro_jepa.data.tabular import Splits
from pyro_jepa.evaluate import DownstreamConfig, train_mlp, train_xgboost
from pyro_jepa.pipeline import pretrain
from pyro_jepa.run import Calibration, SavedRunError, coverage_threshold, empirical_risk_threshold, save_model
from tests.test_train import FAST, SMALL

# --- preprocessing saved as JSON -------------------------------------------------------------------------


def mixed_frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    """Floats with gaps, integer, boolean and text categories, a two-class integer label."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[::7] = np.nan
    return pd.DataFrame({
        "a": a, "b": rng.normal(size=n) * 1e3, "level": rng.integers(1, 4, n), "flag": rng.random(n) < 0.5,
        "color": rng.choice(["red", "green", "blue"], n), "id": [f"r{i}" for i in range(n)], "y": rng.integers(0, 2, n),
    })


def test_preprocessor_survives_json_exactly():
    df = mixed_frame()
    pre = TabularPreprocessor("y", drop=["id"]).fit(df)
    state = json.loads(json.dumps(pre.to_dict()))
    back = TabularPreprocessor.from_dict(state)
    assert back.schema == pre.schema and back.schema.numerical == ("a", "b", "a__missing")
    assert back.categories == pre.categories and [type(v) for v in back.categories[0]] == [int] * 3
    assert back.label_values == [0, 1] and back.dropped == pre.dropped
    new = mixed_frame(30, seed=1)
    assert torch.equal(back.transform(new).rows, pre.transform(new).rows)
    assert torch.equal(back.transform(new).y, pre.transform(new).y)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("medians"), r"lacks the entry 'medians'"),
    (lambda s: s.update(medians=[1.0]), r"1 medians for 2 numerical columns"),
    (lambda s: s.update(stds=[1.0, 0.0, 1.0]), r"standard deviations <= 0"),
    (lambda s: s.update(format="v0"), r"not a saved preprocessor of format"),
])
def test_a_damaged_saved_preprocessor_is_refused(change, message):
    state = TabularPreprocessor("y", drop=["id"]).fit(mixed_frame()).to_dict()
    change(state)
    with pytest.raises(ValueError, match=message):
        TabularPreprocessor.from_dict(state)


def test_a_preprocessor_without_label_and_label_free_transform():
    df = mixed_frame()
    pre = TabularPreprocessor(None, drop=["id"]).fit(df.drop(columns="y"))
    assert pre.schema.classes == () and pre.schema.label is None
    with pytest.warns(UserWarning, match=r"\['y'\] were not in the training data"):
        data = pre.transform(df)  # fitted without a label, so "y" is an unknown extra column
    assert (data.y == NO_LABEL).all()
    labelled = TabularPreprocessor("y", drop=["id"]).fit(df)
    new = df.drop(columns="y")
    with pytest.raises(ValueError, match="label column 'y' not found"):
        labelled.transform(new)
    assert torch.equal(labelled.transform(new, labels=False).rows, labelled.transform(df).rows)
    assert (labelled.transform(df.assign(y=7), labels=False).y == NO_LABEL).all()  # never read, so never refused


def test_unseen_categories_are_counted_per_column_and_warned():
    pre = TabularPreprocessor("y", drop=["id"]).fit(mixed_frame())
    new = mixed_frame(10, seed=2)
    new.loc[:2, "color"] = "violet"
    new.loc[0, "level"] = 9
    new.loc[5, "color"] = None  # missing, not unseen
    assert pre.unseen_categories(new) == {"level": 1, "color": 3}
    with pytest.warns(UnseenCategoriesWarning, match=r"values per column: 'level': 1, 'color': 3"):
        data = pre.transform(new)
    assert pre.schema.categorical == ("level", "flag", "color")
    assert (data.x_cat[:3, 2] == 0).all() and data.x_cat[0, 0] == 0 and (data.x_cat[3:, 0] > 0).all()


# --- reading big files in chunks -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_are_the_whole_table_with_file_rows_as_index(tmp_path, suffix):
    df = mixed_frame(53).assign(code=[f"0{i % 3}" for i in range(53)])
    path = tmp_path / f"t{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    columns, total, chunks = iter_table(path, chunk_rows=10, text_columns=["code"])
    chunks = list(chunks)
    assert columns == list(df.columns) and total == (53 if suffix == ".parquet" else None)
    assert [len(c) for c in chunks] == [10] * 5 + [3]
    whole = pd.concat(chunks)
    assert list(whole.index) == list(range(53))
    pd.testing.assert_frame_equal(whole.drop(columns="code"), read_table(path).drop(columns="code"), check_dtype=False)
    assert whole["code"].tolist() == df["code"].tolist()  # "01" stays text, as in training


def test_chunked_reading_keeps_the_strict_csv_rules(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ValueError, match=r"data row 1 \(line 3\) has more fields than the header's 2 columns"):
        list(iter_table(wide)[2])
    empty = tmp_path / "header.csv"
    empty.write_text("a,b\n")
    with pytest.raises(ValueError, match="has a header but no rows"):
        list(iter_table(empty)[2])
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a\n1,2\n")
    with pytest.raises(ValueError, match=r"duplicate column name\(s\) \['a'\]"):
        iter_table(dup)


# --- abstention rules ------------------------------------------------------------------------------------


def test_coverage_threshold_keeps_the_asked_fraction_of_validation_rows():
    calibration = Calibration("mean", np.arange(10, dtype=float)[::-1])  # scores 9..0
    assert coverage_threshold(calibration, 0.8) == 7.0  # rows 0..7 kept: 8 of 10
    assert coverage_threshold(calibration, 0.75) == 7.0  # ceil(7.5) = 8 rows
    assert coverage_threshold(calibration, 0.1) == 0.0
    assert coverage_threshold(calibration, 1.0) == math.inf
    with pytest.raises(ValueError, match="coverage must be in"):
        coverage_threshold(calibration, 0.0)


def test_empirical_risk_threshold_is_the_widest_threshold_within_the_risk():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    errors = {"m": np.array([0, 0, 1, 0, 1, 1], dtype=float)}
    calibration = Calibration("mean", scores, errors)
    # kept-row error rates at thresholds 0.1..0.6: 0, 0, 1/3, 1/4, 2/5, 1/2
    assert empirical_risk_threshold(calibration, 0.25, "m") == 0.4
    assert empirical_risk_threshold(calibration, 0.0, "m") == 0.2
    assert empirical_risk_threshold(calibration, 0.5, "m") == 0.6
    ties = Calibration("mean", np.array([0.1, 0.2, 0.2]), {"m": np.array([0.0, 0.0, 1.0])})
    assert empirical_risk_threshold(ties, 0.0, "m") == 0.1  # 0.2 would keep the tied error too
    assert empirical_risk_threshold(Calibration("mean", scores[:1], {"m": np.ones(1)}), 0.1, "m") == -math.inf


# --- a saved model (small, trained here) -----------------------------------------------------------------


def sim_frame(n: int, seed: int) -> pd.DataFrame:
    return make_sim(n, seed=seed).assign(id=lambda d: [f"row-{seed}-{i}" for i in range(len(d))])


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with a saved Var-T-JEPA (with an MLP and XGBoost) and a saved T-JEPA."""
    folder = tmp_path_factory.mktemp("runs") / "small"
    df = sim_frame(240, seed=0)
    pre = TabularPreprocessor("label", ambiguity_column="u", drop=["id"]).fit(df.iloc[:180])
    train, val = pre.transform(df.iloc[:180]), pre.transform(df.iloc[180:])
    train_config = replace(FAST, epochs=1, select="loss")
    with io.claim_run_folder(folder):
        for name in ("var-t-jepa", "t-jepa"):
            method, _ = pretrain(name, Splits(train, val, val), SMALL, train_config, folder / "checkpoints" / name)
            x_train, x_val = (method.embed(d.rows).flatten(1).numpy() for d in (train, val))
            predictors = {
                "mlp": train_mlp(x_train, train.y.numpy(), x_val, val.y.numpy(), 3, DownstreamConfig(epochs=2), seed=0),
                "xgboost": train_xgboost(x_train, train.y.numpy(), x_val, val.y.numpy(), 3, DownstreamConfig(xgb_estimators=5), seed=0),
            }
            save_model(folder / "checkpoints" / name, name, method, pre, val, predictors)
    return folder


@pytest.fixture(scope="module")
def loaded(run_folder):
    return load_run(run_folder)


def test_a_loaded_run_embeds_scores_and_predicts_each_row_on_its_own(loaded):
    new = sim_frame(50, seed=1).drop(columns=["label", "u"])
    flat, tokens = loaded.embed(new), loaded.embed(new, flatten=False)
    assert flat.shape == (50, 32 * 8) and tokens.shape == (50, 32, 8)
    np.testing.assert_array_equal(flat, tokens.reshape(50, -1))
    scores = loaded.uncertainty(new)
    assert scores.shape == (50,) and (scores > 0).all()
    np.testing.assert_allclose(loaded.uncertainty(new, how="entropy"), loaded.uncertainty(new.iloc[::-1], how="entropy")[::-1], atol=1e-5)
    proba = loaded.predict_proba(new, predictor="mlp")
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    batch = loaded.predict(new, coverage=0.5, probabilities=True)
    assert list(batch.columns) == ["prediction", "uncertainty", "proba_c0", "proba_c1", "proba_c2", "abstain"]
    assert batch.index.equals(new.index) and set(batch["prediction"]) <= {"c0", "c1", "c2"}
    assert batch["abstain"].tolist() == (batch["uncertainty"] > loaded.threshold(coverage=0.5)).tolist()
    singles = pd.concat([loaded.predict(new.iloc[[i]], coverage=0.5) for i in (0, 17, 49)])
    pd.testing.assert_frame_equal(singles[["prediction", "abstain"]], batch.iloc[[0, 17, 49]][["prediction", "abstain"]])
    np.testing.assert_allclose(singles["uncertainty"], batch["uncertainty"].iloc[[0, 17, 49]], atol=1e-6)


def test_coverage_holds_on_the_validation_rows_and_the_default_predictor_is_the_best_there(loaded, run_folder):
    val = sim_frame(240, seed=0).iloc[180:]
    scores = loaded.uncertainty(val)
    np.testing.assert_allclose(scores, loaded.calibration.scores, atol=1e-6)  # the saved scores are these rows'
    kept = (~loaded.predict(val, coverage=0.8)["abstain"]).mean()
    assert kept == pytest.approx(math.ceil(0.8 * 60) / 60)
    manifest = json.loads((run_folder / "checkpoints" / "var-t-jepa" / "model.json").read_text())
    accuracy = {name: meta["validation_accuracy"] for name, meta in manifest["predictors"].items()}
    assert loaded.default_predictor == max(accuracy, key=accuracy.get)
    for name, acc in accuracy.items():
        assert (loaded.predict(val, predictor=name)["prediction"] == val["label"]).mean() == pytest.approx(acc)
    risk_kept = ~loaded.predict(val, risk=0.2, predictor="mlp")["abstain"]
    assert loaded.calibration.errors["mlp"][risk_kept.to_numpy()].mean() <= 0.2


def test_latent_samples_come_as_arviz_data_with_rows_named_by_the_index(loaded):
    rows = sim_frame(3, seed=4).set_index("id")
    idata = loaded.sample_latents(rows, n=5)
    posterior = idata.posterior
    assert list(posterior["row"].values) == list(rows.index) and posterior["feature"].size == 32
    assert posterior["s_w"].shape[-3:] == (3, 32, 8) and posterior["z"].shape[-2:] == (3, 8)
    again = loaded.sample_latents(rows, n=5)
    np.testing.assert_array_equal(again.posterior["s_w"].values, posterior["s_w"].values)  # seeded


def test_new_data_is_validated_like_training_data(loaded):
    new = sim_frame(20, seed=5)
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['x3', 'cat1'\]"):
        loaded.embed(new.drop(columns=["x3", "cat1"]))
    new.loc[:3, "cat2"] = "b99"
    with pytest.warns(UnseenCategoriesWarning, match=r"'cat2': 4"):
        loaded.embed(new)
    with pytest.warns(UserWarning, match=r"\['note'\] were not in the training data and are ignored"):
        loaded.embed(sim_frame(5, seed=6).assign(note="x"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.embed(sim_frame(5, seed=6).drop(columns=["label", "u"]))  # no label, no ambiguity: fine
    with pytest.raises(TypeError, match="expected a pandas DataFrame"):
        loaded.embed(new.to_numpy())


def test_t_jepa_runs_embed_and_predict_but_have_no_uncertainty(run_folder):
    t_jepa = load_run(run_folder, "t-jepa")
    new = sim_frame(10, seed=7)
    assert t_jepa.embed(new).shape == (10, 256)
    assert list(t_jepa.predict(new).columns) == ["prediction"]
    with pytest.raises(SavedRunError, match="no latent uncertainty"):
        t_jepa.predict(new, coverage=0.8)


# --- the command line ------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli_main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_embeds_and_predicts_in_chunks_keeping_ids(run_folder, loaded, tmp_path, capsys):
    data = tmp_path / "new.csv"
    new = sim_frame(45, seed=8)
    new.loc[3, "cat0"] = "b77"
    new.to_csv(data, index=False)
    code, err = run_cli(["embed", run_folder, "--data", data, "--out", tmp_path / "emb.parquet", "--batch-rows", 7, "--no-progress"], capsys)
    assert code == 0, err
    assert err.count("categories not seen") == 1 and "'cat0': 1" in err  # one report for all chunks
    emb = pd.read_parquet(tmp_path / "emb.parquet")
    assert list(emb.columns[:2]) == ["id", "x0__0"] and emb.columns[-1] == "uncertainty"
    assert emb["id"].tolist() == new["id"].tolist()
    with pytest.warns(UnseenCategoriesWarning):
        expected = loaded.embed_frame(new)
    np.testing.assert_allclose(emb[loaded.embedding_names].to_numpy(), expected[loaded.embedding_names].to_numpy(), atol=1e-6)
    code, err = run_cli(["predict", run_folder, "--data", data, "--out", tmp_path / "pred.csv", "--coverage", 0.8, "--no-progress"], capsys)
    assert code == 0 and "abstained on" in err, err
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["id", "prediction", "uncertainty", "abstain"] and len(pred) == 45
    with pytest.warns(UnseenCategoriesWarning):
        direct = loaded.predict(new, coverage=0.8)
    assert pred["prediction"].tolist() == direct["prediction"].tolist()
    assert pred["abstain"].tolist() == direct["abstain"].tolist()


@pytest.mark.parametrize("case, message", [
    ("missing column", r"lacks the training feature column\(s\) \['x5'\]"),
    ("other method", r"holds no saved t-jepa model; it holds \['var-t-jepa'\]: pass method='var-t-jepa'"),
    ("tampered predictor", r"predictor-xgboost.json changed after the run saved it"),
    ("truncated weights", r"best.pt changed after the run saved it"),
    ("older format", r"holds weights \(best.pt\) but no model.json: the run was made by an older pyro_jepa"),
    ("newer format tag", r"has format 'pyro_jepa-saved-model-v9', but this pyro_jepa .* reads 'pyro_jepa-saved-model-v1'"),
    ("not a run folder", r"is not a pyro_jepa run folder"),
    ("run of another script", r"holds no saved model, only weights \(in checkpoints/vje\): it is not a run of the main job"),
    ("output exists", r"exists; pass --overwrite"),
])
def test_bad_input_is_one_error_line(run_folder, tmp_path, capsys, case, message):
    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    model = run / "checkpoints" / "var-t-jepa"
    data, out = tmp_path / "new.csv", tmp_path / "out.csv"
    new = sim_frame(12, seed=9)
    method = ["--method", "var-t-jepa"]
    if case == "missing column":
        new = new.drop(columns="x5")
    elif case == "other method":
        shutil.rmtree(run / "checkpoints" / "t-jepa")
        method = ["--method", "t-jepa"]
    elif case == "tampered predictor":
        path = model / "predictor-xgboost.json"
        path.write_text(path.read_text().replace('"base_score"', '"base_score" ', 1))
    elif case == "truncated weights":
        path = model / "best.pt"
        path.write_bytes(path.read_bytes()[:1000])
    elif case == "older format":
        (model / "model.json").unlink()
    elif case == "newer format tag":
        manifest = json.loads((model / "model.json").read_text())
        (model / "model.json").write_text(json.dumps({**manifest, "format": "pyro_jepa-saved-model-v9"}))
    elif case == "not a run folder":
        run = tmp_path
    elif case == "run of another script":  # e.g. experiments/vje.py: weights, but no saved tabular model
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints" / "vje").mkdir(parents=True)
        shutil.copy(run_folder / "checkpoints" / "t-jepa" / "best.pt", run / "checkpoints" / "vje")
    elif case == "output exists":
        out.write_text("keep me")
    new.to_csv(data, index=False)
    code, err = run_cli(["predict", run, "--data", data, "--out", out, *method, "--no-progress"], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists() or out.read_text() == "keep me"


def test_another_method_of_the_same_folder_is_named(run_folder):
    with pytest.raises(SavedRunError, match=r"holds a var-t-jepa model, not t-jepa: pass method='var-t-jepa'"):
        load_run(run_folder / "checkpoints" / "var-t-jepa", "t-jepa")
