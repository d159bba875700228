"""From files (or the SIM generator) to preprocessed `Splits`.

Preprocessing statistics (medians, means, standard deviations, category and class lists) come from the
training split only, so validation and test rows never leak into them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes
from sklearn.model_selection import train_test_split

from .registry import DATASETS, MNIST_CORRUPTION_LAMBDA, DatasetSpec, find_dataset_file
from .registry import download as download_dataset
from .sim import corrupt_mnist, make_sim
from .tabular import Splits, TabularData, TabularSchema

MAX_CATEGORICAL_INT_VALUES = 20
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
# SIM and corrupted MNIST are generated once with a fixed seed, like a stored table; the caller's seed
# varies only the subsample and the split.
GENERATION_SEED = 0


def _check_columns(df: pd.DataFrame, names: Sequence[str], what: str) -> None:
    unknown = [n for n in names if n not in df.columns]
    if unknown:
        raise ValueError(f"{what} column(s) {unknown} not in the table; available: {list(df.columns)}")


def infer_feature_types(
    df: pd.DataFrame,
    label: str,
    numerical: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Split the feature columns (all but ``label`` and ``exclude``) into numerical and categorical.

    Floats, and integers with more than 20 distinct values, are numerical; strings, booleans, pandas
    categoricals and integers with at most 20 distinct values are categorical. Columns named in
    ``numerical`` / ``categorical`` take that type regardless. Returns names in table order.
    """
    numerical, categorical = list(numerical or ()), list(categorical or ())
    _check_columns(df, numerical, "numerical")
    _check_columns(df, categorical, "categorical")
    both = sorted(set(numerical) & set(categorical))
    if both:
        raise ValueError(f"column(s) {both} declared both numerical and categorical")
    reserved = sorted(set(numerical + categorical) & {label, *exclude})
    if reserved:
        raise ValueError(f"column(s) {reserved} are the label or excluded and cannot be features")

    num_out, cat_out = [], []
    for name in df.columns:
        if name == label or name in exclude:
            continue
        col = df[name]
        if name in numerical:
            is_num = True
        elif name in categorical:
            is_num = False
        elif ptypes.is_bool_dtype(col) or not ptypes.is_numeric_dtype(col):
            is_num = False
        elif ptypes.is_float_dtype(col):
            is_num = True
        else:
            is_num = col.nunique(dropna=True) > MAX_CATEGORICAL_INT_VALUES
        (num_out if is_num else cat_out).append(name)
    return num_out, cat_out


def read_table(path: str | os.PathLike[str], **read_kwargs) -> pd.DataFrame:
    """Read a ``.csv``, ``.csv.gz`` or ``.parquet`` file; extra keywords go to the pandas reader."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise ValueError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    try:
        df = pd.read_parquet(path, **read_kwargs) if name.endswith(".parquet") else pd.read_csv(path, **read_kwargs)
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path} has no columns") from err
    if len(df) == 0:
        raise ValueError(f"{path} has a header but no rows")
    return df


def _sorted_unique(values: pd.Series) -> list:
    unique = list(values.dropna().unique())
    try:
        return sorted(unique)
    except TypeError:  # mixed types: fall back to sorting by text
        return sorted(unique, key=str)


class TabularPreprocessor:
    """Turns data frames into `TabularData` with statistics fitted on the training frame.

    Numerical: NaN -> train median, then ``(x - mean) / std`` with train statistics (std 0 -> 1).
    Categorical: train categories in sorted order get codes 1..k; missing or unseen values get 0.
    Label: sorted train classes get ids 0..C-1; a label not seen in training is an error.
    """

    def __init__(
        self,
        label: str,
        numerical: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        ambiguity_column: str | None = None,
        drop: Sequence[str] = (),
    ) -> None:
        self.label = label
        self.numerical_override = numerical
        self.categorical_override = categorical
        self.ambiguity_column = ambiguity_column
        self.drop = tuple(drop)
        self.schema: TabularSchema | None = None

    def check_label(self, df: pd.DataFrame) -> None:
        """Raise ValueError if ``df`` lacks the label column or has missing labels."""
        if self.label not in df.columns:
            raise ValueError(f"label column {self.label!r} not found; available columns: {list(df.columns)}")
        n_missing = int(df[self.label].isna().sum())
        if n_missing:
            raise ValueError(f"label column {self.label!r} has {n_missing} missing value(s)")

    def fit(self, train_df: pd.DataFrame) -> TabularPreprocessor:
        """Learn types, imputation/standardization statistics, categories and classes from ``train_df``."""
        self.check_label(train_df)
        _check_columns(train_df, self.drop, "drop")
        exclude = [*self.drop, *([self.ambiguity_column] if self.ambiguity_column else [])]
        _check_columns(train_df, exclude, "ambiguity")
        num, cat = infer_feature_types(
            train_df, self.label, self.numerical_override, self.categorical_override, exclude=exclude
        )
        if not num and not cat:
            raise ValueError("the table has no feature columns")

        x = self._numeric(train_df, num)
        self.medians = np.nan_to_num(np.nanmedian(x, axis=0), nan=0.0) if num else np.zeros(0)
        x = np.where(np.isnan(x), self.medians, x)
        self.means = x.mean(axis=0)
        std = x.std(axis=0)
        self.stds = np.where(std > 0, std, 1.0)

        self.categories = [_sorted_unique(train_df[c]) for c in cat]
        self.label_values = _sorted_unique(train_df[self.label])
        if len(self.label_values) < 2:
            raise ValueError(
                f"label column {self.label!r} has a single class {self.label_values} in the training data"
            )
        self.schema = TabularSchema(
            numerical=tuple(num),
            categorical=tuple(cat),
            cardinalities=tuple(len(c) + 1 for c in self.categories),
            label=self.label,
            classes=tuple(str(v) for v in self.label_values),
        )
        return self

    @staticmethod
    def _numeric(df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
        cols = []
        for name in names:
            try:
                cols.append(pd.to_numeric(df[name]).to_numpy(dtype=np.float64, na_value=np.nan))
            except (ValueError, TypeError) as err:
                raise ValueError(f"numerical column {name!r} has non-numeric values: {err}") from err
        return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))

    def transform(self, df: pd.DataFrame) -> TabularData:
        """Encode ``df`` with the fitted statistics."""
        if self.schema is None:
            raise RuntimeError("call fit() before transform()")
        schema = self.schema
        self.check_label(df)
        _check_columns(df, schema.feature_names, "feature")

        x = self._numeric(df, schema.numerical)
        x = (np.where(np.isnan(x), self.medians, x) - self.means) / self.stds
        codes = [
            pd.Index(cats).get_indexer(df[name]).astype(np.int64) + 1  # unseen/missing: -1 -> 0
            for name, cats in zip(schema.categorical, self.categories)
        ]
        c = np.stack(codes, axis=1) if codes else np.zeros((len(df), 0))

        y = pd.Index(self.label_values).get_indexer(df[self.label]).astype(np.int64)
        if (y < 0).any():
            unseen = _sorted_unique(df[self.label][y < 0])
            raise ValueError(f"label value(s) {unseen} of column {self.label!r} were not seen in the training data")

        ambiguity = None
        if self.ambiguity_column is not None:
            ambiguity = torch.tensor(df[self.ambiguity_column].to_numpy(dtype=np.float32))
        rows = torch.as_tensor(np.concatenate([x, c], axis=1), dtype=torch.float32)
        return TabularData(rows, torch.as_tensor(y), schema, ambiguity)

    def fit_transform(self, train_df: pd.DataFrame) -> TabularData:
        return self.fit(train_df).transform(train_df)


def stratified_split(
    y: np.ndarray | Sequence, seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint, class-stratified train/val/test row indices (sorted) covering every row."""
    if len(fractions) != 3 or min(fractions) <= 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    y = np.asarray(y)
    index = np.arange(len(y))
    train, rest = train_test_split(index, train_size=fractions[0], stratify=y, random_state=seed)
    val, test = train_test_split(
        rest, test_size=fractions[2] / (fractions[1] + fractions[2]), stratify=y[rest], random_state=seed
    )
    return np.sort(train), np.sort(val), np.sort(test)


def _read_named(spec: DatasetSpec, path: Path) -> pd.DataFrame:
    if path.suffix == ".npz":  # MNIST: pixels + labels, corrupted as in the paper
        with np.load(path) as z:
            pixels, labels = z["x"].reshape(len(z["x"]), -1), z["y"]
        x, u = corrupt_mnist(pixels, seed=GENERATION_SEED, lam=MNIST_CORRUPTION_LAMBDA)
        df = pd.DataFrame(x, columns=list(spec.numerical or ()))
        df[spec.label] = labels
        df[spec.ambiguity] = u
        return df
    return read_table(path, na_values=list(spec.na_values) or None)


def _merge_types(
    spec_names: tuple[str, ...] | None, mine: Sequence[str] | None, other: Sequence[str] | None
) -> list[str] | None:
    """The caller's overrides win over the registry's types for the same columns."""
    if spec_names is None and mine is None:
        return None
    taken = set(other or ())
    return [n for n in (spec_names or ()) if n not in taken] + [n for n in (mine or ()) if n not in (spec_names or ())]


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    label: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    numerical: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    max_rows: int | None = None,
    download: bool = False,
) -> Splits:
    """Load ``"sim"``, a named dataset (see ``DATASETS``) or a CSV/Parquet file as 70/10/20 `Splits`.

    ``max_rows`` takes a seeded, stratified subsample before splitting; None means the dataset's default
    (covertype: 10,000 rows as in the paper; everything else: all rows). ``download=True`` fetches a
    missing named dataset from its original source; otherwise a missing file raises
    DatasetNotFoundError. For a file, ``label`` is required; ``Splits.name`` is then the file stem.
    """
    drop: tuple[str, ...] = ()
    ambiguity = None
    key = str(name_or_path)
    if key == "sim":
        name, df, label, ambiguity = "sim", make_sim(seed=GENERATION_SEED), label or "label", "u"
    elif key in DATASETS:
        spec = DATASETS[key]
        try:
            path = find_dataset_file(key, data_dir)
        except FileNotFoundError:
            if not download:
                raise
            path = download_dataset(key, data_dir)
        name, df, drop, ambiguity = key, _read_named(spec, path), spec.drop, spec.ambiguity
        if label is not None and label != spec.label:
            raise ValueError(f"dataset {key!r} has label {spec.label!r}, not {label!r}")
        label = spec.label
        numerical, categorical = (
            _merge_types(spec.numerical, numerical, categorical),
            _merge_types(spec.categorical, categorical, numerical),
        )
        max_rows = spec.default_rows if max_rows is None else max_rows
    else:
        path = Path(name_or_path)
        if label is None:
            raise ValueError(f"loading the file {path} needs label=<name of the label column>")
        df = read_table(path)
        name = path.name.removesuffix(".gz").rsplit(".", 1)[0]

    preprocessor = TabularPreprocessor(label, numerical, categorical, ambiguity_column=ambiguity, drop=drop)
    preprocessor.check_label(df)
    if max_rows is not None and max_rows < len(df):
        keep, _ = train_test_split(
            np.arange(len(df)), train_size=max_rows, stratify=df[label].to_numpy(), random_state=seed
        )
        df = df.iloc[np.sort(keep)].reset_index(drop=True)
    train, val, test = stratified_split(df[label].to_numpy(), seed)
    preprocessor.fit(df.iloc[train])
    return Splits(*(preprocessor.transform(df.iloc[i]) for i in (train, val, test)), name=name)
