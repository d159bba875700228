"""From files (or the SIM generator) to preprocessed `Splits`.

Preprocessing statistics (medians, means, standard deviations, category and class lists) come from the
training split only, so validation and test rows never leak into them.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
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
# Text that means "missing" in a numerical column (pandas' default markers). In a text column these
# strings are ordinary categories ("NA" may mean North America): only an empty cell is missing there.
NA_MARKERS = frozenset({
    "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL",
    "NaN", "None", "n/a", "nan", "null",
})
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A numerical column with a distinct whole number in every row (and at least this many rows) looks like
# a row identifier: warn, since it carries no information about new rows.
MIN_ROWS_FOR_ID_WARNING = 20
UNSUPPORTED_CELLS = (list, tuple, dict, set, np.ndarray, bytes, bytearray)
ID_NAME = re.compile(r"(^|[^a-z])id($|[^a-z])|id$|ID", re.IGNORECASE)
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
# The class id of rows transformed without their label (new data, or a preprocessor fitted without one).
NO_LABEL = -1
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
        elif ptypes.is_bool_dtype(col):
            is_num = False
        elif not ptypes.is_numeric_dtype(col):
            is_num = _numbers_with_na_markers(col)
        elif ptypes.is_float_dtype(col):
            is_num = True
        else:
            is_num = col.nunique(dropna=True) > MAX_CATEGORICAL_INT_VALUES
        (num_out if is_num else cat_out).append(name)
    return num_out, cat_out


def _read_csv(path: Path, na_values: Sequence[str], read_kwargs: dict) -> tuple[pd.DataFrame, list[str]]:
    """A CSV with no implicit index column, exact floats, and only empty cells (plus ``na_values``) missing.

    Returns the frame and the raw header (before pandas renames duplicates ``a, a`` to ``a, a.1``).
    A data row with more fields than the header is an error, except for one empty trailing field on
    rows ending in a delimiter (``1,2,x,pos,``), which is ignored.
    """
    sep = _separator(read_kwargs)
    raw = _raw_header(path, sep)
    with _wide_rows_checked(path, len(raw), sep):
        df = pd.read_csv(path, index_col=False, **_csv_kwargs(na_values, read_kwargs))
    return df, [c for c in raw if c != ""]  # blank names become "Unnamed: i", never duplicates


def _separator(read_kwargs: dict) -> str:
    return read_kwargs.get("sep", read_kwargs.get("delimiter", ","))


def _csv_kwargs(na_values: Sequence[str], read_kwargs: dict) -> dict:
    """pandas.read_csv keywords of the CSV rules: only empty cells (and ``na_values``) missing, exact floats."""
    exact = {"float_precision": "round_trip"} if PANDAS_2 else {}  # pandas 3 parses exactly by default, and deprecates the flag
    return {"keep_default_na": False, "na_values": ["", *na_values], **exact, **read_kwargs}


def _raw_header(path: Path, sep: str) -> list[str]:
    """The header line's names as written (pandas would rename a duplicate ``a`` to ``a.1``)."""
    return pd.read_csv(path, header=None, nrows=1, dtype=str, sep=sep, keep_default_na=False).iloc[0].tolist()


@contextlib.contextmanager
def _wide_rows_checked(path: Path, n_header: int, sep: str) -> Iterator[None]:
    """Around a pandas read: if pandas warned that rows are wider than the header, `_check_extra_fields`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        yield
    if any("Length of header or names does not match" in str(w.message) for w in caught):
        _check_extra_fields(path, n_header, sep)


class ExtraColumnsWarning(UserWarning):
    """New data holds columns the preprocessor was not fitted on (they are ignored)."""


class UnseenCategoriesWarning(UserWarning):
    """New data holds categories the preprocessor was not fitted on (they are encoded as unknown)."""


class MalformedTableError(ValueError):
    """A file the reader could parse, but whose rows do not fit its header."""


PANDAS_2 = int(pd.__version__.split(".")[0]) < 3
# What pandas and pyarrow raise for files they cannot parse (turned into one ValueError naming the file).
READ_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError, ValueError)


def _check_extra_fields(path: Path, n_header: int, sep: str) -> None:
    """Raise ValueError naming the first data row with more fields than the header, unless the extra
    fields are all empty (a trailing delimiter)."""
    extra = pd.read_csv(path, header=None, skiprows=1, dtype=str, sep=sep, keep_default_na=False,
                        names=range(n_header + 1), index_col=False, usecols=[n_header])[n_header]
    filled = (extra != "").to_numpy()
    if filled.any():
        row = int(np.argmax(filled))
        raise MalformedTableError(_wide_row_message(path, row, n_header, sep, f" (it holds {extra.iloc[row]!r} past the last column)"))


def _wide_row_message(path: Path, row: int, n_header: int, sep: str, detail: str = "") -> str:
    return (
        f"{path}: data row {row} (line {row + 2}) has more fields than the header's {n_header} columns{detail}; fix the "
        f"header or the row, or quote fields that contain {sep!r}"
    )


def _is_na_marker(col: pd.Series) -> np.ndarray:
    """Cells holding one of `NA_MARKERS` (text meaning "missing" in a numerical column)."""
    if ptypes.is_numeric_dtype(col) or ptypes.is_bool_dtype(col):
        return np.zeros(len(col), dtype=bool)
    return col.isin(NA_MARKERS).to_numpy()


def _numbers_with_na_markers(col: pd.Series) -> bool:
    """A text column whose cells are numbers or NA markers (at least one of each): numerical."""
    markers = _is_na_marker(col)
    numbers = pd.to_numeric(col.where(~markers), errors="coerce").notna().to_numpy()
    present = col.notna().to_numpy()
    return bool(markers.any() and numbers.any() and (numbers | markers)[present].all())


def resolve_names(df: pd.DataFrame, names: Sequence[str] | None, what: str) -> list[str] | None:
    """Match user-given column names to ``df``'s: exactly, else without surrounding spaces.

    So ``--numerical "age, income"`` finds ``income``, and a column really named ``" income"`` is
    still found when given exactly. Unknown names raise ValueError listing the available columns.
    """
    if names is None:
        return None
    columns = [str(c) for c in df.columns]
    resolved = []
    for name in names:
        if name in columns:
            resolved.append(name)
            continue
        stripped = [c for c in columns if c.strip() == name.strip()]
        if len(stripped) != 1:
            raise ValueError(f"{what} column {name!r} not in the table; available: {columns}")
        resolved.append(stripped[0])
    return resolved


def read_table(path: str | os.PathLike[str], na_values: Sequence[str] = (), **read_kwargs) -> pd.DataFrame:
    """Read a ``.csv``, ``.csv.gz`` or ``.parquet`` file; extra keywords go to the pandas reader.

    CSV rules: the first line is the header; there is never an index column; floats are read back
    exactly; an empty cell, or one equal to an entry of ``na_values``, is missing, while text such as
    ``NA`` or ``null`` stays text (in a numerical column it counts as missing, see
    `TabularPreprocessor`). Rows are numbered from 0 (the first line after the header) in messages.

    Raises ValueError (never a parser traceback) for an empty file, a header without rows, a file the
    reader cannot parse, data rows wider than the header, and duplicate column names (which pandas
    would silently rename to ``a.1``).
    """
    path, is_parquet = _check_table_file(path)
    try:
        if is_parquet:
            df = pd.read_parquet(path, **read_kwargs)
            header = [str(c) for c in df.columns]
        else:
            df, header = _read_csv(path, na_values, read_kwargs)
    except MalformedTableError:
        raise
    except READ_ERRORS as err:
        raise _read_error(path, is_parquet, _separator(read_kwargs), err) from err
    _check_header(path, header)
    if len(df) == 0:
        raise ValueError(f"{path} has a header but no rows")
    return df


def _check_table_file(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """An existing, non-empty .csv, .csv.gz or .parquet file (ValueError otherwise); returns it and whether it is Parquet."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the CSV or Parquet file inside it")
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise ValueError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected a header line and at least one row")
    return path, name.endswith(".parquet")


def _read_error(path: Path, is_parquet: bool, sep: str, err: Exception) -> ValueError:
    """A reader's exception as one ValueError that names the file (and the wide row, if that was the cause)."""
    if isinstance(err, pd.errors.ParserError):
        wide = re.search(r"Expected (\d+) fields in line (\d+), saw \d+", str(err))
        if wide and not is_parquet:
            return ValueError(_wide_row_message(path, int(wide.group(2)) - 2, int(wide.group(1)), sep))
    if isinstance(err, pd.errors.EmptyDataError):
        return ValueError(f"{path} has no columns (only blank lines?); expected a header line and rows")
    kind = "Parquet" if is_parquet else "CSV"
    return ValueError(f"{path} could not be read as {kind} ({type(err).__name__}: {err}); is the file complete?")


def _check_header(path: Path, header: Sequence[str]) -> None:
    duplicates = sorted({str(c) for c in header if header.count(c) > 1})
    if duplicates:
        raise ValueError(f"{path} has duplicate column name(s) {duplicates}; rename them so every column is unique")


def iter_table(
    path: str | os.PathLike[str],
    chunk_rows: int = 10_000,
    na_values: Sequence[str] = (),
    text_columns: Sequence[str] = (),
) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """Read a ``.csv``, ``.csv.gz`` or ``.parquet`` file in chunks of ``chunk_rows`` rows, under `read_table`'s rules.

    Returns the column names, the number of rows when the file says so cheaply (Parquet, else None)
    and an iterator of frames whose index is the 0-based file row. ``text_columns`` are read as text in
    every chunk (a column of digits in one chunk would otherwise become numbers there). Memory stays
    at one chunk whatever the file's length. Errors are ValueErrors naming the file (and row), raised
    before the first chunk for the header and while iterating for the rows.
    """
    path, is_parquet = _check_table_file(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    try:
        if is_parquet:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            header = columns = list(parquet.schema_arrow.names)
            total = parquet.metadata.num_rows
            chunks = _parquet_chunks(path, parquet, chunk_rows)
        else:
            raw = _raw_header(path, ",")
            header, total = [c for c in raw if c != ""], None
            columns = list(pd.read_csv(path, nrows=0, index_col=False).columns)
            chunks = _csv_chunks(path, len(raw), chunk_rows, _csv_kwargs(na_values, {"dtype": {c: str for c in text_columns}}))
    except READ_ERRORS as err:
        raise _read_error(path, is_parquet, ",", err) from err
    _check_header(path, header)
    return columns, total, _non_empty(path, chunks)


def _csv_chunks(path: Path, n_header: int, chunk_rows: int, kwargs: dict) -> Iterator[pd.DataFrame]:
    try:
        with pd.read_csv(path, index_col=False, chunksize=chunk_rows, **kwargs) as reader:
            while True:
                with _wide_rows_checked(path, n_header, ","):
                    chunk = next(reader, None)
                if chunk is None:
                    return
                yield chunk
    except MalformedTableError:
        raise
    except READ_ERRORS as err:
        raise _read_error(path, False, ",", err) from err


def _parquet_chunks(path: Path, parquet, chunk_rows: int) -> Iterator[pd.DataFrame]:
    start = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            chunk = batch.to_pandas()
            chunk.index = pd.RangeIndex(start, start + len(chunk))
            start += len(chunk)
            yield chunk
    except READ_ERRORS as err:
        raise _read_error(path, True, ",", err) from err


def _non_empty(path: Path, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The chunks, or a ValueError when the file holds no rows."""
    rows = 0
    for chunk in chunks:
        rows += len(chunk)
        if len(chunk):
            yield chunk
    if rows == 0:
        raise ValueError(f"{path} has a header but no rows")


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


def _check_scalar_cells(df: pd.DataFrame, exclude: Sequence[str] = ()) -> None:
    """Raise ValueError naming the first column whose cells are lists, arrays, structs or bytes
    (e.g. a Parquet list column): only numbers and text are supported."""
    for name in df.columns:
        col = df[name]
        if name in exclude or ptypes.is_numeric_dtype(col) or ptypes.is_bool_dtype(col) or ptypes.is_string_dtype(col) and not ptypes.is_object_dtype(col):
            continue
        odd = col.map(lambda v: isinstance(v, UNSUPPORTED_CELLS)).to_numpy(dtype=bool)
        if odd.any():
            row, n = _row(df, odd)
            kind = type(col.loc[row]).__name__
            raise ValueError(
                f"column {name!r} holds {kind} values ({n} cell(s), first at row {_shown(row)}); only numbers and text "
                f"are supported: expand it into separate columns, or drop it (--drop {name}, or drop=[{name!r}])"
            )


class TabularPreprocessor:
    """Turns data frames into `TabularData` with statistics fitted on the training frame.

    Numerical: NaN -> train median, then ``(x - mean) / std`` with train statistics (std 0 -> 1).
    With ``missing="impute"`` (default) every numerical column that has missing values in the
    training frame also gets a 0/1 numerical indicator feature ``<name>__missing`` (after the
    numerical columns); ``missing="raise"`` refuses any missing feature value instead.
    ``infinite="raise"`` (default) refuses ±inf; ``infinite="missing"`` treats it as missing.
    Categorical: train categories in sorted order get codes 1..k; missing or unseen values get 0.
    Label: sorted train classes get ids 0..C-1; a label not seen in training is an error.
    ``label=None`` fits without a label (self-supervised use, e.g. `pyro_jepa.sklearn`): no label
    checks, ``schema.classes == ()`` and every row gets the class id `NO_LABEL`.

    Validation (`validate`, run by `fit`; every message names the column, the first offending row
    by index label, and what to do): duplicate column names, a missing or single-class label,
    non-numeric text in a numerical column, ±inf, extreme cardinality of an inferred categorical
    column (an error), and at fit time constant or all-missing columns (dropped with a warning
    when their type was inferred; kept when declared through ``numerical``/``categorical``,
    except an all-missing declared column, which is an error).
    """

    def __init__(
        self,
        label: str | None,
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
        """Raise ValueError if ``df`` lacks the label column or has missing labels (nothing to check without a label)."""
        if self.label is None:
            return
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
        _check_scalar_cells(df, exclude=self.drop)
        exclude = self._excluded()
        _check_columns(df, exclude, "ambiguity")
        if self.label is not None:
            self._check_label_values(df)
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

    def _check_label_values(self, df: pd.DataFrame) -> None:
        """A classification label: at least two classes, not a continuous float column."""
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
        markers = _is_na_marker(col)
        values = pd.to_numeric(col.astype(float) if ptypes.is_bool_dtype(col) else col.where(~markers), errors="coerce")
        text = (values.isna() & col.notna()).to_numpy() & ~markers
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
        huge = np.abs(np.nan_to_num(x)) > FLOAT32_MAX
        if huge.any():  # whichever split it lands in: the models compute in float32
            row, n = _row(df, huge)
            raise ValueError(
                f"numerical column {name!r}: row {_shown(row)} holds {_shown(x[np.argmax(huge)])}, too large for float32 "
                f"(|x| > {FLOAT32_MAX:.3g}, the precision the models compute in; {n} such value(s)); check its units, "
                "rescale the column, or clip outliers"
            )
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
        self._warn_identifiers(num, x)
        missing = np.isnan(x)
        self.source_numerical = tuple(num)
        self.indicators = tuple(n for j, n in enumerate(num) if missing[:, j].any()) if self.missing == "impute" else ()
        self.medians = np.nanmedian(x, axis=0) if num else np.zeros(0)
        x = self._with_indicators(np.where(missing, self.medians, x), missing)
        self.means = x.mean(axis=0)
        std = x.std(axis=0)
        self.stds = np.where(std > 0, std, 1.0)

        self.categories = [_sorted_unique(train_df[c]) for c in cat]
        self.label_values = [] if self.label is None else _sorted_unique(train_df[self.label])
        if self.label is not None and len(self.label_values) < 2:
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

    def _warn_identifiers(self, names: Sequence[str], x: np.ndarray) -> None:
        """Warn about inferred numerical columns that look like row identifiers (e.g. ``ID``)."""
        if len(x) < MIN_ROWS_FOR_ID_WARNING:
            return
        for j, name in enumerate(names):
            column = x[:, j]
            if name in self._declared or np.isnan(column).any() or (column != np.round(column)).any():
                continue
            distinct = len(np.unique(column)) == len(column)
            contiguous = column.max() - column.min() + 1 == len(column)
            if distinct and (contiguous or ID_NAME.search(str(name))):
                warnings.warn(
                    f"numerical column {name!r} holds a distinct whole number in every row: a row identifier? It is "
                    f"used as a feature, which only memorizes rows; drop it (--drop {name}, or drop=[{name!r}]) or "
                    f"declare it (--numerical {name}) to silence this warning",
                    UserWarning,
                    stacklevel=3,
                )

    def _with_indicators(self, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Append the 0/1 missing-indicator columns fitted on the training frame."""
        index = [self.source_numerical.index(n) for n in self.indicators]
        return np.concatenate([x, missing[:, index].astype(np.float64)], axis=1)

    def transform(self, df: pd.DataFrame, labels: bool = True) -> TabularData:
        """Encode ``df`` with the fitted statistics.

        ``df`` must hold every feature column the preprocessor was fitted on (a ValueError lists
        those it lacks) and, with ``labels=True``, the label column. With ``labels=False`` the label
        is not read, even when present, and every row gets the class id `NO_LABEL` (new rows to
        embed or predict). Columns unknown at fit time are ignored with an `ExtraColumnsWarning`;
        categories not seen at fit time get code 0, like missing values, with an
        `UnseenCategoriesWarning` counting them per column (`unseen_categories` counts them without
        warning, e.g. to report them once for a file read in chunks).
        """
        if self.schema is None:
            raise RuntimeError("call fit() before transform()")
        schema = self.schema
        check_unique_columns(df)
        if labels:
            self.check_label(df)
        features = [*self.source_numerical, *schema.categorical]
        lacking = [n for n in features if n not in df.columns]
        if lacking:
            raise ValueError(
                f"the frame lacks feature column(s) {lacking} that the preprocessor was fitted on; add them "
                "(empty cells count as missing) or refit on data with the same columns"
            )
        extra = self.extra_columns(df.columns)
        if extra:
            warnings.warn(f"column(s) {extra} were not in the training data and are ignored", ExtraColumnsWarning, stacklevel=2)

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
        codes = self._category_codes(df)
        warn_unseen_categories(self._unseen(df, codes), stacklevel=2)
        c = np.stack(codes, axis=1) if codes else np.zeros((len(df), 0))

        if labels and self.label is not None:
            y = pd.Index(self.label_values).get_indexer(df[self.label]).astype(np.int64)
            if (y < 0).any():
                unseen = _sorted_unique(df[self.label][y < 0])
                raise ValueError(f"label value(s) {unseen} of column {self.label!r} were not seen in the training data")
        else:
            y = np.full(len(df), NO_LABEL, dtype=np.int64)

        ambiguity = None
        if self.ambiguity_column is not None and self.ambiguity_column in df.columns:  # known for simulated data only
            ambiguity = torch.tensor(df[self.ambiguity_column].to_numpy(dtype=np.float32))
        rows = torch.as_tensor(np.concatenate([x, c], axis=1), dtype=torch.float32)
        return TabularData(rows, torch.as_tensor(y), schema, ambiguity)

    def _category_codes(self, df: pd.DataFrame) -> list[np.ndarray]:
        """Codes 1..k of the training categories per categorical column; unseen or missing: 0."""
        return [
            pd.Index(cats).get_indexer(df[name]).astype(np.int64) + 1  # unseen/missing: -1 -> 0
            for name, cats in zip(self.schema.categorical, self.categories)
        ]

    def _unseen(self, df: pd.DataFrame, codes: list[np.ndarray]) -> dict[str, int]:
        counts = {name: int(((code == 0) & df[name].notna().to_numpy()).sum()) for name, code in zip(self.schema.categorical, codes)}
        return {name: n for name, n in counts.items() if n}

    @property
    def text_columns(self) -> list[str]:
        """Categorical columns whose training categories are all text (read them as text in every chunk of a file)."""
        return [name for name, cats in zip(self.schema.categorical, self.categories) if cats and all(isinstance(c, str) for c in cats)]

    def unseen_categories(self, df: pd.DataFrame) -> dict[str, int]:
        """Per categorical column, how many (non-missing) values of ``df`` were not seen at fit time."""
        return self._unseen(df, self._category_codes(df))

    def extra_columns(self, columns: Sequence) -> list:
        """The columns of ``columns`` the preprocessor does not know (not a feature, label, excluded or dropped column)."""
        known = {*self.source_numerical, *self.schema.categorical, self.label, *self._excluded(), *self.dropped}
        return [c for c in columns if c not in known]

    def fit_transform(self, train_df: pd.DataFrame) -> TabularData:
        return self.fit(train_df).transform(train_df)

    def to_dict(self) -> dict:
        """The fitted preprocessor as plain JSON values (`from_dict` restores it exactly).

        Statistics are float64 and survive JSON unchanged; category and class values keep their
        type (text, integer, float or boolean). Raises ValueError for values of other types.
        """
        if self.schema is None:
            raise RuntimeError("call fit() before to_dict()")
        return {
            "format": PREPROCESSOR_FORMAT,
            "label": self.label,
            "numerical_override": _listed(self.numerical_override),
            "categorical_override": _listed(self.categorical_override),
            "ambiguity_column": self.ambiguity_column,
            "drop": list(self.drop),
            "missing": self.missing,
            "infinite": self.infinite,
            "dropped": list(self.dropped),
            "source_numerical": list(self.source_numerical),
            "indicators": list(self.indicators),
            "medians": _floats(self.medians),
            "means": _floats(self.means),
            "stds": _floats(self.stds),
            "categorical": list(self.schema.categorical),
            "categories": [_json_values(values, f"column {name!r}") for name, values in zip(self.schema.categorical, self.categories)],
            "label_values": _json_values(self.label_values, f"label column {self.label!r}"),
        }

    @classmethod
    def from_dict(cls, state: dict) -> TabularPreprocessor:
        """A fitted preprocessor from `to_dict`'s output; ValueError names what is missing or inconsistent."""
        if not isinstance(state, dict) or state.get("format") != PREPROCESSOR_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a saved preprocessor of format {PREPROCESSOR_FORMAT!r} (found {found!r})")
        try:
            pre = cls(state["label"], state["numerical_override"], state["categorical_override"], state["ambiguity_column"],
                      state["drop"], state["missing"], state["infinite"])
            pre.dropped = tuple(state["dropped"])
            pre.source_numerical = tuple(state["source_numerical"])
            pre.indicators = tuple(state["indicators"])
            pre.medians, pre.means, pre.stds = (np.asarray(state[k], dtype=np.float64) for k in ("medians", "means", "stds"))
            categorical = tuple(state["categorical"])
            pre.categories = [list(values) for values in state["categories"]]
            pre.label_values = list(state["label_values"])
        except KeyError as err:
            raise ValueError(f"saved preprocessor lacks the entry {err}") from err
        except (TypeError, ValueError) as err:
            raise ValueError(f"saved preprocessor has a malformed entry ({err})") from err
        numerical = (*pre.source_numerical, *(n + INDICATOR_SUFFIX for n in pre.indicators))
        problems = []
        if len(pre.medians) != len(pre.source_numerical):
            problems.append(f"{len(pre.medians)} medians for {len(pre.source_numerical)} numerical columns")
        if not len(pre.means) == len(pre.stds) == len(numerical):
            problems.append(f"{len(pre.means)} means and {len(pre.stds)} stds for {len(numerical)} numerical features")
        if not all(np.isfinite(v).all() for v in (pre.medians, pre.means, pre.stds)):
            problems.append("non-finite statistics")
        if (pre.stds <= 0).any():
            problems.append("standard deviations <= 0")
        if len(pre.categories) != len(categorical):
            problems.append(f"{len(pre.categories)} category lists for {len(categorical)} categorical columns")
        unknown = [n for n in pre.indicators if n not in pre.source_numerical]
        if unknown:
            problems.append(f"missing-value indicators {unknown} of columns that are not numerical")
        if problems:
            raise ValueError("saved preprocessor is inconsistent: " + "; ".join(problems))
        pre.schema = TabularSchema(
            numerical=numerical,
            categorical=categorical,
            cardinalities=tuple(len(c) + 1 for c in pre.categories),
            label=pre.label,
            classes=tuple(str(v) for v in pre.label_values),
        )
        return pre


PREPROCESSOR_FORMAT = "pyro_jepa-preprocessor-v1"
JSON_SCALARS = (str, int, float, bool)


def _listed(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else list(names)


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


def _json_values(values: Sequence, what: str) -> list:
    """Category or class values as JSON scalars (numpy scalars become Python ones); others are refused."""
    out = [v.item() if isinstance(v, np.generic) else v for v in values]
    odd = [v for v in out if not isinstance(v, JSON_SCALARS)]
    if odd:
        raise ValueError(
            f"{what} holds values of type {type(odd[0]).__name__} ({odd[0]!r}), which cannot be saved as JSON; "
            "convert the column to text or numbers before training"
        )
    return out


def unseen_categories_message(counts: dict[str, int]) -> str:
    """What `warn_unseen_categories` says about ``counts`` (column -> number of unseen values)."""
    listed = ", ".join(f"{name!r}: {n}" for name, n in counts.items())
    return f"categories not seen in the training data, encoded as unknown (code 0, like a missing value); values per column: {listed}"


def warn_unseen_categories(counts: dict[str, int], stacklevel: int = 1) -> None:
    """One `UnseenCategoriesWarning` counting, per categorical column, the values not seen in the training
    data (none if ``counts`` is empty); ``stacklevel`` as for ``warnings.warn``, counted from the caller."""
    if counts:
        warnings.warn(unseen_categories_message(counts), UnseenCategoriesWarning, stacklevel=stacklevel + 1)


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


def _read_named(spec: DatasetSpec, path: Path, na_values: Sequence[str] = ()) -> pd.DataFrame:
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
    return read_table(path, na_values=(*spec.na_values, *na_values))


def _class_counts(labels: pd.Series) -> str:
    counts = labels.value_counts()
    return f"its rarest class {counts.index[-1]!r} has {int(counts.iloc[-1])} row(s) among {len(counts)} classes"


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
    drop: Sequence[str] = (),
    na_values: Sequence[str] = (),
    generator_seed: int | None = None,
) -> Splits:
    """Load ``"sim"`` (or an earlier version, ``"sim-v2"``/``"sim-v1"``), a named dataset (see ``DATASETS``) or a CSV/Parquet file as 70/10/20 `Splits`.

    ``max_rows`` takes a seeded, stratified subsample before splitting; None means the dataset's default
    (covertype: 10,000 rows as in the paper; everything else: all rows). ``download=True`` fetches a
    missing named dataset from its original source; otherwise a missing file raises
    DatasetNotFoundError. For a file, ``label`` is required; ``Splits.name`` is then the file stem.
    ``missing`` / ``infinite``: see `TabularPreprocessor`; ``drop``: columns that are not features (e.g.
    an ID); ``na_values``: extra cell texts that mean "missing" in every column (see `read_table`).
    ``generator_seed`` (SIM only) draws another table of the same description; the default,
    ``GENERATION_SEED``, is the library's table.
    Column names are matched exactly, else without surrounding spaces (`resolve_names`). The whole table
    is validated before it is subsampled or split, so the rows that error messages name are the file's
    (0-based, header excluded).
    """
    drop = tuple(drop)
    ambiguity = None
    key = str(name_or_path)
    if generator_seed is not None and key not in SIM_VERSIONS:
        raise ValueError(f"generator_seed applies to the generated SIM tables {sorted(SIM_VERSIONS)} only, not to {key!r}")
    if key in SIM_VERSIONS:
        table = make_sim_version(key, seed=GENERATION_SEED if generator_seed is None else generator_seed)
        name, df, label, ambiguity = key, table, label or "label", "u"
    elif key in DATASETS:
        spec = DATASETS[key]
        try:
            path = find_dataset_file(key, data_dir)
        except FileNotFoundError:
            if not download:
                raise
            path = download_dataset(key, data_dir)
        name, df, drop, ambiguity = key, _read_named(spec, path, na_values), (*spec.drop, *drop), spec.ambiguity
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
        df = read_table(path, na_values=na_values)
        name = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    numerical, categorical = resolve_names(df, numerical, "numerical"), resolve_names(df, categorical, "categorical")
    drop = tuple(resolve_names(df, drop, "drop"))

    preprocessor = TabularPreprocessor(
        label, numerical, categorical, ambiguity_column=ambiguity, drop=drop, missing=missing, infinite=infinite
    )
    preprocessor.validate(df)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be a positive number of rows, got {max_rows}")
    # sklearn's stratification errors do not say which class or what to do.
    if max_rows is not None and max_rows < len(df):
        try:
            keep, _ = train_test_split(
                np.arange(len(df)), train_size=max_rows, stratify=df[label].to_numpy(), random_state=seed
            )
        except ValueError as err:
            raise ValueError(
                f"cannot take a stratified subsample of {max_rows} of the {len(df)} rows by label {label!r} "
                f"({_class_counts(df[label])}; {err}); use more rows (--max-rows), or merge or drop rare classes"
            ) from err
        file_rows = np.sort(keep)
        df = df.iloc[file_rows].reset_index(drop=True)
    else:
        file_rows = np.arange(len(df))
    try:
        train, val, test = stratified_split(df[label].to_numpy(), seed)
    except ValueError as err:
        counts = df[label].value_counts()
        raise ValueError(
            f"cannot make a stratified 70/10/20 split of {len(df)} rows by label {label!r}: its rarest class "
            f"{counts.index[-1]!r} has {int(counts.iloc[-1])} row(s) among {len(counts)} classes ({err}); "
            "use more rows (--max-rows), or merge or drop rare classes"
        ) from err
    preprocessor.fit(df.iloc[train])
    return Splits(
        *(preprocessor.transform(df.iloc[i]) for i in (train, val, test)), name=name, preprocessor=preprocessor,
        source_rows={"train": file_rows[train], "val": file_rows[val], "test": file_rows[test]},
    )
