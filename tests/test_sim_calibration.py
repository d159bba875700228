"""experiments/sim_calibration.py: raw-feature baselines per SIM version, on the benchmark's split."""

import numpy as np
import pandas as pd
import pytest

from pyro_jepa.data import load_dataset
from pyro_jepa.evaluate.downstream import train_xgboost
from tests.test_experiment import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("sim_calibration")


def test_generator_seed_draws_another_table_split_and_preprocessed_the_same_way(script):
    library = load_dataset("sim-v2", seed=0)
    same = load_dataset("sim-v2", seed=0, generator_seed=0)
    other = load_dataset("sim-v2", seed=0, generator_seed=1)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(same, split).raw_features(), getattr(library, split).raw_features())
        assert getattr(other, split).raw_features().shape == getattr(library, split).raw_features().shape
        np.testing.assert_array_equal(np.bincount(getattr(other, split).y.numpy()), np.bincount(getattr(library, split).y.numpy()))
    assert not np.array_equal(other.train.raw_features(), library.train.raw_features())
    data = script.table_splits("sim-v2", 1)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(data[split][0], getattr(other, split).raw_features())
        np.testing.assert_array_equal(data[split][1], getattr(other, split).y.numpy())
        np.testing.assert_array_equal(data[split][2], getattr(other, split).ambiguity.numpy())
    with pytest.raises(ValueError, match="generated SIM tables"):
        load_dataset("adult", generator_seed=1)


def test_calibration_is_written_and_matches_a_direct_fit(script, tmp_path):
    argv = ["--versions", "sim", "--generator-seeds", "0", "--predictors", "xgboost", "--threads", "1", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    results = pd.read_csv(tmp_path / "calibration.csv")
    assert list(results["predictor"]) == ["ceiling (Spearman)", "xgboost"]
    splits = load_dataset("sim", seed=0)
    model = train_xgboost(splits.train.raw_features(), splits.train.y.numpy(), None, None, 3)
    direct = np.mean(model.predict(splits.test.raw_features()) == splits.test.y.numpy())
    assert results.loc[results["predictor"] == "xgboost", "value"].item() == pytest.approx(direct)
    report = (tmp_path / "sim_calibration.md").read_text()
    assert "| sim | xgboost |" in report and "0.949" in report


@pytest.mark.parametrize("bad", [["--predictors", "nope"], ["--versions", "sim-v9"], ["--generator-seeds", "a"], ["--generator-seeds", ","]])
def test_bad_arguments_are_refused(script, bad, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(bad)
    assert "--" in capsys.readouterr().err
