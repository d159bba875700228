"""Steps shared by the tabular experiments: run folders, pre-training, representations, plots."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import distributed
from .data.tabular import Splits
from .models import TJEPA, SSLMethod, TabularJEPAConfig, VarTJEPA
from .train import CheckpointError, FitResult, TrainConfig, fit

METHODS: dict[str, type[SSLMethod]] = {"var-t-jepa": VarTJEPA, "t-jepa": TJEPA}


class RunFolderExistsError(FileExistsError):
    """The run folder holds results already and neither --overwrite nor --resume was given."""


def prepare_run_dir(path: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder; never clobber an existing non-empty one unless asked to."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not resume:
        if not overwrite:
            raise RunFolderExistsError(
                f"run folder {path} already holds results; pass --overwrite to replace it, "
                "--resume to continue it, or --out for a new folder"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(obj):
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values."""
    if is_dataclass(obj):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(obj, path: Path) -> None:
    Path(path).write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")


def pretrain(
    method_name: str,
    splits: Splits,
    model_config: TabularJEPAConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    resume: bool = False,
) -> tuple[SSLMethod, FitResult]:
    """Build and train one method on the training split; returns it with its best weights.

    Writes ``pretrain_config.json`` (method, data, model and training settings) beside the
    checkpoints; resuming a folder written with other settings raises `CheckpointError`, so two
    experiments may share a checkpoint folder only where they ask for the same training.
    """
    if method_name not in METHODS:
        raise ValueError(f"unknown method {method_name!r}; choose from {sorted(METHODS)}")
    settings = to_jsonable({"method": method_name, "data": {"name": splits.name, "rows": len(splits.train), "schema": splits.schema},
                            "model": model_config, "train": {k: v for k, v in asdict(train_config).items() if k not in ("device", "progress")}})
    record = Path(checkpoint_dir) / "pretrain_config.json"
    if resume and record.exists() and _training_settings(json.loads(record.read_text())) != _training_settings(settings):
        raise CheckpointError(f"{checkpoint_dir} holds a {method_name} trained with other settings (see {record}); "
                              "use another folder or remove it")
    if distributed.info().is_main:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(settings, indent=2) + "\n")
    torch.manual_seed(train_config.seed)  # identical initial weights for a seed
    method = METHODS[method_name](splits.schema, model_config, seed=train_config.seed)
    return method, fit(method, splits.train, splits.val, train_config, checkpoint_dir, resume=resume)


# Config fields a method never reads (TabularJEPAConfig is shared by both tabular JEPAs).
UNUSED_FIELDS = {"t-jepa": {"weights", "elbo", "decoder_scale", "uncertainty"}, "var-t-jepa": {"ema", "n_aux"}}


def _training_settings(settings: dict) -> dict:
    """The settings that change training: all but the fields the method never reads and the default
    score, which only the filtered-probe selection reads."""
    unused = UNUSED_FIELDS.get(settings["method"], set()) | ({"uncertainty"} if settings["train"].get("select") != "probe-filtered" else set())
    return {**settings, "model": {k: v for k, v in settings["model"].items() if k not in unused}}


@torch.no_grad()
def representations(method: SSLMethod, splits: Splits) -> dict[str, np.ndarray]:
    """Flattened representations ``(N, D*d)`` of each split."""
    return {name: method.embed(getattr(splits, name).rows.to(device_of(method))).flatten(1).cpu().numpy() for name in ("train", "val", "test")}


@torch.no_grad()
def uncertainties(
    method: SSLMethod, splits: Splits, score: str | None = None, parts: tuple[str, ...] = ("val", "test")
) -> dict[str, np.ndarray] | None:
    """One per-row uncertainty score (``method.scores``; its default score when None) for each split
    in ``parts``, or None for a method without scores."""
    score = score or method.default_score
    if score is None:
        return None
    return {name: method.scores(getattr(splits, name).rows.to(device_of(method)), [score])[score].cpu().numpy() for name in parts}


def device_of(method: SSLMethod) -> torch.device:
    """The device a method's parameters live on."""
    return next(method.parameters()).device


def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Training and validation loss per method, plus every validation ELBO term where logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in histories.items():
        frame = pd.DataFrame(history)
        axes[0].plot(frame["epoch"], frame["train_loss"], label=f"{name} train")
        axes[0].plot(frame["epoch"], frame["val_loss"], "--", label=f"{name} val")
        if "val_probe_accuracy" in frame:
            axes[2].plot(frame["epoch"], frame["val_probe_accuracy"], marker="o", label=name)
        for term in ("rec", "gen", "kl_s_x", "kl_z", "kl_s_y"):
            if f"val_{term}" in frame:
                axes[1].plot(frame["epoch"], frame[f"val_{term}"], label=f"{name} {term}")
    axes[0].set(title="objective (each method's own loss)", xlabel="epoch")
    axes[1].set(title="validation ELBO terms (unweighted)", xlabel="epoch", yscale="symlog")
    axes[2].set(title="validation probe accuracy", xlabel="epoch")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
