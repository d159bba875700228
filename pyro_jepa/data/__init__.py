"""Tabular data: the packed container, SIM/corrupted-MNIST generators, loaders and the dataset registry.

The container and the masks load at once; the file readers, the registry and the generators (which
need pandas) load on first use, so `import pyro_jepa.models` does not import pandas.
"""

import importlib

from .masks import MaskCollator
from .tabular import Splits, TabularData, TabularSchema, split_packed

_LAZY = {
    "NO_LABEL": "loaders", "ExtraColumnsWarning": "loaders", "TabularPreprocessor": "loaders",
    "UnseenCategoriesWarning": "loaders", "infer_feature_types": "loaders", "iter_table": "loaders",
    "load_dataset": "loaders", "read_table": "loaders", "stratified_split": "loaders",
    "DATASETS": "registry", "DatasetNotFoundError": "registry", "DatasetSpec": "registry", "download": "registry",
    "resolve_data_dir": "registry",
    "corrupt_mnist": "sim", "make_sim": "sim", "make_sim_v1": "sim", "make_sim_version": "sim",
    "SIM_V1": "sim", "SIM_V2": "sim", "SIM_V3": "sim", "SIM_VERSIONS": "sim", "SimConstants": "sim",
}  # fmt: skip

__all__ = ["MaskCollator", "Splits", "TabularData", "TabularSchema", "split_packed", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
