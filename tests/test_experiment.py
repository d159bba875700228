"""The main job end to end on a small SIM subsample: every promised file lands in the run folder."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sim-smoke"
    script = load_script("var_t_jepa")
    argv = ["--max-rows", "600", "--epochs", "2", "--downstream-epochs", "3", "--posterior-samples", "30",
            "--out", str(out), "--no-progress", "--seed", "1"]
    assert script.main(argv) == 0
    return script, out, argv


def test_run_folder_holds_every_file(run):
    _, out, _ = run
    for name in ("config.json", "metrics.json", "results.md", "results.csv", "training_curves.png",
                 "arviz_summary.csv", "posterior_forest.png", "uncertainty.png"):
        assert (out / name).is_file(), name
    for method in ("var-t-jepa", "t-jepa"):
        for name in ("best.pt", "last.pt", "history.csv"):
            assert (out / "checkpoints" / method / name).is_file()


def test_results_compare_all_representations(run):
    _, out, _ = run
    results = pd.read_csv(out / "results.csv")
    full = results[results["drop"] == 0]
    assert set(full["representation"]) == {"raw features", "Var-T-JEPA", "T-JEPA"}
    assert set(full["predictor"]) == {"mlp", "xgboost"}
    assert set(results.loc[results["drop"] > 0, "representation"]) == {"Var-T-JEPA", "T-JEPA"}  # each by its default score
    assert results["accuracy"].between(0, 1).all()
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["seed"] == 1 and config["dataset"]["rows"] == {"train": 420, "val": 60, "test": 120}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"]["Var-T-JEPA"]["collapse_test"]["mean_std"] > 0
    summary = pd.read_csv(out / "arviz_summary.csv", index_col=0)
    assert {"mean", "sd"} <= set(summary.columns) and summary.index[0].startswith("z[")


def test_existing_run_folder_is_not_overwritten(run, capsys):
    script, out, argv = run
    before = (out / "results.csv").read_bytes()
    assert script.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before
