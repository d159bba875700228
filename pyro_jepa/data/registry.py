"""Named real datasets: where their files live, how to read them, and where they originally come from.

Files are looked up under a data directory (see `resolve_data_dir`) as ``<data_dir>/<name>/<file>``,
``<data_dir>/<alias>/<file>`` or ``<data_dir>/<file>``. Nothing is ever downloaded implicitly; `download`
fetches the original public file and converts it to our format when called explicitly.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .sim import SIM_VERSIONS

ENV_VAR = "PYRO_JEPA_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset's file is not in the data directory (and could not be downloaded)."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, read and type one named dataset.

    Attributes:
        name: registry key.
        file: file name of our copy.
        label: label column.
        numerical / categorical: explicit feature types; None leaves the rest to type inference.
        drop: columns removed before preprocessing (not features).
        ambiguity: column with ground-truth ambiguity, carried into ``TabularData.ambiguity``.
        default_rows: stratified subsample size used unless the caller asks otherwise.
        sha256: checksum of our copy (see the PROVENANCE.md next to it).
        url: original public source, or None when there is no single-file source.
        aliases: other folder names the file may sit in.
        na_values: extra missing-value markers for reading.
        convert: turns the downloaded bytes into our table (written as our copies were).
        image_pool: images (MNIST) are average-pooled over blocks of ``image_pool`` x ``image_pool``
            pixels and then corrupted: a smaller stand-in for CPUs with the same u. (Pooling after the
            corruption would average the noise away, making corrupted images smoother, not noisier.)
    """

    name: str
    file: str
    label: str
    numerical: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    ambiguity: str | None = None
    default_rows: int | None = None
    sha256: str = ""
    url: str | None = None
    aliases: tuple[str, ...] = ()
    na_values: tuple[str, ...] = ()
    convert: Callable[[bytes], pd.DataFrame] | None = None
    image_pool: int = 1


ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
)  # fmt: skip


def _convert_adult(raw: bytes) -> pd.DataFrame:
    """UCI adult.zip (adult.data + adult.test) -> our adult.csv.gz (see its PROVENANCE.md)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        parts = []
        for member, split, skip in (("adult.data", "train", 0), ("adult.test", "test", 1)):
            df = pd.read_csv(
                zf.open(member), header=None, names=list(ADULT_COLUMNS), skipinitialspace=True, skiprows=skip
            )
            df["income"] = df["income"].str.rstrip(".")
            df["split"] = split
            parts.append(df)
    return pd.concat(parts, ignore_index=True)


COVERTYPE_NUMERICAL = (
    "Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology", "Vertical_Distance_To_Hydrology",
    "Horizontal_Distance_To_Roadways", "Hillshade_9am", "Hillshade_Noon", "Hillshade_3pm",
    "Horizontal_Distance_To_Fire_Points",
)  # fmt: skip
# The paper treats all 54 covertype columns as numerical (Table 6: 54/0), one-hot groups included.
COVERTYPE_FEATURES = (
    COVERTYPE_NUMERICAL
    + tuple(f"Wilderness_Area{i}" for i in range(1, 5))
    + tuple(f"Soil_Type{i}" for i in range(1, 41))
)


def _convert_covertype(raw: bytes) -> pd.DataFrame:
    """UCI covertype.zip (covtype.data.gz) -> our covertype.csv.gz with column names."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        member = next(n for n in zf.namelist() if n.endswith("covtype.data.gz"))
        df = pd.read_csv(io.BytesIO(zf.read(member)), compression="gzip", header=None)
    df.columns = [*COVERTYPE_FEATURES, "Cover_Type"]
    return df


def _convert_electricity(raw: bytes) -> pd.DataFrame:
    """OpenML electricity CSV export -> our electricity.csv.gz (quotes stripped from nominal values)."""
    df = pd.read_csv(io.BytesIO(raw), quotechar="'")
    df.columns = [c.strip().strip("'\"") for c in df.columns]
    df["class"] = df["class"].astype(str).str.strip().str.strip("'\"")
    df["day"] = pd.to_numeric(df["day"].astype(str).str.strip().str.strip("'\""))
    return df


DATASETS: dict[str, DatasetSpec] = {
    "adult": DatasetSpec(
        name="adult",
        file="adult.csv.gz",
        label="income",
        # education-num has only 16 values; the paper counts it as numerical (6 num / 8 cat).
        numerical=("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"),
        categorical=(
            "workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
            "native-country",
        ),  # fmt: skip
        drop=("split",),
        na_values=("?",),
        sha256="9653a39fc84ab1a35bd443daad61a6c7294ef9eac5b7b14601e36937915e3836",
        url="https://archive.ics.uci.edu/static/public/2/adult.zip",
        convert=_convert_adult,
    ),
    "covertype": DatasetSpec(
        name="covertype",
        file="covertype.csv.gz",
        label="Cover_Type",
        numerical=COVERTYPE_FEATURES,
        default_rows=10_000,
        sha256="d7338392d9639e84449417982940ad19ab13a8eb7b11494f49421d56eca0bd37",
        url="https://archive.ics.uci.edu/static/public/31/covertype.zip",
        convert=_convert_covertype,
    ),
    "electricity": DatasetSpec(
        name="electricity",
        file="electricity.csv.gz",
        label="class",
        numerical=("date", "period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"),
        categorical=("day",),
        sha256="e6cae4f8fbf54358df1beecef25737b732e53407b9563c7f77e9ef217fcc76a2",
        url="https://www.openml.org/data/get_csv/2419/electricity.arff",
        convert=_convert_electricity,
    ),
    "mnist": DatasetSpec(
        name="mnist",
        file="mnist_10k.npz",
        label="label",
        numerical=tuple(f"p{i}" for i in range(784)),
        ambiguity="u",
        sha256="0f3015ff0f881cf8c186e31bfa84671751e1d0a0c53e7a56a4ea8f7cc12b59d1",
        aliases=("mnist-10k",),
    ),
    # 4x4-pooled 7x7 images (49 features): a transformer over 784 pixel tokens is too slow for a
    # CPU (attention cost grows with the square of the token count).
    "mnist-7x7": DatasetSpec(
        name="mnist-7x7",
        file="mnist_10k.npz",
        label="label",
        numerical=tuple(f"p{i}" for i in range(49)),
        ambiguity="u",
        sha256="0f3015ff0f881cf8c186e31bfa84671751e1d0a0c53e7a56a4ea8f7cc12b59d1",
        aliases=("mnist", "mnist-10k"),
        image_pool=4,
    ),
}

MNIST_CORRUPTION_LAMBDA = 0.75


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; ValueError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} (or {', '.join(map(repr, SIM_VERSIONS))}, or a file path)") from None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Data root: the argument, else ``$PYRO_JEPA_DATA``, else ``$XDG_CACHE_HOME/pyro_jepa`` (``~/.cache``)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "pyro_jepa"


def _candidates(spec: DatasetSpec, root: Path) -> list[Path]:
    return [root / folder / spec.file for folder in (spec.name, *spec.aliases)] + [root / spec.file]


def _missing_message(spec: DatasetSpec, root: Path, reason: str = "") -> str:
    where = "\n".join(f"  {p}" for p in _candidates(spec, root))
    if spec.url is None:
        source = f"There is no single-file public source in our format; place our copy of {spec.file} there."
    else:
        source = (
            f"Original source: {spec.url} (convert it to our format with "
            f"pyro_jepa.data.download({spec.name!r}, data_dir), or place our copy of {spec.file} there)."
        )
    return (
        f"dataset {spec.name!r} not found{reason}. Put {spec.file} at one of:\n{where}\n{source}\n"
        f"Choose another data folder with --data-dir or the {ENV_VAR} environment variable "
        f"(searched: {root})."
    )


def find_dataset_file(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of a named dataset's file; DatasetNotFoundError saying where to put it when absent."""
    spec = get_spec(name)
    root = resolve_data_dir(data_dir)
    for path in _candidates(spec, root):
        if path.is_file():
            return path
    raise DatasetNotFoundError(_missing_message(spec, root))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, data_dir: str | os.PathLike[str] | None = None, timeout: float = 20.0) -> Path:
    """Fetch a named dataset from its original source into ``<data_dir>/<name>/<file>``.

    The original files are not in our format, so they are converted the way our copies were made; the
    result is compared with our checksum and a mismatch only warns (the source may have changed bytes
    without changing content, e.g. float formatting).
    Any network failure raises DatasetNotFoundError saying where to place the file by hand.
    """
    spec = get_spec(name)
    root = resolve_data_dir(data_dir)
    if spec.url is None or spec.convert is None:
        raise DatasetNotFoundError(_missing_message(spec, root, " and it cannot be downloaded"))
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DatasetNotFoundError(_missing_message(spec, root, f" and downloading {spec.url} failed ({err})")) from err
    target = root / spec.name / spec.file
    target.parent.mkdir(parents=True, exist_ok=True)
    table = spec.convert(raw)
    # Written exactly as our copies were (pandas, gzip level 9, mtime 0), so the checksum can match.
    table.to_csv(target, index=False, compression={"method": "gzip", "compresslevel": 9, "mtime": 0})
    got = sha256_file(target)
    if got != spec.sha256:
        warnings.warn(
            f"{target}: sha256 {got} differs from our copy ({spec.sha256}); the content may still be equal",
            stacklevel=2,
        )
    return target
