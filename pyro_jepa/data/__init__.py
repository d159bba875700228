"""Tabular data: the packed container, SIM/corrupted-MNIST generators, loaders and the dataset registry."""

from .loaders import (
    NO_LABEL,
    ExtraColumnsWarning,
    TabularPreprocessor,
    UnseenCategoriesWarning,
    infer_feature_types,
    iter_table,
    load_dataset,
    read_table,
    stratified_split,
)
from .registry import DATASETS, DatasetNotFoundError, DatasetSpec, download, resolve_data_dir
from .sim import corrupt_mnist, make_sim
from .tabular import Splits, TabularData, TabularSchema, split_packed
from .masks import MaskCollator
