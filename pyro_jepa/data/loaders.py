"""From files (or the SIM generator) to preprocessed `Splits`.

Preprocessing statistics (medians, means, standard deviations, category and class lists) come from the
training split only, so validation and test rows never leak into them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes
from sklearn.model_selection import train_test_split

from .registry import DATASETS, MNIST_CORRUPTION_LAMBDA, DatasetSpec, find_dataset_file
from .registry import download as download_dataset
from .sim import SIM_VERSIONS, corrupt_mnist, make_sim_version
from .tabular import Splits, TabularData, TabularSchema

MAX_CATEGORICAL_INT_VALUES = 20
# Extreme cardinality: an inferred categorical column with more levels than this, or with more than
# MAX_UNIQUE_FRACTION of its values distinct (and over MAX_CATEGORICAL_INT_VALUES levels), is almost
# always an identifier or free text; one embedding per level would only memorize rows.
MAX_CATEGORIES = 1000
MAX_UNIQUE_FRACTION = 0.5
# A text column whose values are at least this fraction numbers is a numerical column with stray text.
MOSTLY_NUMERIC = 0.9
MISSING_POLICIES = ("impute", "raise")
INFINITE_POLICIES = ("raise", "missing")
INDICATOR_SUFFIX = "__missing"
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
    """Read a ``.csv``, ``.csv.gz`` or ``.parquet`` file; extra keywords go to the pandas reader.

    Raises ValueError (never a parser traceback) for an empty file, a header without rows, a file the
    reader cannot parse, and duplicate column names (which pandas would silently rename to ``a.1``).
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise ValueError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected a header line and at least one row")
    is_parquet = name.endswith(".parquet")
    try:
        if is_parquet:
            df = pd.read_parquet(path, **read_kwargs)
            header = [str(c) for c in df.columns]
        else:
            df = pd.read_csv(path, **read_kwargs)
            # The raw header, before pandas renames duplicates ("a", "a" -> "a", "a.1").
            sep = read_kwargs.get("sep", read_kwargs.get("delimiter", ","))
            raw = pd.read_csv(path, header=None, nrows=1, dtype=str, sep=sep).iloc[0].tolist()
            header = [c for c in raw if isinstance(c, str)]  # blank names become "Unnamed: i", never duplicates
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path} has no columns (only blank lines?); expected a header line and rows") from err
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as err:
        kind = "Parquet" if is_parquet else "CSV"
        raise ValueError(f"{path} could not be read as {kind} ({type(err).__name__}: {err}); is the file complete?") from err
    duplicates = sorted({str(c) for c in header if header.count(c) > 1})
    if duplicates:
        raise ValueError(f"{path} has duplicate column name(s) {duplicates}; rename them so every column is unique")
    if len(df) == 0:
        raise ValueError(f"{path} has a header but no rows")
    return df


def _sorted_unique(values: pd.Series) -> list:
    unique = list(values.dropna().unique())
    try:
        return sorted(unique)
    except TypeError:  # mixed types: fall back to sorting by text
        return sorted(unique, key=str)


def _row(df: pd.DataFrame, mask: np.ndarray | pd.Series) -> tuple[object, int]:
    """Index label of the first True row of ``mask`` and how many rows are True."""
    mask = np.asarray(mask, dtype=bool)
    return df.index[int(np.argmax(mask))], int(mask.sum())


def _shown(value: object) -> str:
    """A cell value for a message: ``'abc'``, ``inf``, not ``np.float64(inf)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def check_unique_columns(df: pd.DataFrame) -> None:
    """Raise ValueError naming duplicate column names (a frame built in memory can hold them)."""
    duplicates = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if duplicates:
        raise ValueError(f"duplicate column name(s) {duplicates}; rename them so every column is unique")


class TabularPreprocessor:
    """Turns data frames into `TabularData` with statistics fitted on the training frame.

    Numerical: NaN -> train median, then ``(x - mean) / std`` with train statistics (std 0 -> 1).
    With ``missing="impute"`` (default) every numerical column that has missing values in the
    training frame also gets a 0/1 numerical indicator feature ``<name>__missing`` (after the
    numerical columns); ``missing="raise"`` refuses any missing feature value instead.
    ``infinite="raise"`` (default) refuses ±inf; ``infinite="missing"`` treats it as missing.
    Categorical: train categories in sorted order get codes 1..k; missing or unseen values get 0.
    Label: sorted train classes get ids 0..C-1; a label not seen in training is an error.

    Validation (`validate`, run by `fit`; every message names the column, the first offending row
    by index label, and what to do): duplicate column names, a missing or single-class label,
    non-numeric text in a numerical column, ±inf, extreme cardinality of an inferred categorical
    column (an error), and at fit time constant or all-missing columns (dropped with a warning
    when their type was inferred; kept when declared through ``numerical``/``categorical``,
    except an all-missing declared column, which is an error).
    """

    def __init__(
        self,
        label: str,
        numerical: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        ambiguity_column: str | None = None,
        drop: Sequence[str] = (),
        missing: str = "impute",
        infinite: str = "raise",
    ) -> None:
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        if infinite not in INFINITE_POLICIES:
            raise ValueError(f"infinite must be one of {INFINITE_POLICIES}, got {infinite!r}")
        self.label = label
        self.numerical_override = numerical
        self.categorical_override = categorical
        self.ambiguity_column = ambiguity_column
        self.drop = tuple(drop)
        self.missing = missing
        self.infinite = infinite
        self.schema: TabularSchema | None = None

    def check_label(self, df: pd.DataFrame) -> None:
        """Raise ValueError if ``df`` lacks the label column or has missing labels."""
        if self.label not in df.columns:
            raise ValueError(f"label column {self.label!r} not found; available columns: {list(df.columns)}")
        missing = df[self.label].isna().to_numpy()
        if missing.any():
            row, n = _row(df, missing)
            raise ValueError(
                f"label column {self.label!r} has {n} missing value(s), first at row {_shown(row)}; "
                "drop those rows or fill in their labels"
            )

    def _excluded(self) -> list[str]:
        return [*self.drop, *([self.ambiguity_column] if self.ambiguity_column else [])]

    @property
    def _declared(self) -> set[str]:
        return set(self.numerical_override or ()) | set(self.categorical_override or ())

    def validate(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        """Check a raw frame (before splitting, so rows are the file's); return its (numerical, categorical).

        Raises ValueError naming the column, the first offending row and what to do.
        """
        check_unique_columns(df)
        self.check_label(df)
        _check_columns(df, self.drop, "drop")
        exclude = self._excluded()
        _check_columns(df, exclude, "ambiguity")
        classes = df[self.label].nunique()
        if classes < 2:
            raise ValueError(
                f"label column {self.label!r} has a single class {_sorted_unique(df[self.label])}; "
                "a classification label needs at least two classes (is --label the right column?)"
            )
        if ptypes.is_float_dtype(df[self.label]) and classes > max(MAX_CATEGORICAL_INT_VALUES, MAX_UNIQUE_FRACTION * len(df)):
            raise ValueError(
                f"label column {self.label!r} has {classes} distinct float values in {len(df)} rows; it looks "
                "continuous, but the library learns classes: bin it into classes or choose another --label"
            )
        num, cat = infer_feature_types(df, self.label, self.numerical_override, self.categorical_override, exclude=exclude)
        declared = self._declared
        for name in cat:
            if name not in declared:
                self._check_inferred_categorical(df, name)
        self._numeric(df, num)  # non-numeric text, ±inf and (with missing="raise") NaN, with rows
        if self.missing == "raise":
            for name in cat:
                self._refuse_missing(df, name, df[name].isna().to_numpy())
        return num, cat

    @staticmethod
    def _check_inferred_categorical(df: pd.DataFrame, name: str) -> None:
        """Reject text columns that are numbers with stray text, and identifier-like columns."""
        col = df[name]
        present = col.notna().to_numpy()
        n = int(present.sum())
        if n == 0:
            return  # all missing: dropped (with a warning) at fit time
        if not ptypes.is_bool_dtype(col) and not ptypes.is_numeric_dtype(col):
            numbers = pd.to_numeric(col, errors="coerce").notna().to_numpy()
            if numbers.sum() >= MOSTLY_NUMERIC * n and numbers.sum() < n:
                row, bad = _row(df, present & ~numbers)
                raise ValueError(
                    f"column {name!r} looks numerical ({int(numbers.sum())} of {n} values are numbers) but row "
                    f"{_shown(row)} holds {_shown(col.loc[row])} ({bad} non-numeric value(s)); fix or blank those cells "
                    f"(blank = missing), or declare the column categorical (categorical=[{name!r}] / --categorical {name})"
                )
        levels = col.nunique(dropna=True)
        if levels > MAX_CATEGORIES or (levels > MAX_CATEGORICAL_INT_VALUES and levels > MAX_UNIQUE_FRACTION * n):
            raise ValueError(
                f"categorical column {name!r} has {levels} distinct values in {n} rows (extreme cardinality: an "
                "identifier or free text?); remove it from the table, declare it numerical if its values are "
                f"numbers (--numerical {name}), or declare it categorical to keep it anyway (--categorical {name})"
            )

    def _refuse_missing(self, df: pd.DataFrame, name: str, missing: np.ndarray) -> None:
        if missing.any():
            row, n = _row(df, missing)
            raise ValueError(
                f"column {name!r} has {n} missing value(s), first at row {_shown(row)}, and missing='raise'; fill them "
                "or use missing='impute' (train median plus a <name>__missing indicator feature)"
            )

    def _column_numbers(self, df: pd.DataFrame, name: str) -> np.ndarray:
        """One numerical column as float64 with NaN for missing; errors name the row and value."""
        col = df[name]
        values = pd.to_numeric(col.astype(float) if ptypes.is_bool_dtype(col) else col, errors="coerce")
        text = (values.isna() & col.notna()).to_numpy()
        if text.any():
            row, n = _row(df, text)
            raise ValueError(
                f"numerical column {name!r} has non-numeric text: row {_shown(row)} holds {_shown(col.loc[row])} ({n} such "
                f"value(s)); fix or blank those cells (blank = missing), or declare it categorical (--categorical {name})"
            )
        x = values.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        infinite = np.isinf(x)
        if infinite.any():
            if self.infinite == "raise":
                row, n = _row(df, infinite)
                raise ValueError(
                    f"numerical column {name!r} has an infinite value {_shown(col.loc[row])} at row {_shown(row)} ({n} such "
                    "value(s)); replace them, or pass infinite='missing' to treat them as missing"
                )
            x[infinite] = np.nan
        if self.missing == "raise":
            self._refuse_missing(df, name, np.isnan(x))
        return x

    def _numeric(self, df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
        cols = [self._column_numbers(df, name) for name in names]
        return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))

    def _drop_uninformative(self, df: pd.DataFrame, names: list[str]) -> list[str]:
        """Drop inferred constant / all-missing columns with a warning; declared ones stay (all-missing: error)."""
        declared, keep, constant, empty = self._declared, [], [], []
        for name in names:
            n_present = int(df[name].notna().sum())
            if n_present == 0 and name in declared:
                raise ValueError(
                    f"column {name!r} is declared as a feature but every value in the training split is missing; "
                    "check the file's missing-value markers, or stop declaring the column"
                )
            if name in declared or df[name].nunique(dropna=False) > 1:
                keep.append(name)
            else:
                (empty if n_present == 0 else constant).append(name)
        if constant:
            warnings.warn(
                f"dropping constant column(s) {constant}: one value in every training row carries no information; "
                "declare them numerical/categorical to keep them",
                UserWarning,
                stacklevel=3,
            )
        if empty:
            warnings.warn(
                f"dropping column(s) {empty}: every value is missing in the training split", UserWarning, stacklevel=3
            )
        return keep

    def fit(self, train_df: pd.DataFrame) -> TabularPreprocessor:
        """Learn types, imputation/standardization statistics, categories and classes from ``train_df``."""
        num, cat = self.validate(train_df)
        kept = self._drop_uninformative(train_df, [*num, *cat])
        self.dropped = tuple(n for n in (*num, *cat) if n not in kept)  # tolerated, unused, at transform
        num, cat = [n for n in num if n in kept], [n for n in cat if n in kept]
        if not num and not cat:
            raise ValueError(
                "the table has no usable feature columns (besides the label, excluded, constant or empty ones)"
            )

        x = self._numeric(train_df, num)
        missing = np.isnan(x)
        self.source_numerical = tuple(num)
        self.indicators = tuple(n for j, n in enumerate(num) if missing[:, j].any()) if self.missing == "impute" else ()
        self.medians = np.nanmedian(x, axis=0) if num else np.zeros(0)
        x = self._with_indicators(np.where(missing, self.medians, x), missing)
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
            numerical=(*num, *(n + INDICATOR_SUFFIX for n in self.indicators)),
            categorical=tuple(cat),
            cardinalities=tuple(len(c) + 1 for c in self.categories),
            label=self.label,
            classes=tuple(str(v) for v in self.label_values),
        )
        return self

    def _with_indicators(self, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Append the 0/1 missing-indicator columns fitted on the training frame."""
        index = [self.source_numerical.index(n) for n in self.indicators]
        return np.concatenate([x, missing[:, index].astype(np.float64)], axis=1)

    def transform(self, df: pd.DataFrame) -> TabularData:
        """Encode ``df`` with the fitted statistics.

        ``df`` must hold the label and every feature column the preprocessor was fitted on (a
        ValueError lists those it lacks); columns unknown at fit time are ignored with a warning.
        """
        if self.schema is None:
            raise RuntimeError("call fit() before transform()")
        schema = self.schema
        check_unique_columns(df)
        self.check_label(df)
        features = [*self.source_numerical, *schema.categorical]
        lacking = [n for n in features if n not in df.columns]
        if lacking:
            raise ValueError(
                f"the frame lacks feature column(s) {lacking} that the preprocessor was fitted on; add them "
                "(empty cells count as missing) or refit on data with the same columns"
            )
        known = {*features, self.label, *self._excluded(), *self.dropped}
        extra = [c for c in df.columns if c not in known]
        if extra:
            warnings.warn(f"column(s) {extra} were not in the training data and are ignored", UserWarning, stacklevel=2)

        x = self._numeric(df, self.source_numerical)
        missing = np.isnan(x)
        if self.missing == "raise":
            for name in schema.categorical:
                self._refuse_missing(df, name, df[name].isna().to_numpy())
        x = (self._with_indicators(np.where(missing, self.medians, x), missing) - self.means) / self.stds
        with np.errstate(over="ignore"):  # reported below with the row and value
            x = x.astype(np.float32)
        overflow = ~np.isfinite(x)
        if overflow.any():  # finite input that leaves float32's range after standardization
            row_pos, col = np.argwhere(overflow)[0]
            name = schema.numerical[col]
            raise ValueError(
                f"numerical column {name!r}: row {_shown(df.index[row_pos])} holds {_shown(df[name].iloc[row_pos])}, too large "
                "for float32 after standardization with the training statistics; check its units or clip outliers"
            )
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
        if spec.image_pool > 1:  # pool the clean images, then corrupt: every pixel keeps its full noise
            side, k = int(round(pixels.shape[1] ** 0.5)), spec.image_pool
            blocks = pixels.reshape(len(pixels), side // k, k, side // k, k).astype(np.float64).mean((2, 4))
            pixels = np.rint(blocks).astype(np.uint8).reshape(len(pixels), -1)
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
    missing: str = "impute",
    infinite: str = "raise",
) -> Splits:
    """Load ``"sim"`` (or the first version, ``"sim-v1"``), a named dataset (see ``DATASETS``) or a CSV/Parquet file as 70/10/20 `Splits`.

    ``max_rows`` takes a seeded, stratified subsample before splitting; None means the dataset's default
    (covertype: 10,000 rows as in the paper; everything else: all rows). ``download=True`` fetches a
    missing named dataset from its original source; otherwise a missing file raises
    DatasetNotFoundError. For a file, ``label`` is required; ``Splits.name`` is then the file stem.
    ``missing`` / ``infinite``: see `TabularPreprocessor`. The whole table is validated before it is
    subsampled or split, so the rows that error messages name are the file's (0-based, header excluded).
    """
    drop: tuple[str, ...] = ()
    ambiguity = None
    key = str(name_or_path)
    if key in SIM_VERSIONS:
        name, df, label, ambiguity = key, make_sim_version(key, seed=GENERATION_SEED), label or "label", "u"
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

    preprocessor = TabularPreprocessor(
        label, numerical, categorical, ambiguity_column=ambiguity, drop=drop, missing=missing, infinite=infinite
    )
    preprocessor.validate(df)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be a positive number of rows, got {max_rows}")
    try:
        if max_rows is not None and max_rows < len(df):
            keep, _ = train_test_split(
                np.arange(len(df)), train_size=max_rows, stratify=df[label].to_numpy(), random_state=seed
            )
            df = df.iloc[np.sort(keep)].reset_index(drop=True)
        train, val, test = stratified_split(df[label].to_numpy(), seed)
    except ValueError as err:  # sklearn's stratification errors do not say which class or what to do
        counts = df[label].value_counts()
        raise ValueError(
            f"cannot make a stratified 70/10/20 split of {len(df)} rows by label {label!r}: its rarest class "
            f"{counts.index[-1]!r} has {int(counts.iloc[-1])} row(s) among {len(counts)} classes ({err}); "
            "use more rows (--max-rows), or merge or drop rare classes"
        ) from err
    preprocessor.fit(df.iloc[train])
    return Splits(*(preprocessor.transform(df.iloc[i]) for i in (train, val, test)), name=name)
