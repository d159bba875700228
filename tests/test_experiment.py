"""The main job end to end on a small SIM subsample: every promised file lands in the run folder."""

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, folder: str = "experiments"):
    """The script ``ROOT/folder/name.py`` as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
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
        for name in ("best.pt", "last.pt", "history.csv", "model.json", "preprocessor.json", "predictor-mlp.pt",
                     "predictor-xgboost.json"):
            assert (out / "checkpoints" / method / name).is_file()
    assert (out / "checkpoints" / "var-t-jepa" / "calibration.json").is_file()


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
    # The kernels' instruction set decides the last bits of every trained weight: it is recorded with the run.
    assert config["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert config["machine"]["cores"] == os.cpu_count() and config["machine"]["cpu"]
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


FRESH_PROCESS = """
import sys
import numpy as np, pyro_jepa
from pyro_jepa.data import read_table
out, folder = sys.argv[1], sys.argv[2]
test, val = read_table(folder + "/test.csv"), read_table(folder + "/val.csv")
var, t_jepa = pyro_jepa.load_run(out), pyro_jepa.load_run(out, method="t-jepa")
predictions = {f"{m}/{p}": run.predict(test, predictor=p)["prediction"].to_numpy(str)
               for m, run in (("Var-T-JEPA", var), ("T-JEPA", t_jepa)) for p in ("mlp", "xgboost")}
np.savez(folder + "/fresh.npz", embeddings=var.embed(test), test_uncertainty=var.uncertainty(test),
         val_uncertainty=var.uncertainty(val), t_jepa_embeddings=t_jepa.embed(test), **predictions)
"""


def test_a_fresh_process_reproduces_the_runs_embeddings_uncertainty_and_accuracy(run, tmp_path):
    import os
    import subprocess
    import sys

    import numpy as np
    import torch

    from pyro_jepa.data import load_dataset, make_sim
    from pyro_jepa.data.loaders import GENERATION_SEED
    from pyro_jepa.models import TJEPA, TabularJEPAConfig, VarTJEPA
    from pyro_jepa.train import load_checkpoint

    _, out, _ = run
    splits = load_dataset("sim", seed=1, max_rows=600)  # the run's split, rebuilt as the run built it
    table = make_sim(seed=GENERATION_SEED)
    for name in ("test", "val"):  # the raw rows, as a user would have them
        table.iloc[splits.source_rows[name]].to_csv(tmp_path / f"{name}.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out), str(tmp_path)], check=True, cwd=tmp_path, env=env)
    fresh = np.load(tmp_path / "fresh.npz")

    def as_trained(cls, method: str):  # the run's model, from its checkpoint
        config = json.loads((out / "config.json").read_text())["model"]
        model = cls(splits.schema, TabularJEPAConfig(**config))
        model.load_state_dict(load_checkpoint(out / "checkpoints" / method / "best.pt")["method"])
        return model.eval()

    var, t_jepa = as_trained(VarTJEPA, "var-t-jepa"), as_trained(TJEPA, "t-jepa")
    with torch.no_grad():
        np.testing.assert_allclose(fresh["embeddings"], var.embed(splits.test.rows).flatten(1).numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(fresh["t_jepa_embeddings"], t_jepa.embed(splits.test.rows).flatten(1).numpy(), atol=1e-6, rtol=0)
        expected = var.scores(splits.test.rows, [var.default_score])[var.default_score].numpy()  # the run's own score
    np.testing.assert_allclose(fresh["test_uncertainty"], expected, atol=1e-6, rtol=0)
    saved = json.loads((out / "checkpoints" / "var-t-jepa" / "calibration.json").read_text())["validation_scores"]
    np.testing.assert_allclose(fresh["val_uncertainty"], saved, atol=1e-6, rtol=0)  # what the run computed itself

    reported = pd.read_csv(out / "results.csv").query("drop == 0").set_index(["representation", "predictor"])["accuracy"]
    labels = table.iloc[splits.source_rows["test"]]["label"].to_numpy(str)
    for key in ("Var-T-JEPA/mlp", "Var-T-JEPA/xgboost", "T-JEPA/mlp", "T-JEPA/xgboost"):
        representation, predictor = key.split("/")
        assert (fresh[key] == labels).mean() == reported[(representation, predictor)], key  # exactly
