"""In-memory tabular data: the one container every tabular model and evaluator reads.

A row is stored *packed*: one float tensor ``(N, D)`` whose first ``D_num`` columns are the
preprocessed numerical features and whose last ``D_cat`` columns are integer category codes
(stored as floats). Packing keeps one tensor per batch on the device; `split_packed` undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .loaders import TabularPreprocessor


@dataclass(frozen=True)
class TabularSchema:
    """Names and types of a table's features.

    Attributes:
        numerical: names of the numerical features, in packed order.
        categorical: names of the categorical features, in packed order (after the numerical ones).
        cardinalities: number of codes per categorical feature; code 0 is reserved for
            "unknown or missing", so a feature with k training categories has cardinality k + 1.
        label: name of the label column.
        classes: class names; class id i is ``classes[i]``.
    """

    numerical: tuple[str, ...]
    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]
    label: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.categorical) != len(self.cardinalities):
            raise ValueError(
                f"{len(self.categorical)} categorical features but {len(self.cardinalities)} cardinalities"
            )
        if any(c < 1 for c in self.cardinalities):
            raise ValueError(f"cardinalities must be >= 1, got {self.cardinalities}")

    @property
    def n_numerical(self) -> int:
        return len(self.numerical)

    @property
    def n_categorical(self) -> int:
        return len(self.categorical)

    @property
    def n_features(self) -> int:
        return self.n_numerical + self.n_categorical

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.numerical + self.categorical

    @property
    def raw_token_sizes(self) -> tuple[int, ...]:
        """Columns of each feature in `TabularData.raw_features`: 1 per numerical, the one-hot width per categorical."""
        return (1,) * self.n_numerical + tuple(self.cardinalities)


def split_packed(rows: torch.Tensor, n_numerical: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split packed rows ``(..., D)`` into numerical values and long category codes."""
    return rows[..., :n_numerical], rows[..., n_numerical:].round().long()


@dataclass
class TabularData:
    """A preprocessed table.

    Attributes:
        rows: packed features ``(N, D)`` float32 (see module docstring).
        y: class ids ``(N,)`` int64.
        schema: feature names and types.
        ambiguity: ground-truth per-row ambiguity ``u`` in [0, 1] where the data is simulated
            (SIM, corrupted MNIST), else None.
    """

    rows: torch.Tensor
    y: torch.Tensor
    schema: TabularSchema
    ambiguity: torch.Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        if self.rows.ndim != 2 or self.rows.shape[1] != self.schema.n_features:
            raise ValueError(
                f"rows must have shape (N, {self.schema.n_features}), got {tuple(self.rows.shape)}"
            )
        if self.y.shape != (self.rows.shape[0],):
            raise ValueError(f"y must have shape ({self.rows.shape[0]},), got {tuple(self.y.shape)}")
        if self.ambiguity is not None and self.ambiguity.shape != self.y.shape:
            raise ValueError("ambiguity must have one value per row")

    def __len__(self) -> int:
        return self.rows.shape[0]

    def subset(self, index: torch.Tensor | np.ndarray) -> TabularData:
        index = torch.as_tensor(index, dtype=torch.long, device=self.rows.device)
        amb = None if self.ambiguity is None else self.ambiguity[index]
        return TabularData(self.rows[index], self.y[index], self.schema, amb)

    def to(self, device: torch.device | str) -> TabularData:
        amb = None if self.ambiguity is None else self.ambiguity.to(device)
        return TabularData(self.rows.to(device), self.y.to(device), self.schema, amb)

    @property
    def x_num(self) -> torch.Tensor:
        return split_packed(self.rows, self.schema.n_numerical)[0]

    @property
    def x_cat(self) -> torch.Tensor:
        return split_packed(self.rows, self.schema.n_numerical)[1]

    def raw_features(self) -> np.ndarray:
        """Features for raw-feature baselines: numerical values, then one-hot categories."""
        blocks = [self.x_num.cpu().numpy()]
        codes = self.x_cat.cpu().numpy()
        for j, card in enumerate(self.schema.cardinalities):
            blocks.append(np.eye(card, dtype=np.float32)[codes[:, j]])
        return np.concatenate(blocks, axis=1).astype(np.float32)


@dataclass
class Splits:
    """Train/validation/test splits of one table, preprocessed with statistics of ``train`` only.

    ``preprocessor`` is the fitted `TabularPreprocessor` that made them (to encode new rows the same
    way); ``source_rows`` maps each split to the 0-based rows of the source table it holds. Both are
    set by `load_dataset` and None for splits built otherwise.
    """

    train: TabularData
    val: TabularData
    test: TabularData
    name: str = "table"
    preprocessor: TabularPreprocessor | None = None
    source_rows: dict[str, np.ndarray] | None = None

    @property
    def schema(self) -> TabularSchema:
        return self.train.schema

    def to(self, device: torch.device | str) -> Splits:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))
