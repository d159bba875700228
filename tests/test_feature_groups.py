"""experiments/feature_groups.py: the main job per (setting, seed), aggregated; finished runs are reused."""

import pandas as pd
import pytest

from tests.test_experiment import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("feature_groups")


def test_settings_are_parsed_and_bad_ones_refused(script, capsys):
    assert script.parse_settings("mnist:16, mnist-7x7:1") == [("mnist", 16), ("mnist-7x7", 1)]
    for bad in ("mnist", "mnist:0", ":4", "mnist:x"):
        with pytest.raises(SystemExit):
            script.parse_args(["--settings", bad])
        assert "DATASET:GROUP_SIZE" in capsys.readouterr().err


def test_a_grouped_run_is_reported_and_reused(script, tmp_path):
    argv = ["--settings", "sim:4", "--seeds", "0", "--epochs", "1", "--max-rows", "300", "--predictors", "mlp",
            "--threads", "1", "--out", str(tmp_path / "work"), "--report", str(tmp_path / "report.md")]
    assert script.main(argv) == 0
    folder = tmp_path / "work" / "sim-g4-s0"
    config = pd.read_json(folder / "config.json", typ="series")
    assert config["model"]["group_size"] == 4
    results = pd.read_csv(tmp_path / "work" / "feature_groups.csv")
    assert set(results["representation"]) == {"raw features", "Var-T-JEPA", "T-JEPA"} and (results["drop"] == 0).all()
    cost = pd.read_csv(tmp_path / "work" / "feature_groups_cost.csv")
    assert set(cost["method"]) == {"Var-T-JEPA", "T-JEPA"} and (cost["steps"] > 0).all() and (cost["features"] == 32).all()
    report = (tmp_path / "report.md").read_text()
    assert "| sim:4 | Var-T-JEPA | mlp |" in report
    stamp = (folder / "results.csv").stat().st_mtime_ns
    assert script.main(argv) == 0  # a finished run folder is read, not run again
    assert (folder / "results.csv").stat().st_mtime_ns == stamp
