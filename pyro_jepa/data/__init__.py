"""Tabular data: the packed container, SIM/corrupted-MNIST generators, loaders and the dataset registry."""

from .loaders import TabularPreprocessor, infer_feature_types, load_dataset, read_table, stratified_split
from .registry import DATASETS, DatasetNotFoundError, DatasetSpec, download, resolve_data_dir
from .sim import SIM_V1, SIM_V2, SIM_VERSIONS, SimConstants, corrupt_mnist, make_sim, make_sim_v1, make_sim_version
from .tabular import Splits, TabularData, TabularSchema, split_packed
from .masks import MaskCollator
