"""Steps shared by the tabular experiments: run folders, pre-training, representations, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data.tabular import Splits
from .models import TERMS, TJEPA, SSLMethod, TabularJEPAConfig, VarTJEPA
from .report import figure, save_figure
from .train import FitResult, TrainConfig, fit

METHODS: dict[str, type[SSLMethod]] = {"var-t-jepa": VarTJEPA, "t-jepa": TJEPA}


def pretrain(
    method_name: str,
    splits: Splits,
    model_config: TabularJEPAConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    resume: bool = False,
) -> tuple[SSLMethod, FitResult]:
    """Build and train one method on the training split; returns it with its best weights.

    ``resume`` continues (or, once finished, reuses) the checkpoints in ``checkpoint_dir`` after
    `pyro_jepa.train.check_resumable` has confirmed they hold this method, settings and data, so
    experiments may share a checkpoint folder only where they ask for the same training.
    """
    if method_name not in METHODS:
        raise ValueError(f"unknown method {method_name!r}; choose from {sorted(METHODS)}")
    torch.manual_seed(train_config.seed)  # identical initial weights for a seed
    method = METHODS[method_name](splits.schema, model_config, seed=train_config.seed)
    return method, fit(method, splits.train, splits.val, train_config, checkpoint_dir, resume=resume)


def pretraining_record(method: SSLMethod, result: FitResult) -> dict:
    """What the reports say about one pre-training run: the epoch kept, its optimizer steps, the KL
    warm-up's steps (0 for a method without one), and the width `training-kl` smooths by (Var-T-JEPA)."""
    kept = next(row for row in result.history if row["epoch"] == result.best_epoch)
    record = {"best_epoch": result.best_epoch, "steps": kept["step"],
              "warmup_steps": method.weights.warmup_steps if hasattr(method, "weights") else 0}
    if hasattr(method, "reference_smoothing"):
        record["smoothing"] = float(method.reference_smoothing)
    return record


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
    fig, axes = figure(1, 3, size=(5.0, 4.0))
    for name, history in histories.items():
        frame = pd.DataFrame(history)
        axes[0].plot(frame["epoch"], frame["train_loss"], label=f"{name} train")
        axes[0].plot(frame["epoch"], frame["val_loss"], "--", label=f"{name} val")
        if "val_probe_accuracy" in frame:
            axes[2].plot(frame["epoch"], frame["val_probe_accuracy"], marker="o", label=name)
        for term in TERMS:
            if f"val_{term}" in frame:
                axes[1].plot(frame["epoch"], frame[f"val_{term}"], label=f"{name} {term}")
    axes[0].set(title="objective (each method's own loss)", xlabel="epoch")
    axes[1].set(title="validation ELBO terms (unweighted)", xlabel="epoch", yscale="symlog")
    axes[2].set(title="validation probe accuracy", xlabel="epoch")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, path)
