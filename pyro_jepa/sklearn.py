"""scikit-learn transformers over Var-T-JEPA and T-JEPA: ``fit`` pre-trains, ``transform`` embeds.

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from pyro_jepa.sklearn import VarTJEPAEmbedder

    model = make_pipeline(VarTJEPAEmbedder(epochs=5, random_state=0), LogisticRegression(max_iter=1000))
    model.fit(df, y)                      # df: a DataFrame of raw columns (numbers and text)

``fit(X, y=None)`` is self-supervised: ``y`` is ignored. It fits the same preprocessing as the main
job (`pyro_jepa.data.TabularPreprocessor`, without a label) on ``X``, holds out
``validation_fraction`` of the rows to choose the best epoch by validation loss, and pre-trains with
the preset's settings (`pyro_jepa.presets`), overridden by the parameters given. ``transform(X)``
returns the flattened posterior means (T-JEPA: target-encoder outputs), float32 ``(n, T * d)`` over
the ``T`` tokens (one per feature, fewer with ``group_size > 1``); `get_feature_names_out` names
them ``<token>__<k>``, a token being a feature or ``first..last`` for a group. ``save(path)`` writes a run folder that
``load(path)`` (and `pyro_jepa.load_run`) reads back, without pickle.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from . import io
from .data.loaders import INDICATOR_SUFFIX, TabularPreprocessor
from .data.tabular import Splits
from .pipeline import pretrain
from .presets import make_preset
from .nn import token_names
from .run import SavedRunError, embed_and_score, embedding_names, load_run, save_model
from .train import resolve_device

MIN_FEATURES = 2  # masking hides some features from the others
MIN_TRAIN_ROWS = 2


class _JEPAEmbedder(TransformerMixin, BaseEstimator):
    """Shared by `VarTJEPAEmbedder` and `TJEPAEmbedder`; ``method`` is the `pyro_jepa.pipeline.METHODS` key."""

    method = ""

    def __init__(
        self,
        *,
        preset: str = "cpu",
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        dim: int | None = None,
        depth: int | None = None,
        group_size: int = 1,
        validation_fraction: float = 0.1,
        numerical: list[str] | None = None,
        categorical: list[str] | None = None,
        drop: list[str] | None = None,
        missing: str = "impute",
        uncertainty: str | None = None,
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
        progress: bool = False,
    ) -> None:
        self.preset = preset
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.dim = dim
        self.depth = depth
        self.group_size = group_size
        self.validation_fraction = validation_fraction
        self.numerical = numerical
        self.categorical = categorical
        self.drop = drop
        self.missing = missing
        self.uncertainty = uncertainty
        self.device = device
        self.random_state = random_state
        self.progress = progress

    # -- sklearn API --------------------------------------------------------------------------------

    def fit(self, X, y=None) -> _JEPAEmbedder:
        """Pre-train on the rows of ``X`` (a DataFrame, or an array of numbers); ``y`` is ignored."""
        frame = self._frame(X, reset=True)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        n_val = max(int(round(self.validation_fraction * len(frame))), 1)
        least = MIN_TRAIN_ROWS + n_val
        if len(frame) < least:
            raise ValueError(
                f"Found array with {len(frame)} sample(s) (shape={frame.shape}) while a minimum of {least} is required "
                f"({MIN_TRAIN_ROWS} to train on, {n_val} to choose the best epoch)"
            )
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with _isolated_rng(self.device):
            preprocessor = TabularPreprocessor(None, self.numerical, self.categorical, drop=self.drop or (), missing=self.missing)
            data = preprocessor.fit(frame).transform(frame, labels=False)
            if data.schema.n_features < MIN_FEATURES:
                raise ValueError(
                    f"Found array with {data.schema.n_features} feature(s) (shape={frame.shape}) after dropping constant "
                    f"columns, while a minimum of {MIN_FEATURES} is required: masking hides some features from the others"
                )
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
            train, val = data.subset(order[n_val:].sort().values), data.subset(order[:n_val].sort().values)
            model_config, train_config = self._configs(len(train), seed)
            with tempfile.TemporaryDirectory(prefix="pyro_jepa-sklearn-") as checkpoints:
                model, result = pretrain(self.method, Splits(train, val, val), model_config, train_config, Path(checkpoints))
        self.preprocessor_, self.model_ = preprocessor, model
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        self.n_features_out_ = len(self._output_names())
        self._validation = val.to("cpu")
        return self

    def transform(self, X) -> np.ndarray:
        """Embeddings ``(n, D * d)`` float32 of the rows of ``X``, each row independent of the others."""
        check_is_fitted(self)
        data = self.preprocessor_.transform(self._frame(X, reset=False), labels=False)
        device = next(self.model_.parameters()).device
        embeddings, _ = embed_and_score(self.model_, data.rows.to(device), None)
        return embeddings.flatten(1).cpu().numpy()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``<feature>__<k>`` for each preprocessed feature (input names; ``x<i>`` for arrays) and latent k."""
        check_is_fitted(self)
        given = _check_feature_names_in(self, input_features)
        return np.asarray(self._output_names(dict(zip(self._input_names(), given))), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # imputed with the training median (plus an indicator feature)
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # always float32
        return tags

    # -- run folders --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the fitted embedder as a run folder (see `pyro_jepa.run`); ``overwrite`` replaces an earlier run folder."""
        check_is_fitted(self)
        path = Path(path)
        with io.claim_run_folder(path, overwrite=overwrite):
            io.write_json({"estimator": type(self).__name__, "params": self.get_params()}, path / "config.json")
            save_model(path / "checkpoints" / self.method, self.method, self.model_, self.preprocessor_,
                       getattr(self, "_validation", None), extra={"sklearn": self._saved_state()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "cpu") -> _JEPAEmbedder:
        """A fitted embedder from a folder written by `save` (checked like `pyro_jepa.load_run`); parameters given
        as tuples come back as lists (JSON has no tuples)."""
        run = load_run(path, cls.method, device)
        state = run.extra.get("sklearn")
        if not isinstance(state, dict) or state.get("class") != cls.__name__:
            found = state.get("class") if isinstance(state, dict) else "not by an sklearn embedder"
            raise SavedRunError(f"{path} was saved {'by ' + found if isinstance(state, dict) else found}, not by "
                                f"{cls.__name__}.save; use pyro_jepa.load_run for run folders of the main job")
        embedder = cls(**state["params"])
        embedder.preprocessor_, embedder.model_ = run.preprocessor, run.method
        embedder.history_, embedder.best_epoch_ = state["history"], state["best_epoch"]
        embedder.n_features_in_ = state["n_features_in"]
        if state["feature_names_in"] is not None:
            embedder.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        embedder.n_features_out_ = len(embedder._output_names())
        return embedder

    # -- helpers ------------------------------------------------------------------------------------

    def _frame(self, X, reset: bool) -> pd.DataFrame:
        """``X`` as a DataFrame with string column names, after sklearn's feature-name and count checks."""
        if not isinstance(X, pd.DataFrame):
            if hasattr(X, "toarray") or hasattr(X, "tocsr"):
                raise TypeError(f"{type(self).__name__} does not take sparse input; pass a DataFrame or a dense array")
            X = np.asarray(X)
            if X.ndim != 2:
                raise ValueError(
                    f"expected a 2-d table (rows x columns), got an array of shape {X.shape}; Reshape your data: "
                    "X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one row"
                )
        if any(np.iscomplexobj(X[c]) for c in X.columns) if isinstance(X, pd.DataFrame) else np.iscomplexobj(X):
            raise ValueError("Complex data not supported; pass real numbers or text")
        if X.shape[1] < MIN_FEATURES and reset:
            raise ValueError(
                f"Found array with {X.shape[1]} feature(s) (shape={X.shape}) while a minimum of {MIN_FEATURES} is required: "
                "masking hides some features from the others"
            )
        validate_data(self, X, reset=reset, skip_check_array=True)
        if X.shape[0] == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}); expected at least one row")
        frame = X.set_axis(self._input_names(), axis=1) if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=self._input_names())
        return frame.infer_objects()  # an object array of numbers holds numbers

    def _input_names(self) -> list[str]:
        """The column names the preprocessor sees: the fitted frame's names, else ``x0, x1, ...``."""
        names = getattr(self, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else [f"x{i}" for i in range(self.n_features_in_)]

    def _output_names(self, rename: dict[str, str] | None = None) -> list[str]:
        schema = self.preprocessor_.schema
        numerical, categorical = ([_renamed(name, rename or {}) for name in names] for names in (schema.numerical, schema.categorical))
        return embedding_names(token_names(numerical, categorical, self.model_.config.group_size), self.model_.config.dim)

    def _configs(self, n_train: int, seed: int):
        # epochs and batch size through the preset: it fits the KL warm-up to the run's steps
        model_config, train_config = make_preset(self.preset, "table", n_train, self.epochs, self.batch_size)
        overrides = {"lr": self.lr} if self.lr is not None else {}
        train_config = replace(train_config, seed=seed, device=self.device, select="loss", progress=self.progress, **overrides)
        model = {k: v for k, v in {"dim": self.dim, "depth": self.depth, "group_size": self.group_size,
                                   "uncertainty": self.uncertainty}.items() if v is not None}
        return replace(model_config, **model), train_config

    def _saved_state(self) -> dict:
        names = getattr(self, "feature_names_in_", None)
        params = self.get_params()
        if not isinstance(params["random_state"], int | None):  # a RandomState object has no JSON form
            params["random_state"] = None
        return {"class": type(self).__name__, "params": params, "history": self.history_, "best_epoch": self.best_epoch_,
                "n_features_in": self.n_features_in_, "feature_names_in": None if names is None else [str(n) for n in names]}


def _renamed(feature: str, rename: dict[str, str]) -> str:
    """A preprocessed feature's name under ``rename`` of the input columns (``a__missing`` follows ``a``)."""
    if feature in rename:
        return rename[feature]
    source = feature.removesuffix(INDICATOR_SUFFIX)
    return rename[source] + INDICATOR_SUFFIX if source in rename else feature


@contextlib.contextmanager
def _isolated_rng(device: str) -> Iterator[None]:
    """Seeding inside (the engine seeds Python, NumPy and torch) leaves the caller's random streams as they were."""
    python, numpy = random.getstate(), np.random.get_state()
    target = resolve_device(device)
    try:
        with torch.random.fork_rng(devices=[target.index or 0] if target.type == "cuda" else []):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


class VarTJEPAEmbedder(_JEPAEmbedder):
    """Var-T-JEPA as a scikit-learn transformer (see the module docstring for the parameters' meaning).

    Parameters: ``preset`` ("cpu" or "paper", `pyro_jepa.presets`) and its overrides ``epochs``,
    ``batch_size``, ``lr``, ``dim`` (d), ``depth`` (encoder layers), ``group_size`` (numerical features per
    token, for wide tables: `TabularJEPAConfig.group_size`); ``validation_fraction`` of the rows
    choose the best epoch (validation loss); ``numerical``/``categorical``/``drop``/``missing`` as in
    `TabularPreprocessor`; ``uncertainty`` the row score saved with the model (one of `pyro_jepa.run.ROW_LOCAL_SCORES`);
    ``device``; ``random_state`` fixes the split, initial weights, masks and sampling; ``progress`` shows a bar.
    """

    method = "var-t-jepa"


class TJEPAEmbedder(_JEPAEmbedder):
    """The T-JEPA baseline as a scikit-learn transformer (same parameters as `VarTJEPAEmbedder`)."""

    method = "t-jepa"
