"""Saved runs: everything needed to use a trained model again, and the object that uses it.

A saved model lives in its method's checkpoint folder, beside its weights (the main job writes one
per pre-trained method; `pyro_jepa.sklearn` writes the same layout):

============================  ====================================================================
``RUN/checkpoints/<method>/``
``best.pt``                   the weights (`pyro_jepa.train`'s checkpoint; loads with ``weights_only=True``)
``preprocessor.json``         the fitted `TabularPreprocessor`: column types, medians, means and
                              standard deviations, category lists, classes
``calibration.json``          the validation rows' uncertainty scores and each predictor's 0/1
                              errors on them, for abstention thresholds (methods with a score)
``predictor-<name>.pt|json``  the downstream predictors the run trained (`save_predictor`)
``model.json``                written last: format tag, method, model config, uncertainty score,
                              predictors (with validation accuracy), and the sha256 of every file above
============================  ====================================================================

Nothing is pickled. `load_run` checks the format tag, the method and every file's sha256 before it
trusts a byte, and raises `SavedRunError` (a ValueError: one ``error:`` line in the command line)
naming the problem: another method, an older format, a truncated or edited file.

Abstention is a threshold on a row's uncertainty score, calibrated once on the run's validation rows
(`ABSTENTION_RULES`), so a row's answer never depends on the other rows it is scored with.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, io
from .data.loaders import TabularPreprocessor
from .data.registry import sha256_file
from .data.tabular import TabularData
from .evaluate.downstream import as_feature_matrix, load_predictor, save_predictor
from .evaluate.selective import risk_coverage
from .models import SSLMethod, TabularJEPAConfig
from .models.scores import canonical_score_name
from .pipeline import METHODS
from .checkpoints import CHECKPOINT_FORMAT, holds_state, load_checkpoint, save_checkpoint
from .train import resolve_device

MODEL_FORMAT = "pyro_jepa-saved-model-v1"
MODEL_FILE, WEIGHTS_FILE = "model.json", "best.pt"
PREPROCESSOR_FILE, CALIBRATION_FILE = "preprocessor.json", "calibration.json"


class SavedRunError(ValueError):
    """A run folder that cannot be used: no saved model of the method, an older format, a changed file."""


# -- the uncertainty score --------------------------------------------------------------------------


# The scores a saved model may report: computed from the row alone (``training-kl`` and ``trimmed-kl`` also read the
# training rows saved with the weights). The mask-averaged scores (``prior-std``, ``predictive-*``,
# T-JEPA's ``prediction-error``) draw mask sizes per chunk of rows, so a row's value would depend on
# the rows scored with it.
ROW_LOCAL_SCORES = ("posterior-mean", "posterior-q90", "posterior-entropy", "decoder-scale", "training-kl", "trimmed-kl")


def default_score(method: SSLMethod) -> str | None:
    """The uncertainty score a saved model reports: the method's default score (``method.default_score``,
    `TabularJEPAConfig.uncertainty`) when it is one of `ROW_LOCAL_SCORES`; else the first row-local
    score the method has (with a warning); None for a method without one (T-JEPA)."""
    score, local = method.default_score, [n for n in method.score_names if n in ROW_LOCAL_SCORES]
    if score is None or score in ROW_LOCAL_SCORES or not local:
        return score if score in ROW_LOCAL_SCORES else None
    warnings.warn(
        f"{method.name}'s default score {score!r} is averaged over mask draws made per chunk of rows, so a saved "
        f"model cannot report it row by row; the saved model reports {local[0]!r}", stacklevel=3,
    )
    return local[0]


@torch.no_grad()
def embed_and_score(method: SSLMethod, rows: torch.Tensor, how: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Embeddings ``(N, D, d)`` of packed ``rows`` and one uncertainty score per row ``(N,)`` (None if ``how`` is None).

    The one function that defines a saved model's score: calibration (`save_model`) and new rows
    (`LoadedRun`) both go through it. Each row's values depend on that row only. ``how`` is one of
    `ROW_LOCAL_SCORES` (or a legacy name, e.g. ``"q90"``), computed by ``method.scores``.
    """
    if how is None:
        return method.embed(rows), None
    try:
        how = canonical_score_name(how)
    except ValueError as err:
        raise SavedRunError(str(err)) from None
    if how not in method.score_names or how not in ROW_LOCAL_SCORES:
        local = [n for n in method.score_names if n in ROW_LOCAL_SCORES]
        if not local:
            raise SavedRunError(f"{method.name} has no latent posterior, so no per-row uncertainty score; use a Var-T-JEPA model")
        raise SavedRunError(f"a saved {method.name} model scores rows by one of {local}, not {how!r}")
    embeddings, scores = method.embed_with_scores(rows, [how])
    return embeddings, scores[how]


# -- abstention rules -------------------------------------------------------------------------------


@dataclass
class Calibration:
    """What the abstention rules know: the validation rows' scores and each predictor's 0/1 errors on them."""

    score: str
    scores: np.ndarray
    errors: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"score": self.score, "validation_scores": self.scores.tolist(),
                "validation_errors": {name: e.astype(int).tolist() for name, e in self.errors.items()}}

    @classmethod
    def from_dict(cls, state: dict) -> Calibration:
        scores = np.asarray(state["validation_scores"], dtype=np.float64)
        errors = {name: np.asarray(e, dtype=np.float64) for name, e in state["validation_errors"].items()}
        if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
            raise ValueError("validation_scores must be a non-empty list of finite numbers")
        if any(e.shape != scores.shape for e in errors.values()):
            raise ValueError("every predictor needs one validation error per validation score")
        return cls(state["score"], scores, errors)


def coverage_threshold(calibration: Calibration, coverage: float, predictor: str | None = None) -> float:
    """The score threshold that keeps a ``coverage`` fraction of the validation rows.

    The ``ceil(coverage * n)`` least uncertain of the ``n`` validation rows score at or below it
    (more on ties); rows scoring above it abstain. ``coverage=1`` never abstains. New rows from the
    validation rows' distribution are kept at about the same rate.
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if coverage == 1:
        return math.inf
    scores = np.sort(calibration.scores)
    kept = math.ceil(round(coverage * len(scores), 9))  # round: 0.8 * 1000 is 800.0000000000001
    return float(scores[max(kept, 1) - 1])


def empirical_risk_threshold(calibration: Calibration, risk: float, predictor: str | None = None) -> float:
    """The highest score threshold at which the kept validation rows' error rate is at most ``risk``.

    A plain empirical rule, without a finite-sample guarantee: the kept rows of new data may exceed
    ``risk``, more so with few validation rows, and the errors of an MLP early-stopped on these rows
    are optimistic. Returns -inf (abstain on everything) when no threshold reaches ``risk``.
    """
    if not 0 <= risk <= 1:
        raise ValueError(f"risk must be in [0, 1], got {risk}")
    if predictor not in calibration.errors:
        raise SavedRunError(f"no validation errors saved for predictor {predictor!r}; saved: {sorted(calibration.errors)}")
    scores = np.sort(calibration.scores)
    _, selective_risk = risk_coverage(calibration.errors[predictor], calibration.scores)  # keeping the k least uncertain
    last_of_ties = np.r_[scores[1:] != scores[:-1], True]  # a threshold keeps all rows of equal score
    allowed = np.nonzero((selective_risk <= risk + 1e-12) & last_of_ties)[0]
    return float(scores[allowed[-1]]) if len(allowed) else -math.inf


# name -> rule(calibration, target, predictor) -> threshold; a row abstains when its score exceeds it.
ABSTENTION_RULES: dict[str, Callable[[Calibration, float, str | None], float]] = {
    "coverage": coverage_threshold,
    "risk": empirical_risk_threshold,
}


# -- files ------------------------------------------------------------------------------------------


def embedding_names(token_names: tuple[str, ...], dim: int) -> list[str]:
    """Column names of a flattened ``(N, T, d)`` embedding: ``<token>__<k>`` in flattening order
    (a token is a feature, or a group of them: `pyro_jepa.nn.token_names`)."""
    return [f"{token}__{k}" for token in token_names for k in range(dim)]


def save_model(
    folder: str | os.PathLike[str],
    method_name: str,
    method: SSLMethod,
    preprocessor: TabularPreprocessor,
    validation: TabularData | None = None,
    predictors: Mapping[str, object] | None = None,
    extra: dict | None = None,
) -> Path:
    """Save a trained ``method`` (a key of `pyro_jepa.pipeline.METHODS`) with what it needs to be used again.

    Writes the files of the module docstring into ``folder``. An existing ``best.pt`` (the training
    engine's) is kept after checking it holds ``method``'s weights; otherwise the weights are
    written there. ``validation`` rows calibrate abstention (their scores, and each predictor's
    errors where they carry labels) and rank the ``predictors`` (trained on the flattened embeddings)
    by validation accuracy: the best is the default of `LoadedRun.predict`. ``extra`` (JSON values)
    is stored in model.json. Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    predictors = dict(predictors or {})
    files = [_save_weights(folder / WEIGHTS_FILE, method), folder / PREPROCESSOR_FILE]
    io.write_json(preprocessor.to_dict(), folder / PREPROCESSOR_FILE)

    score = default_score(method)
    meta, accuracy, errors = {}, {}, {}
    if validation is not None:
        device = next(method.parameters()).device
        embeddings, scores = embed_and_score(method, validation.rows.to(device), score)
        features, labels = as_feature_matrix(embeddings), validation.y.cpu().numpy()
        for name, model in predictors.items():
            if (labels >= 0).all():
                errors[name] = model.predict_proba(features).argmax(1) != labels
                accuracy[name] = float(1 - errors[name].mean())
        if scores is not None:
            io.write_json(Calibration(score, scores.cpu().numpy().astype(np.float64), errors).to_dict(), folder / CALIBRATION_FILE)
            files.append(folder / CALIBRATION_FILE)
    for name, model in predictors.items():
        meta[name], written = save_predictor(model, folder, name)
        meta[name]["validation_accuracy"] = accuracy.get(name)
        files += written
    default = max(accuracy, key=accuracy.get) if accuracy else next(iter(predictors), None)

    manifest = {
        "format": MODEL_FORMAT,
        "method": method_name,
        "model": method.config,
        "uncertainty_score": score,
        "embedding": {"features": len(preprocessor.schema.feature_names), "tokens": method.n_tokens, "dim": method.config.dim},
        "predictors": meta,
        "default_predictor": default,
        "files": {path.name: sha256_file(path) for path in files},
        "pyro_jepa": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "extra": extra or {},
    }
    io.write_json(manifest, folder / MODEL_FILE)  # last: a model.json means every file above is complete
    return folder


def _save_weights(path: Path, method: SSLMethod) -> Path:
    """Write ``method``'s weights to ``path``, or check that the checkpoint already there holds them."""
    if path.is_file():
        if not holds_state(load_checkpoint(path)["method"], method.state_dict()):
            raise RuntimeError(f"{path} does not hold the weights of the model being saved; save into another folder")
        return path
    settings = io.to_jsonable({"method": method.name, "model": method.settings()})
    save_checkpoint({"format": CHECKPOINT_FORMAT, "method": method.state_dict(), "settings": settings}, path)
    return path


# -- loading ----------------------------------------------------------------------------------------


def find_model_folder(run: str | os.PathLike[str], method: str) -> Path:
    """The folder holding ``method``'s saved model: ``run`` itself if it holds a model.json, else
    ``run/checkpoints/<method>/``. Raises `SavedRunError` saying what the folder holds instead."""
    run = Path(run)
    if not run.is_dir():
        raise SavedRunError(f"{run} is not a folder; pass a run folder (the main job's --out) or a model folder inside it")
    if (run / MODEL_FILE).is_file():
        return run
    folder = run / "checkpoints" / method
    if (folder / MODEL_FILE).is_file():
        return folder
    if (folder / WEIGHTS_FILE).is_file():
        raise SavedRunError(
            f"{folder} holds weights ({WEIGHTS_FILE}) but no {MODEL_FILE}: the run was made by an older pyro_jepa "
            "(before run folders saved their preprocessing and predictors) or did not finish; rerun the main job to get "
            "a loadable run"
        )
    saved = sorted(p.parent.name for p in run.glob(f"checkpoints/*/{MODEL_FILE}"))
    if saved:
        raise SavedRunError(f"{run} holds no saved {method} model; it holds {saved}: pass method={saved[0]!r} (--method {saved[0]})")
    trained = sorted(p.relative_to(run).parent.as_posix() for p in run.glob(f"checkpoints/**/{WEIGHTS_FILE}"))
    if trained:
        raise SavedRunError(
            f"{run} holds no saved model, only weights (in {', '.join(trained)}): it is not a run of the main job "
            "(experiments/var_t_jepa.py), whose Var-T-JEPA and T-JEPA models are saved for reuse, or one that did not finish"
        )
    if (run / io.MARKER).is_file():
        raise SavedRunError(f"{run} is a run folder without a saved model (interrupted, or pre-training never finished)")
    raise SavedRunError(f"{run} is not a pyro_jepa run folder (no {io.MARKER} and no {MODEL_FILE}); pass the main job's --out folder")


def _read_json(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SavedRunError(f"{path} cannot be read as JSON ({err}); the file is damaged: rerun the main job") from err
    if not isinstance(state, dict):
        raise SavedRunError(f"{path} does not hold a JSON object; the file is damaged: rerun the main job")
    return state


def _check_files(folder: Path, files: Mapping[str, str]) -> None:
    """Every file model.json lists exists and has the sha256 recorded when it was saved."""
    for name, digest in files.items():
        path = folder / name
        if Path(name).name != name:
            raise SavedRunError(f"{folder / MODEL_FILE} lists a file outside its folder ({name!r}); the file is not trustworthy")
        if not path.is_file():
            raise SavedRunError(f"{path} is missing; the saved model is incomplete: rerun the main job")
        if sha256_file(path) != digest:
            raise SavedRunError(
                f"{path} changed after the run saved it (its sha256 differs from the one in {MODEL_FILE}: truncated, edited, "
                "replaced, or the run was resumed and did not finish); rerun or finish the run"
            )


def load_run(run: str | os.PathLike[str], method: str = "var-t-jepa", device: str = "cpu") -> LoadedRun:
    """Load ``method``'s saved model from a run folder (or from the model folder itself) onto ``device``.

    Checks the format, the method and every file's sha256 first; any problem raises `SavedRunError`.
    """
    if method not in METHODS:
        raise SavedRunError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    folder = find_model_folder(run, method)
    manifest = _read_json(folder / MODEL_FILE)
    found = manifest.get("format")
    if found != MODEL_FORMAT:
        raise SavedRunError(
            f"{folder / MODEL_FILE} has format {found!r}, but this pyro_jepa {__version__} reads {MODEL_FORMAT!r}; "
            "rerun the main job with this version (or load it with the version that wrote it)"
        )
    if manifest.get("method") != method:
        raise SavedRunError(f"{folder} holds a {manifest.get('method')} model, not {method}: pass method={manifest.get('method')!r}")
    try:
        _check_files(folder, manifest["files"])
        preprocessor = TabularPreprocessor.from_dict(_read_json(folder / PREPROCESSOR_FILE))
        config = TabularJEPAConfig(**manifest["model"])
        score, predictor_meta, default = manifest["uncertainty_score"], manifest["predictors"], manifest["default_predictor"]
        score = None if score is None else canonical_score_name(score)
    except (KeyError, TypeError, ValueError) as err:
        raise SavedRunError(f"{folder}: the saved model is inconsistent ({type(err).__name__}: {err}); rerun the main job") from err
    target = resolve_device(device)
    model = _load_method(folder / WEIGHTS_FILE, method, preprocessor, config, target)
    predictors = {}
    for name, meta in predictor_meta.items():
        try:
            predictors[name] = load_predictor(folder, meta, str(target))
        except (KeyError, TypeError, ValueError, io.CheckpointError) as err:
            raise SavedRunError(f"{folder}: predictor {name!r} cannot be loaded ({err})") from err
    calibration = None
    if CALIBRATION_FILE in manifest["files"]:
        try:
            calibration = Calibration.from_dict(_read_json(folder / CALIBRATION_FILE))
        except (KeyError, TypeError, ValueError) as err:
            raise SavedRunError(f"{folder / CALIBRATION_FILE} is inconsistent ({err}); rerun the main job") from err
    return LoadedRun(folder, method, model, preprocessor, predictors, default, score, calibration, manifest.get("extra") or {})


def _load_method(path: Path, method: str, preprocessor: TabularPreprocessor, config: TabularJEPAConfig, device) -> SSLMethod:
    """Build ``method`` for the preprocessor's schema and ``config`` and load the checkpoint's weights."""
    state = load_checkpoint(path, device)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
        model = METHODS[method](preprocessor.schema, config)
    settings = state.get("settings") or {}
    if settings.get("method") != model.name or settings.get("model") != io.to_jsonable(model.settings()):
        raise SavedRunError(
            f"{path} holds a {settings.get('method')} checkpoint with other settings than {MODEL_FILE} describes; "
            "the folder mixes files of different runs: rerun the main job"
        )
    try:
        model.load_state_dict(state["method"])
    except (KeyError, RuntimeError) as err:
        raise SavedRunError(f"{path} does not fit the saved model's config and columns ({str(err).splitlines()[0]})") from err
    return model.to(device).eval()


# -- the loaded model -------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A trained model with its preprocessing, downstream predictors and calibration (see `load_run`).

    Every method takes a pandas DataFrame of raw rows with the training columns, validated like
    training data: a missing feature column is an error naming it, unseen categories are encoded as
    unknown with a warning counting them per column, extra columns are ignored with a warning, and
    the label column may be present or not (it is never read). Each row's output depends on that row
    only, whatever else is in the frame.
    """

    folder: Path
    method_name: str
    method: SSLMethod
    preprocessor: TabularPreprocessor
    predictors: dict[str, object]
    default_predictor: str | None
    score: str | None
    calibration: Calibration | None
    extra: dict = field(default_factory=dict)  # what the saver stored beside the model (save_model's ``extra``)

    @property
    def classes(self) -> list:
        """The class labels, as in the training data; predictions are drawn from them."""
        return list(self.preprocessor.label_values)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The model's features (after preprocessing: dropped columns removed, missing-value indicators added)."""
        return self.preprocessor.schema.feature_names

    @property
    def embedding_names(self) -> list[str]:
        """Column names of the flattened embedding (`embed`)."""
        return embedding_names(self.method.token_names, self.method.config.dim)

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    def encode(self, df: pd.DataFrame) -> torch.Tensor:
        """The packed, preprocessed rows of ``df`` on the model's device."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame with the training columns, got {type(df).__name__}")
        if len(df) == 0:
            raise ValueError("the frame has no rows")
        return self.preprocessor.transform(df, labels=False).rows.to(self.device)

    def _embed_and_score(self, df: pd.DataFrame, how: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        embeddings, scores = embed_and_score(self.method, self.encode(df), how)
        return embeddings.cpu().numpy(), None if scores is None else scores.cpu().numpy()

    def embed(self, df: pd.DataFrame, flatten: bool = True) -> np.ndarray:
        """Posterior means (T-JEPA: target-encoder outputs) of each row: ``(N, D*d)``, or ``(N, D, d)`` with ``flatten=False``."""
        embeddings = self._embed_and_score(df, None)[0]
        return embeddings.reshape(len(embeddings), -1) if flatten else embeddings

    def uncertainty(self, df: pd.DataFrame, how: str | None = None) -> np.ndarray:
        """One latent uncertainty score per row ``(N,)``: ``how`` (one of `ROW_LOCAL_SCORES`), by default
        the score the model was saved to report (`score`)."""
        how = how or self._require_score()
        return self._embed_and_score(df, how)[1]

    def embed_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The flattened embedding as columns `embedding_names`, plus ``uncertainty`` where the model has a score; index of ``df``."""
        embeddings, scores = self._embed_and_score(df, self.score)
        frame = pd.DataFrame(embeddings.reshape(len(embeddings), -1), index=df.index, columns=self.embedding_names)
        if scores is not None:
            frame["uncertainty"] = scores
        return frame

    def sample_latents(self, df: pd.DataFrame, n: int = 200, seed: int = 0):
        """arviz InferenceData of ``n`` guide samples of ``s_x``, ``z`` and ``s_w`` per row (dims ``row``,
        ``feature``, ``latent``; rows named by ``df``'s index), as `pyro_jepa.uncertainty.to_inference_data`.
        Memory grows with rows x n x features x d: pass a few rows."""
        from .uncertainty import sample_latents, to_inference_data

        self._require_score()
        rows = self.encode(df)
        with torch.random.fork_rng(devices=[rows.device] if rows.device.type == "cuda" else []):
            torch.manual_seed(seed)
            samples = sample_latents(self.method, rows, n)
        return to_inference_data(samples, list(df.index), self.method.token_names)

    def _predictor(self, name: str | None) -> tuple[str, object]:
        name = name or self.default_predictor
        if name is None or name not in self.predictors:
            saved = sorted(self.predictors)
            what = f"no predictor {name!r}; saved: {saved}" if saved else "no downstream predictor (the run trained none)"
            raise SavedRunError(f"{self.folder} holds {what}")
        return name, self.predictors[name]

    def predict_proba(self, df: pd.DataFrame, predictor: str | None = None) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` (columns in the order of `classes`) of the saved
        ``predictor`` (default: the best on the validation rows, `default_predictor`)."""
        _, model = self._predictor(predictor)
        return model.predict_proba(as_feature_matrix(self.embed(df)))

    def threshold(self, coverage: float | None = None, risk: float | None = None, predictor: str | None = None) -> float:
        """The score above which rows abstain, from the validation rows (`ABSTENTION_RULES`); give one of
        ``coverage`` (kept fraction) or ``risk`` (error rate of the kept rows, an empirical rule)."""
        rules = {name: value for name, value in (("coverage", coverage), ("risk", risk)) if value is not None}
        if len(rules) != 1:
            raise ValueError(f"give exactly one of coverage= and risk=, got {sorted(rules) or 'neither'}")
        self._require_score()
        if self.calibration is None:
            raise SavedRunError(f"{self.folder} holds no {CALIBRATION_FILE} (no validation rows were saved), so no threshold")
        (rule, value), = rules.items()
        if rule == "risk":  # errors are the predictor's: resolve the default one
            predictor = self._predictor(predictor)[0]
        return ABSTENTION_RULES[rule](self.calibration, value, predictor)

    def predict(
        self,
        df: pd.DataFrame,
        coverage: float | None = None,
        risk: float | None = None,
        predictor: str | None = None,
        probabilities: bool = False,
    ) -> pd.DataFrame:
        """Predictions of the saved ``predictor`` (default: `default_predictor`), one row per row of ``df`` (same index).

        Columns: ``prediction`` (a class of `classes`), ``uncertainty`` (where the model has a score),
        ``proba_<class>`` with ``probabilities=True``, and with ``coverage`` or ``risk`` a boolean
        ``abstain``: the row's score is above `threshold` (calibrated on the validation rows, so
        independent of the other rows in ``df``); its ``prediction`` is still given.
        """
        name, model = self._predictor(predictor)
        limit = self.threshold(coverage, risk, name) if coverage is not None or risk is not None else None
        embeddings, scores = self._embed_and_score(df, self.score)
        proba = model.predict_proba(as_feature_matrix(embeddings))
        frame = pd.DataFrame({"prediction": pd.Index(self.classes).take(proba.argmax(1)).to_numpy()}, index=df.index)
        if scores is not None:
            frame["uncertainty"] = scores
        if probabilities:
            for j, label in enumerate(self.classes):
                frame[f"proba_{label}"] = proba[:, j]
        if limit is not None:
            frame["abstain"] = scores > limit
        return frame

    def _require_score(self) -> str:
        if self.score is None:
            raise SavedRunError(
                f"the {self.method_name} model has no latent uncertainty (no posterior); load method='var-t-jepa' "
                "for uncertainty, latent samples and abstention"
            )
        return self.score
