"""Tests of the tabular data layer: SIM, corrupted MNIST, preprocessing, splits, loaders, registry."""

from __future__ import annotations

import functools
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression

from pyro_jepa.data import (
    DATASETS,
    SIM_V2,
    DatasetNotFoundError,
    TabularPreprocessor,
    corrupt_mnist,
    download,
    infer_feature_types,
    load_dataset,
    make_sim,
    make_sim_v1,
    read_table,
    resolve_data_dir,
    stratified_split,
)
from pyro_jepa.data.registry import sha256_file

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} not present")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return make_sim()


# --- SIM and MNIST corruption ------------------------------------------------------------------------


def test_sim_shape_and_columns(sim):
    assert sim.shape == (10_000, 28 + 4 + 2)
    num, cat = infer_feature_types(sim, "label", exclude=["u"])
    assert num == [f"x{j}" for j in range(28)]
    assert cat == [f"cat{k}" for k in range(4)]


def test_sim_balance_u_and_bins(sim):
    shares = sim["label"].value_counts(normalize=True)
    assert sorted(shares.index) == ["c0", "c1", "c2"]
    assert np.allclose(shares.to_numpy(), 1 / 3, atol=0.01)
    assert stats.kstest(sim["u"], "uniform").pvalue > 0.01
    for k, n_bins in enumerate((3, 4, 5, 6)):
        assert set(sim[f"cat{k}"]) == {f"b{b}" for b in range(n_bins)}


@pytest.mark.parametrize("version,accuracy", [(make_sim, (0.92, 0.98)), (make_sim_v1, (0.78, 0.92))])
def test_sim_ambiguity_hurts_linear_accuracy(version, accuracy):
    x_train, y_train, x_test, y_test, u_test = load_sim_splits(version, n_rows=6000, seed=0)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    correct = model.predict(x_test) == y_test
    low = u_test < np.median(u_test)
    assert accuracy[0] < correct.mean() < accuracy[1]
    assert correct[low].mean() > correct[~low].mean() + 0.05


def load_sim_splits(version, n_rows: int, seed: int):
    df = version(n_rows, seed)
    x = pd.get_dummies(df.drop(columns=["label", "u"]), dtype=float).to_numpy()
    y, u = df["label"].to_numpy(), df["u"].to_numpy()
    train, _, test = stratified_split(y, seed)
    return x[train], y[train], x[test], y[test], u[test]


def test_sim_categoricals_are_bins_of_observed_features_flipped_more_often_as_u_grows(sim):
    """SIM v2: each categorical is a quantile bin of an observed numerical feature, flipped to another
    bin with probability 0.6 * u**2 (the flips are what contradicts that feature)."""
    u = sim["u"].to_numpy()
    assert sorted(sim.attrs["categorical_sources"]) == ["cat0", "cat1", "cat2", "cat3"]
    for k, n_bins in enumerate((3, 4, 5, 6)):
        source = sim[sim.attrs["categorical_sources"][f"cat{k}"]].to_numpy()
        edges = np.quantile(source, np.linspace(0, 1, n_bins + 1)[1:-1])
        flipped = sim[f"cat{k}"].to_numpy() != np.array([f"b{b}" for b in np.searchsorted(edges, source)])
        for lo, hi in ((0.0, 0.2), (0.4, 0.6), (0.8, 1.0)):
            band = (u >= lo) & (u < hi)
            expected = 0.6 * np.mean(u[band] ** 2)
            assert flipped[band].mean() == pytest.approx(expected, abs=0.04)
        assert stats.spearmanr(u, flipped).statistic > 0.3


@pytest.mark.parametrize("name,low,high", [("sim", 0.942, 0.956), ("sim-v2", 0.962, 0.975)])
def test_sim_xgboost_accuracy_on_the_library_table_is_calibrated(name, low, high):
    """The benchmark's XGBoost on the raw features of the library's SIM table (split seed 0): SIM v3
    lands at the paper's 0.949 (measured 0.952), SIM v2 above it (measured 0.968)."""
    from pyro_jepa.evaluate.downstream import train_xgboost

    splits = load_dataset(name, seed=0)
    model = train_xgboost(splits.train.raw_features(), splits.train.y.numpy(), None, None, 3)
    assert low < np.mean(model.predict(splits.test.raw_features()) == splits.test.y.numpy()) < high


def test_sim_ambiguity_is_readable_from_the_features():
    """A regressor trained on u reaches a ceiling well above the paper's Spearman 0.64 on SIM v3 and
    v2, and stays below it on SIM v1."""
    from pyro_jepa.evaluate.ambiguity import supervised_ceiling

    for version, low, high in ((make_sim, 0.78, 0.92), (functools.partial(make_sim, constants=SIM_V2), 0.78, 0.92), (make_sim_v1, 0.3, 0.55)):
        df = version(6000, 0)
        x = pd.get_dummies(df.drop(columns=["label", "u"]), dtype=float).to_numpy()
        u = df["u"].to_numpy()
        assert low < supervised_ceiling(x[:4000], u[:4000], x[4000:], u[4000:])["spearman"] < high


def test_corrupt_mnist():
    x = np.random.default_rng(0).integers(0, 256, size=(2000, 784), dtype=np.uint8)
    out, u = corrupt_mnist(x, seed=1)
    assert out.shape == (2000, 784) and u.shape == (2000,)
    assert out.min() >= 0.0 and out.max() <= 1.0
    # The rows with the least noise stay closest to the clean image.
    dist = np.abs(out - x / 255.0).mean(axis=1)
    assert stats.spearmanr(u, dist).statistic > 0.9
    np.testing.assert_array_equal(corrupt_mnist(x, seed=1)[0], out)
    with pytest.raises(ValueError, match="square"):
        corrupt_mnist(x[:, :10], seed=0)


# --- preprocessing -----------------------------------------------------------------------------------


def toy_frame(n: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(5.0 + shift, 2.0, n),
            "b": rng.integers(0, 1000, n),
            "color": rng.choice(["red", "green", "blue"], n),
            "flag": rng.integers(0, 2, n).astype(bool),
            "target": rng.choice(["yes", "no"], n),
        }
    )


def test_preprocessor_fits_on_train_only():
    train, test = toy_frame(2000), toy_frame(500, shift=10.0, seed=1)
    test.loc[:4, "color"] = "purple"
    test.loc[5:9, "color"] = None
    pre = TabularPreprocessor("target").fit(train)
    assert pre.schema.numerical == ("a", "b")
    assert pre.schema.categorical == ("color", "flag")
    assert pre.schema.cardinalities == (4, 3)
    assert pre.schema.classes == ("no", "yes")

    tr, te = pre.transform(train), pre.transform(test)
    assert torch.allclose(tr.x_num.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(tr.x_num.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert te.x_num[:, 0].mean() > 4.0  # shifted by 10 / train std 2
    assert (te.x_cat[:10, 0] == 0).all()
    assert (te.x_cat[10:, 0] >= 1).all()
    # Sorted train categories: blue=1, green=2, red=3.
    assert te.x_cat[10, 0].item() == ["blue", "green", "red"].index(test.loc[10, "color"]) + 1


def test_preprocessor_imputes_train_median_and_constant_column():
    train = pd.DataFrame({"a": [1.0, 2.0, 10.0, np.nan], "c": [3.0] * 4, "y": [0, 1, 0, 1]})
    pre = TabularPreprocessor("y", numerical=["a", "c"]).fit(train)
    assert pre.medians[0] == 2.0
    out = pre.transform(pd.DataFrame({"a": [np.nan], "c": [3.0], "y": [1]}))
    assert out.x_num[0, 0].item() == pytest.approx((2.0 - 3.75) / np.std([1, 2, 10, 2]), rel=1e-5)
    assert out.x_num[0, 1].item() == 0.0  # std 0 -> 1


def test_preprocessor_ambiguity_and_drop():
    df = toy_frame(100).assign(u=np.linspace(0, 1, 100), split="train")
    data = TabularPreprocessor("target", ambiguity_column="u", drop=["split"]).fit_transform(df)
    assert "u" not in data.schema.feature_names and "split" not in data.schema.feature_names
    assert torch.allclose(data.ambiguity, torch.linspace(0, 1, 100), atol=1e-6)


def test_preprocessor_label_errors():
    df = toy_frame(50)
    with pytest.raises(ValueError, match="available columns.*'a'"):
        TabularPreprocessor("nope").fit(df)
    with pytest.raises(ValueError, match="single class"):
        TabularPreprocessor("target").fit(df.assign(target="yes"))
    pre = TabularPreprocessor("target").fit(df)
    with pytest.raises(ValueError, match="maybe"):
        pre.transform(df.assign(target="maybe"))


def test_infer_feature_types_rules_and_overrides():
    df = pd.DataFrame(
        {
            "f": [0.5, 1.0] * 15,
            "many": np.arange(30),
            "few": [1, 2, 3] * 10,
            "s": ["x", "y"] * 15,
            "b": [True, False] * 15,
            "y": [0, 1] * 15,
        }
    )
    assert infer_feature_types(df, "y") == (["f", "many"], ["few", "s", "b"])
    assert infer_feature_types(df, "y", numerical=["few"], categorical=["many"]) == (["f", "few"], ["many", "s", "b"])
    with pytest.raises(ValueError, match="ghost"):
        infer_feature_types(df, "y", numerical=["ghost"])
    with pytest.raises(ValueError, match="both"):
        infer_feature_types(df, "y", numerical=["f"], categorical=["f"])


# --- splits --------------------------------------------------------------------------------------------


def test_stratified_split():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    train, val, test = stratified_split(y, seed=0)
    assert (len(train), len(val), len(test)) == (700, 100, 200)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(1000))
    for part, frac in ((train, 0.7), (val, 0.1), (test, 0.2)):
        assert np.allclose(np.bincount(y[part]) / len(part), [0.5, 0.3, 0.2], atol=0.01)
        assert part.dtype.kind == "i"
    again = stratified_split(y, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(train, stratified_split(y, seed=1)[0])


# --- files and loading ---------------------------------------------------------------------------------


def test_read_table_formats_and_errors(tmp_path):
    df = toy_frame(20)
    for name in ("t.csv", "t.csv.gz"):
        df.to_csv(tmp_path / name, index=False)
        assert read_table(tmp_path / name).shape == df.shape
    df.to_parquet(tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet").shape == df.shape

    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_table(tmp_path / "t.xlsx")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="no rows"):
        read_table(tmp_path / "header.csv")


def test_load_dataset_from_file(tmp_path):
    path = tmp_path / "toy.csv"
    toy_frame(1000).to_csv(path, index=False)
    splits = load_dataset(path, label="target", seed=1, max_rows=500)
    assert splits.name == "toy"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (350, 50, 100)
    assert splits.schema.n_features == 4 and splits.schema.n_classes == 2
    with pytest.raises(ValueError, match="label="):
        load_dataset(path)
    with pytest.raises(ValueError, match="available columns"):
        load_dataset(path, label="nope")


def test_load_sim():
    splits = load_dataset("sim", seed=2)
    assert splits.name == "sim"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7000, 1000, 2000)
    assert splits.schema.n_numerical == 28 and splits.schema.n_categorical == 4
    assert splits.schema.cardinalities == (4, 5, 6, 7)
    assert splits.test.ambiguity is not None
    for earlier in ("sim-v2", "sim-v1"):
        first = load_dataset(earlier, seed=2)
        assert first.name == earlier and first.schema == splits.schema
        assert not torch.equal(first.train.rows, splits.train.rows)


def test_missing_named_dataset_message(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_JEPA_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("adult", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "adult" / "adult.csv.gz") in msg
    assert "PYRO_JEPA_DATA" in msg and "--data-dir" in msg
    assert isinstance(info.value, FileNotFoundError)
    # Explicit download: the network is refused here, so the same kind of error, naming the URL.
    with pytest.raises(DatasetNotFoundError, match="archive.ics.uci.edu"):
        download("adult", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="mnist_10k.npz"):
        download("mnist", tmp_path)


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_JEPA_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("PYRO_JEPA_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "pyro_jepa"


@needs_shared
@pytest.mark.parametrize(
    "name, n_rows, n_num, n_cat, n_classes",
    [
        ("adult", 48_842, 6, 8, 2),
        ("covertype", 10_000, 54, 0, 7),
        ("electricity", 45_312, 7, 1, 2),
        ("mnist", 10_000, 784, 0, 10),
        ("mnist-7x7", 10_000, 49, 0, 10),
    ],
)
def test_real_datasets(name, n_rows, n_num, n_cat, n_classes):
    splits = load_dataset(name, data_dir=SHARED_DATA, seed=0)
    schema = splits.schema
    assert splits.name == name
    assert len(splits.train) + len(splits.val) + len(splits.test) == n_rows
    assert (schema.n_numerical, schema.n_categorical, schema.n_classes) == (n_num, n_cat, n_classes)
    assert (splits.train.ambiguity is not None) == name.startswith("mnist")
    assert torch.isfinite(splits.train.rows).all()


@needs_shared
def test_pooled_mnist_corrupts_the_block_means_with_the_same_u():
    from pyro_jepa.data.loaders import _read_named
    from pyro_jepa.data.sim import corrupt_mnist

    path = SHARED_DATA / "mnist-10k" / DATASETS["mnist"].file
    full, pooled = _read_named(DATASETS["mnist"], path), _read_named(DATASETS["mnist-7x7"], path)
    with np.load(path) as z:
        images = z["x"].reshape(-1, 28, 28).astype(np.float64)
    u = pooled["u"].to_numpy()
    np.testing.assert_array_equal(u, full["u"])
    np.testing.assert_array_equal(pooled["label"], full["label"])
    # Pixel (1, 2) of the 7x7 image: rows 4..7 and columns 8..11 of the 28x28 one, averaged, then blended with noise.
    clean = np.rint(images[:, 4:8, 8:12].mean((1, 2))) / 255
    a = 0.75 * u
    noise = (pooled["p9"].to_numpy() - (1 - a) * clean) / np.where(a > 0, a, 1)
    assert ((noise > -1e-4) & (noise < 1 + 1e-4))[a > 0.05].all()
    # Every pixel keeps its noise: the most corrupted images are as rough as uniform noise, not smoothed.
    x = pooled[[f"p{i}" for i in range(49)]].to_numpy()
    assert x[u > 0.9].std(1).mean() > 0.2
    with pytest.raises(ValueError, match="square"):
        corrupt_mnist(np.zeros((2, 50), dtype=np.uint8), seed=0)


@needs_shared
def test_adult_missing_marker_is_code_zero():
    splits = load_dataset("adult", data_dir=SHARED_DATA)
    occupation = splits.schema.categorical.index("occupation")
    assert (splits.train.x_cat[:, occupation] == 0).any()


@needs_shared
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shared_copies_match_registry_checksums(name):
    spec = DATASETS[name]
    folder = "mnist-10k" if name.startswith("mnist") else name
    assert sha256_file(SHARED_DATA / folder / spec.file) == spec.sha256


@needs_shared
def test_download_converts_to_our_exact_file(tmp_path, monkeypatch):
    """With a stand-in for the OpenML export, `download` writes a file with our copy's checksum."""
    ours = pd.read_csv(SHARED_DATA / "electricity" / "electricity.csv.gz")
    export = ours.assign(**{"class": "'" + ours["class"] + "'"}).to_csv(index=False).encode()

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(export))
    path = download("electricity", tmp_path)
    assert path == tmp_path / "electricity" / "electricity.csv.gz"
    assert sha256_file(path) == DATASETS["electricity"].sha256
