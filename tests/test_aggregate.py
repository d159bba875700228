"""Aggregating downstream runs: mean ± std per cell and head-to-head counts, on hand-made inputs."""

import pandas as pd
import pytest

from pyro_jepa.evaluate.aggregate import count_cells, format_mean_std, summarize_runs


def runs() -> pd.DataFrame:
    rows = []
    for dataset, predictor, representation, accs in [
        ("a", "mlp", "T-JEPA", [0.70, 0.72]),
        ("a", "mlp", "Var-T-JEPA", [0.80, 0.84]),  # clear win
        ("a", "xgboost", "T-JEPA", [0.75]),
        ("a", "xgboost", "Var-T-JEPA", [0.74]),  # loss, single run -> std 0 -> significant
        ("b", "mlp", "T-JEPA", [0.50, 0.60]),
        ("b", "mlp", "Var-T-JEPA", [0.56, 0.56]),  # win within noise
    ]:
        rows += [{"dataset": dataset, "predictor": predictor, "representation": representation, "drop": 0.0,
                  "accuracy": acc, "macro_f1": acc - 0.1} for acc in accs]
    rows.append({"dataset": "a", "predictor": "mlp", "representation": "Var-T-JEPA", "drop": 0.5, "accuracy": 0.95, "macro_f1": 0.9})
    return pd.DataFrame(rows)


def test_summarize_runs_mean_std_and_count():
    summary = summarize_runs(runs()).set_index(["dataset", "predictor", "representation", "drop"])
    cell = summary.loc[("a", "mlp", "Var-T-JEPA", 0.0)]
    assert cell["accuracy_mean"] == pytest.approx(0.82)
    assert cell["accuracy_std"] == pytest.approx(0.0282842712, rel=1e-6)  # sample std of (0.80, 0.84)
    assert cell["macro_f1_mean"] == pytest.approx(0.72)
    assert cell["runs"] == 2
    single = summary.loc[("a", "xgboost", "T-JEPA", 0.0)]
    assert single["accuracy_std"] == 0.0 and single["runs"] == 1
    assert summary.loc[("a", "mlp", "Var-T-JEPA", 0.5)]["accuracy_mean"] == pytest.approx(0.95)


def test_count_cells_at_full_coverage():
    summary = summarize_runs(runs())
    counts = count_cells(summary, "Var-T-JEPA", "T-JEPA", "accuracy")
    assert counts == {"cells": 3, "wins": 2, "losses": 1, "significant_wins": 1, "significant_losses": 1}
    assert count_cells(summary, "Var-T-JEPA", "raw features")["cells"] == 0


def test_format_mean_std():
    assert format_mean_std(0.8523, 0.00214) == "0.852 ± 0.002"
