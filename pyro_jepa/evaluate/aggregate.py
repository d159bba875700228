"""Aggregating repeated downstream runs: mean ± std per cell, and head-to-head cell counts."""

from __future__ import annotations

import pandas as pd

CELL = ["dataset", "predictor", "representation", "drop"]
METRICS = ["accuracy", "macro_f1"]
# Averaged too where present (selective rows).
OPTIONAL_METRICS = ["error_auroc"]


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; 0 for a single run) and count of each metric per cell.

    ``runs`` has one row per (cell, pre-training seed, downstream seed) with columns `CELL`
    and `METRICS`; with an ``abstain_by`` column (the rule behind a selective row) cells are kept
    apart by it too.
    """
    keys = CELL[:3] + ["abstain_by"] * ("abstain_by" in runs) + CELL[3:]
    grouped = runs.groupby(keys, sort=False)[METRICS + [m for m in OPTIONAL_METRICS if m in runs]]
    out = grouped.agg(["mean", "std", "count"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    for metric in METRICS:
        out[f"{metric}_std"] = out[f"{metric}_std"].fillna(0.0)
    out = out.rename(columns={"accuracy_count": "runs"}).drop(columns=[c for c in out.columns if c.endswith("_count") and c != "accuracy_count"])
    return out.reset_index()


def format_mean_std(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def count_cells(summary: pd.DataFrame, challenger: str, reference: str, metric: str = "accuracy") -> dict:
    """Head-to-head over (dataset, predictor) cells at full coverage.

    A cell is a win when the challenger's mean is at least the reference's ("≥", as the issue's
    goal is stated) and *significant* when the gap exceeds the larger of the two stds.
    """
    full = summary[summary["drop"] == 0]
    pivot = full.pivot_table(index=["dataset", "predictor"], columns="representation", values=[f"{metric}_mean", f"{metric}_std"])
    if (f"{metric}_mean", challenger) not in pivot or (f"{metric}_mean", reference) not in pivot:
        return {"cells": 0, "wins": 0, "losses": 0, "significant_wins": 0, "significant_losses": 0}
    mean_c, mean_r = pivot[(f"{metric}_mean", challenger)], pivot[(f"{metric}_mean", reference)]
    noise = pd.concat([pivot[(f"{metric}_std", challenger)], pivot[(f"{metric}_std", reference)]], axis=1).max(axis=1)
    both = mean_c.notna() & mean_r.notna()
    gap = (mean_c - mean_r)[both]
    return {
        "cells": int(both.sum()),
        "wins": int((gap >= 0).sum()),
        "losses": int((gap < 0).sum()),
        "significant_wins": int((gap > noise[both]).sum()),
        "significant_losses": int((gap < -noise[both]).sum()),
    }
