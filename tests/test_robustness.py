"""Bad input and faults: every error names the problem and what to do, and no file is lost or changed.

The slow kill -9 + --resume test lives in tests/test_resume_kill.py.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_jepa.data import TabularPreprocessor, load_dataset, read_table
from pyro_jepa.data.registry import sha256_file
from pyro_jepa.io import MARKER
from pyro_jepa.models import TJEPA, VarTJEPA
from pyro_jepa.train import CheckpointError, TrainConfig, fit, load_checkpoint, save_checkpoint
from tests.conftest import make_table
from tests.test_experiment import ROOT, load_script
from tests.test_train import FAST, SMALL


def frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A clean mixed table: one float, one 3-level text column, a two-class label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"a": rng.normal(size=n), "color": rng.choice(["red", "green", "blue"], n), "y": rng.choice(["p", "q"], n)}
    )


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to show nothing was lost or changed)."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def with_cell(df: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    df = df.copy()
    if isinstance(value, str) and df[column].dtype.kind == "f":
        df[column] = df[column].astype(object)
    df.loc[row, column] = value
    return df


# --- tabular input: one clear error per bad input ------------------------------------------------------


BAD_FRAMES = {
    "missing label": (lambda: frame(), {"label": "target"}, r"label column 'target' not found; available columns: \['a', 'color', 'y'\]"),
    "one class": (lambda: frame().assign(y="p"), {}, r"label column 'y' has a single class \['p'\].*at least two"),
    "missing labels": (lambda: with_cell(frame(), 4, "y", None), {}, r"'y' has 1 missing value\(s\), first at row 4; drop those rows"),
    "continuous label": (lambda: frame().assign(y=np.linspace(0, 1, 60)), {}, r"looks continuous.*bin it"),
    "text in declared numerical": (
        lambda: with_cell(frame(), 7, "a", "oops"),
        {"numerical": ["a"]},
        r"numerical column 'a' has non-numeric text: row 7 holds 'oops' \(1 such value\(s\)\).*--categorical a",
    ),
    "text in inferred numerical": (
        lambda: with_cell(frame(), 7, "a", "n/a?"),
        {},
        r"column 'a' looks numerical \(59 of 60 values are numbers\) but row 7 holds 'n/a\?'",
    ),
    "inf refused": (lambda: with_cell(frame(), 3, "a", -np.inf), {}, r"column 'a' has an infinite value -inf at row 3.*infinite='missing'"),
    "nan refused": (lambda: with_cell(frame(), 5, "a", np.nan), {"missing": "raise"}, r"column 'a' has 1 missing value\(s\), first at row 5.*missing='impute'"),
    "categorical nan refused": (lambda: with_cell(frame(), 6, "color", None), {"missing": "raise"}, r"column 'color' .*first at row 6"),
    "identifier column": (
        lambda: frame().assign(user=[f"u{i}" for i in range(60)]),
        {},
        r"categorical column 'user' has 60 distinct values in 60 rows \(extreme cardinality.*--categorical user",
    ),
    "over 1000 levels": (
        lambda: frame(3000).assign(code=[f"c{i % 1500}" for i in range(3000)]),
        {},
        r"'code' has 1500 distinct values in 3000 rows",
    ),
    "duplicate columns": (lambda: pd.concat([frame(), frame()[["a"]]], axis=1), {}, r"duplicate column name\(s\) \['a'\]"),
    "declared all-missing": (lambda: frame().assign(e=np.nan), {"numerical": ["a", "e"]}, r"'e' is declared .* every value .* missing"),
    "nothing left": (lambda: frame()[["y"]].assign(k=1.0), {}, r"no usable feature columns"),
    "bad policy": (lambda: frame(), {"missing": "zero"}, r"missing must be one of \('impute', 'raise'\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_tables_raise_a_message_naming_column_row_and_remedy(case):
    make, kwargs, message = BAD_FRAMES[case]
    df = make()
    before = df.copy()
    kwargs = {"label": "y", **kwargs}
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nothing left" warns about the constant column first
        TabularPreprocessor(**kwargs).fit(df)
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is never modified


def test_declared_types_override_the_cardinality_and_constant_rules():
    df = frame().assign(user=[f"u{i}" for i in range(60)], k=3.0)
    with pytest.warns(UserWarning, match=r"dropping constant column\(s\) \['k'\]"):
        pre = TabularPreprocessor("y", categorical=["user", "color"], numerical=["a"]).fit(df)
    assert pre.schema.categorical == ("color", "user") and pre.schema.cardinalities[1] == 61
    kept = TabularPreprocessor("y", numerical=["a", "k"]).fit(df.drop(columns="user"))  # declared: no warning
    assert kept.schema.numerical == ("a", "k")


def test_constant_and_all_missing_columns_are_dropped_with_a_warning():
    df = frame().assign(k=5.0, e=np.nan, s="same")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre = TabularPreprocessor("y").fit(df)
    messages = " | ".join(str(w.message) for w in caught)
    assert "dropping constant column(s) ['k', 's']" in messages and "dropping column(s) ['e']" in messages
    assert pre.schema.feature_names == ("a", "color")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dropped columns are expected at transform time, not "new"
        assert pre.transform(df).rows.shape == (60, 2)


def test_nan_is_imputed_with_an_indicator_and_inf_can_be_treated_as_missing():
    df = with_cell(with_cell(frame(), 2, "a", np.nan), 3, "a", np.inf)
    data = TabularPreprocessor("y", infinite="missing").fit_transform(df)
    assert data.schema.numerical == ("a", "a__missing")
    assert torch.isfinite(data.rows).all()
    indicator = data.x_num[:, 1]
    assert indicator[2] > 0 and indicator[3] > 0 and (indicator[[0, 1, 4]] < 0).all()  # standardized 0/1
    assert torch.allclose(data.x_num[2, 0], data.x_num[3, 0])  # both the train median
    # A column without missing values in training gets no indicator; NaN in new data -> the median.
    pre = TabularPreprocessor("y").fit(frame())
    assert pre.schema.numerical == ("a",)
    new = pre.transform(with_cell(frame(10, seed=1), 0, "a", np.nan))
    assert new.x_num[0, 0].item() == pytest.approx((pre.medians[0] - pre.means[0]) / pre.stds[0], rel=1e-5)


def test_new_data_with_mismatched_columns_or_values_at_embedding_time():
    pre = TabularPreprocessor("y").fit(frame())
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['color'\] that the preprocessor was fitted on"):
        pre.transform(frame(10).drop(columns="color"))
    with pytest.warns(UserWarning, match=r"column\(s\) \['extra'\] were not in the training data and are ignored"):
        data = pre.transform(frame(10).assign(extra=1))
    assert data.schema == pre.schema
    reordered = frame(10)[["y", "color", "a"]]  # order does not matter, names do
    torch.testing.assert_close(pre.transform(reordered).rows, pre.transform(frame(10)).rows)
    with pytest.raises(ValueError, match=r"column 'a' has non-numeric text: row 4 holds 'x'"):
        pre.transform(with_cell(frame(10), 4, "a", "x"))
    with pytest.raises(ValueError, match=r"column 'a': row 1 holds 1e\+300, too large for float32"):
        pre.transform(with_cell(frame(10), 1, "a", 1e300))
    with pytest.raises(ValueError, match=r"label value\(s\) \['maybe'\]"):
        pre.transform(frame(10).assign(y="maybe"))
    with pytest.raises(ValueError, match="duplicate column"):
        pre.transform(pd.concat([frame(10), frame(10)[["color"]]], axis=1))


# --- files -----------------------------------------------------------------------------------------


BAD_FILES = {
    "empty.csv": (b"", r"is empty \(0 bytes\)"),
    "blank.csv": (b"\n\n\n", r"has no columns"),
    "header.csv": (b"a,b,y\n", r"has a header but no rows"),
    "dup.csv": (b"a,b,a,y\n1,2,3,p\n4,5,6,q\n", r"duplicate column name\(s\) \['a'\]"),
    "broken.csv.gz": (b"\x1f\x8b\x08 truncated", r"could not be read as CSV .*is the file complete"),
    "broken.parquet": (b"PAR1 not really", r"could not be read as Parquet"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_clear_errors_and_stay_untouched(tmp_path, name):
    raw, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        read_table(path)
    with pytest.raises(ValueError, match=message):
        load_dataset(path, label="y")
    assert path.read_bytes() == raw and snapshot(tmp_path) == {name: sha256_file(path)}


def test_load_dataset_names_the_files_row_before_subsampling(tmp_path):
    df = with_cell(frame(400), 321, "a", "12,5")  # a decimal comma in a numerical column
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    digest = sha256_file(path)
    with pytest.raises(ValueError, match=r"column 'a' looks numerical .* row 321 holds '12,5'"):
        load_dataset(path, label="y", max_rows=100)  # row 321 of the file, not of the subsample
    rare = frame(40).assign(y=["p", "q"] * 19 + ["p", "r"])
    rare.to_csv(tmp_path / "rare.csv", index=False)
    with pytest.raises(ValueError, match=r"rarest class 'r' has 1 row\(s\) among 3 classes.*merge or drop rare classes"):
        load_dataset(tmp_path / "rare.csv", label="y")
    with pytest.raises(ValueError, match="max_rows must be a positive"):
        load_dataset(path.with_name("rare.csv"), label="y", max_rows=0)
    assert sha256_file(path) == digest


# --- property-based: random small tables ------------------------------------------------------------


@st.composite
def tables(draw):
    """A random small DataFrame: mixed dtypes, NaN/None, a few labels, and a second frame with unseen values."""
    n = draw(st.integers(2, 40))
    columns = {}
    for j in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["float", "int", "text", "bool", "mixed"]))
        if kind == "float":
            values = draw(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=n, max_size=n))
        elif kind == "int":
            values = draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n))
        elif kind == "text":
            values = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "c", ""]), st.none()), min_size=n, max_size=n))
        elif kind == "bool":
            values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        else:
            values = draw(st.lists(st.one_of(st.integers(0, 3), st.sampled_from(["x", "y"]), st.none()), min_size=n, max_size=n))
        columns[f"{kind}{j}"] = values
    columns["label"] = draw(st.lists(st.sampled_from(["u", "v", "w"]), min_size=n, max_size=n))
    return pd.DataFrame(columns)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=tables(), missing=st.sampled_from(["impute", "raise"]))
def test_preprocessor_gives_valid_data_or_a_value_error(df, missing):
    pre = TabularPreprocessor("label", missing=missing)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = pre.fit_transform(df)
    except ValueError as err:
        assert str(err) and re.search(r"column|label|feature", str(err)), err
        return
    schema = data.schema
    assert data.rows.shape == (len(df), schema.n_features) and data.rows.dtype == torch.float32
    assert torch.isfinite(data.rows).all()
    assert set(schema.feature_names) <= {*df.columns, *(f"{c}__missing" for c in df.columns)} - {"label"}
    assert data.y.min() >= 0 and data.y.max() < schema.n_classes >= 2
    for j, card in enumerate(schema.cardinalities):
        codes = data.x_cat[:, j]
        assert (codes >= 0).all() and (codes < card).all()
        assert torch.equal(data.rows[:, schema.n_numerical + j], codes.float())  # whole numbers
    # New rows whose categories were never seen in training get code 0, not an error.
    unseen = df.copy()
    for name in schema.categorical:
        unseen[name] = "never-seen-before"
    codes = pre.transform(unseen).x_cat
    assert (codes == 0).all()


# --- training faults -------------------------------------------------------------------------------


def poison_at(method, step: int, action) -> None:
    """Run ``action(method)`` right after optimizer step ``step`` (a fault in the middle of an epoch)."""
    real = method.on_step_end

    def on_step_end(current: int, total: int) -> None:
        real(current, total)
        if current == step:
            action(method)

    method.on_step_end = on_step_end


def test_non_finite_elbo_term_stops_the_run_naming_it_and_keeps_the_last_checkpoint(schema, tmp_path):
    train, val = make_table(schema, 128, seed=1), make_table(schema, 64, seed=2)
    torch.manual_seed(0)
    method = VarTJEPA(schema, SMALL)
    # 128 rows / batch 32 = 4 steps per epoch: the reconstruction scale goes NaN in epoch 2.
    poison_at(method, 5, lambda m: m.log_sigma_x.data.fill_(math.nan))
    with pytest.raises(FloatingPointError) as info:
        fit(method, train, val, replace(FAST, epochs=2), tmp_path)
    message = str(info.value)
    assert re.search(r"non-finite training loss at epoch 2, step 5: non-finite ELBO/loss term\(s\): rec \(", message)
    assert "kl_s_y=" in message and "log_sigma_x" in message
    assert f"the last good checkpoint {tmp_path / 'last.pt'} (after epoch 1) is kept" in message and "--lr" in message
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["method"].values() if torch.is_tensor(v))
    assert set(snapshot(tmp_path)) == {"last.pt", "best.pt", "history.csv"}  # no stray .tmp file
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1


def test_non_finite_gradient_stops_before_the_weights_change(schema, tmp_path):
    train, val = make_table(schema, 64, seed=1), make_table(schema, 32, seed=2)
    torch.manual_seed(0)
    method = TJEPA(schema, SMALL)
    real_loss = method.loss
    # A finite loss whose gradient is inf: sqrt at 0.
    method.loss = lambda rows, step: real_loss(rows, step) + (torch.zeros((), requires_grad=True) * sum(p.sum() for p in method.parameters())).abs().sqrt()
    before = {k: v.clone() for k, v in method.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(FloatingPointError, match=r"T-JEPA: non-finite gradient norm at epoch 1, step 0: .*no checkpoint had been written yet"):
        fit(method, train, val, FAST, tmp_path)
    for key, value in method.state_dict().items():
        if torch.is_tensor(value):
            torch.testing.assert_close(value, before[key], msg=key)
    assert not (tmp_path / "last.pt").exists()


def test_resume_refuses_a_corrupt_last_checkpoint_without_touching_it(schema, tmp_path):
    train, val = make_table(schema, 64, seed=1), make_table(schema, 32, seed=2)
    torch.manual_seed(0)
    fit(VarTJEPA(schema, SMALL), train, val, TrainConfig(epochs=1, batch_size=32, progress=False), tmp_path)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:200])  # truncated, as by a full disk
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"last.pt is not a readable pyro_jepa checkpoint"):
        fit(VarTJEPA(schema, SMALL), train, val, FAST, tmp_path, resume=True)
    assert snapshot(tmp_path) == before
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_checkpoint(tmp_path / "empty.pt")


def test_checkpoint_write_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "pyro_jepa-checkpoint-v1", "epoch": 1}, path)
    good = path.read_bytes()

    def dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "pyro_jepa-checkpoint-v1", "epoch": 2}, path)
    assert path.read_bytes() == good and load_checkpoint(path)["epoch"] == 1


def test_no_code_path_parses_configs_or_checkpoints_unsafely():
    unsafe = re.compile(r"(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.(unsafe_)?load\(|pickle\.loads?\(|weights_only\s*=\s*False")
    sources = [*ROOT.joinpath("pyro_jepa").rglob("*.py"), *ROOT.joinpath("experiments").rglob("*.py")]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1) if unsafe.search(line)]
    assert not hits, hits
    loads = [p for p in sources if "torch.load(" in p.read_text()]
    assert all("weights_only=True" in p.read_text() for p in loads), loads


# --- the main job: argument errors, run folders, determinism --------------------------------------------


@pytest.fixture(scope="module")
def script():
    return load_script("var_t_jepa")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-rows", "0"], "--max-rows must be at least 1"),
        (["--batch-size", "1"], "--batch-size must be at least 2"),
        (["--group-size", "0"], "--group-size must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--dataset", "nope"], "--dataset 'nope' is unknown"),
        (["--data", "missing.csv", "--label", "y"], "no such file"),
        (["--resume", "--overwrite", "--out", "x"], "exclude each other"),
    ],
)
def test_bad_arguments_are_refused(script, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        script.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bad_data_file_is_reported_without_a_traceback(script, tmp_path, capsys):
    path = tmp_path / "t.csv"
    frame(50).assign(y="p").to_csv(path, index=False)
    digest = sha256_file(path)
    assert script.main(["--data", str(path), "--label", "y", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "error: label column 'y' has a single class ['p']" in capsys.readouterr().err
    assert sha256_file(path) == digest and snapshot(tmp_path / "run") == {}


def test_existing_run_folder_is_left_byte_for_byte(script, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "var-t-jepa").mkdir(parents=True)
    (run / MARKER).write_text("{}\n")  # a run folder (one without the marker: tests/test_run_folders.py)
    (run / "metrics.json").write_text('{"old": true}\n')
    (run / "checkpoints" / "var-t-jepa" / "last.pt").write_bytes(b"weights")
    before = snapshot(run)
    assert script.main(["--out", str(run), "--max-rows", "200", "--no-progress"]) == 2
    assert "already holds results; pass --overwrite" in capsys.readouterr().err
    assert snapshot(run) == before


TINY = ["--max-rows", "100", "--epochs", "1", "--methods", "var-t-jepa", "--predictors", "mlp", "--downstream-epochs", "2",
        "--posterior-samples", "5", "--posterior-rows", "2", "--no-progress", "--seed", "5"]  # fmt: skip


def test_same_seed_twice_gives_identical_metrics_on_cpu(script, tmp_path):
    metrics = []
    for name in ("first", "second"):
        assert script.main([*TINY, "--device", "cpu", "--out", str(tmp_path / name)]) == 0
        metrics.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert metrics[0]["downstream"] == metrics[1]["downstream"]
    first, second = (m["methods"]["Var-T-JEPA"] for m in metrics)
    assert first["best_epoch"] == second["best_epoch"] and first["collapse_test"] == second["collapse_test"]
    assert (tmp_path / "first" / "results.csv").read_bytes() == (tmp_path / "second" / "results.csv").read_bytes()


# -- image data -----------------------------------------------------------------------------------
def test_image_data_rejects_bad_shape_dtype_range_and_labels():
    from pyro_jepa.data.images import ImageData

    good = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    ImageData(good, labels, ("a", "b"))
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        ImageData(torch.zeros(4, 8, 8, dtype=torch.uint8), labels, ("a", "b"))
    with pytest.raises(ValueError, match="uint8.*scaled by 255"):
        ImageData(good.float() / 255, labels, ("a", "b"))
    with pytest.raises(ValueError, match="empty"):
        ImageData(good[:0], labels[:0], ("a", "b"))
    with pytest.raises(ValueError, match=r"labels must be int64 in \[0, 2\)"):
        ImageData(good, torch.tensor([0, 1, 2, 1]), ("a", "b"))


# --- strict parsing (issue 11) -------------------------------------------------------------------------


def test_a_huge_value_is_an_error_whichever_split_it_lands_in(tmp_path):
    df = frame(200).astype({"a": object})
    df.loc[137, "a"] = 1e200  # its square overflows float64: the std would be inf
    path = tmp_path / "huge.csv"
    df.to_csv(path, index=False)
    for seed in range(4):  # the row lands in train, val or test depending on the seed
        with pytest.raises(ValueError, match=r"numerical column 'a': row 137 holds 1e\+200, too large for float32"):
            load_dataset(path, label="y", seed=seed)
    big = frame(200).assign(a=lambda d: d["a"] * 1e30)  # large but representable: loads, standardized
    big.to_csv(path, index=False)
    data = load_dataset(path, label="y").train
    assert torch.isfinite(data.rows).all() and data.x_num[:, 0].std() == pytest.approx(1.0, rel=0.1)


def test_trailing_delimiters_do_not_shift_columns_and_wider_rows_are_an_error(tmp_path):
    clean, trailing, wider = tmp_path / "clean.csv", tmp_path / "trailing.csv", tmp_path / "wider.csv"
    df = frame(30)
    df.to_csv(clean, index=False)
    lines = clean.read_text().splitlines()
    trailing.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")
    pd.testing.assert_frame_equal(read_table(trailing), read_table(clean))
    every = tmp_path / "every.csv"  # every row wider: pandas' own check does not fire, ours does
    every.write_text("\n".join([lines[0], *(line + ",x" for line in lines[1:])]) + "\n")
    with pytest.raises(ValueError, match=r"data row 0 \(line 2\) has more fields than the header's 3 columns \(it holds 'x'"):
        read_table(every)
    wider.write_text("\n".join([lines[0], *lines[1:5], lines[5] + ",oops", *lines[6:]]) + "\n")
    with pytest.raises(ValueError, match=r"data row 4 \(line 6\) has more fields than the header's 3 columns"):
        read_table(wider)


@pytest.mark.parametrize("declared", [None, ["tags"]])
def test_list_columns_in_parquet_are_refused_naming_the_column(tmp_path, declared):
    df = frame(30).assign(tags=[[1, 2]] * 30)
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    with pytest.raises(ValueError, match=r"column 'tags' holds .* values \(30 cell\(s\), first at row 0\); only numbers and text"):
        load_dataset(path, label="y", categorical=declared)
    assert load_dataset(path, label="y", drop=["tags"]).schema.feature_names == ("a", "color")


def test_na_text_is_a_category_in_text_columns_and_missing_in_numerical_ones(tmp_path):
    df = frame(60)
    df["region"] = ["NA", "EU", "null"] * 20  # North America, Europe, and a region called "null"
    df["a"] = df["a"].astype(object)
    df.loc[[3, 9], "a"] = "NA"
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    loaded = read_table(path)
    assert list(loaded["region"][:3]) == ["NA", "EU", "null"]
    pre = TabularPreprocessor("y").fit(loaded)
    assert pre.schema.categorical == ("color", "region") and pre.categories[1] == ["EU", "NA", "null"]
    assert pre.schema.numerical == ("a", "a__missing")  # "NA" in a number column: missing, with an indicator
    assert load_dataset(path, label="y", na_values=["NA"]).train.schema.numerical == ("a", "a__missing")


def test_column_names_with_spaces_or_commas_can_be_declared(tmp_path):
    df = frame(60).rename(columns={"a": " price", "color": "size, colour"}).assign(code=np.arange(60) % 7)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    from pyro_jepa.cli import split_names

    splits = load_dataset(path, label="y", numerical=split_names(" price, code"), categorical=split_names(r"size\, colour"))
    assert splits.schema.numerical == (" price", "code") and splits.schema.categorical == ("size, colour",)
    with pytest.raises(ValueError, match=r"numerical column 'nope' not in the table"):
        load_dataset(path, label="y", numerical=["nope"])


def test_split_errors_count_the_rows_after_max_rows(tmp_path):
    df = frame(400).assign(y=["p"] * 396 + ["q"] * 4)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"split of 60 rows by label 'y': its rarest class 'q' has 1 row"):
        load_dataset(path, label="y", max_rows=60)
    with pytest.raises(ValueError, match=r"is a folder; pass the CSV or Parquet file inside it"):
        read_table(tmp_path)


def test_a_row_identifier_column_is_used_with_a_warning_to_drop_it(tmp_path):
    df = frame(60).assign(ID=np.arange(1000, 1060))
    with pytest.warns(UserWarning, match=r"numerical column 'ID' holds a distinct whole number in every row.*--drop ID"):
        TabularPreprocessor("y").fit(df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TabularPreprocessor("y", drop=["ID"]).fit(df)
        TabularPreprocessor("y").fit(frame(60).assign(count=np.arange(60) * 7 % 61 + 1000 * (np.arange(60) % 2)))


HOSTILE_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8),
    st.sampled_from(["NA", "null", "N/A", "None", "nan", '"quoted"', "a,b", "semi;colon", "line\nbreak", " pad ", "é€✓", "0"]),
)
HOSTILE_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.sampled_from([1e300, -1e300, 1e-300, 5e-324, 0.0, -0.0])
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    numbers=st.lists(HOSTILE_NUMBER, min_size=3, max_size=12),
    texts=st.data(),
    fmt=st.sampled_from(["csv", "parquet"]),
)
def test_hostile_cells_load_exactly_or_fail_naming_a_column(tmp_path, numbers, texts, fmt):
    n = len(numbers)
    words = texts.draw(st.lists(HOSTILE_TEXT, min_size=n, max_size=n))
    words[0] = "plain text"  # a text column, not numbers that happen to be written as text
    written = pd.DataFrame({"num": numbers, "txt": words, "y": (["p", "q"] * n)[:n]})
    path = tmp_path / f"t.{fmt}"
    (written.to_csv(path, index=False) if fmt == "csv" else written.to_parquet(path))
    try:
        loaded = read_table(path)
        TabularPreprocessor("y", categorical=["txt"]).validate(loaded)
    except ValueError as err:
        assert re.search(r"column '(num|txt|y)'", str(err)), err
        assert max(abs(x) for x in numbers) > 3.4e38, err  # only out-of-float32 numbers may be refused
        return
    assert list(loaded.columns) == ["num", "txt", "y"]
    assert np.array_equal(loaded["num"].to_numpy(dtype=np.float64), np.asarray(numbers, dtype=np.float64))
    assert loaded["txt"].tolist() == words  # "NA", "null", quotes, commas, newlines, unicode: all kept as written
