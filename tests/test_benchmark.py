"""The benchmark scripts on a tiny budget: reports, machine-readable files, resume."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_jepa.distributions.mixture_kl import SMOOTHING_GRID

from tests.test_experiment import load_script


def test_benchmark_writes_report_and_resumes_without_recomputing(tmp_path, keep_torch_threads):
    script = load_script("benchmark_tabular")
    out, report = tmp_path / "bench", tmp_path / "tabular.md"
    argv = ["--datasets", "sim", "--max-rows", "300", "--epochs", "1", "--pretrain-seeds", "1", "--downstream-seeds", "2",
            "--predictors", "mlp", "--downstream-epochs", "1", "--threads", "1", "--out", str(out), "--report", str(report)]
    assert script.main(argv) == 0
    runs = (out / "runs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in runs]
    # The downstream MLPs' results depend on torch's thread count: the config and every run row record it.
    assert json.loads((out / "config.json").read_text())["machine"]["threads"] == 1
    assert {r["threads"] for r in records} == {1} and "1 torch thread(s) per run" in report.read_text()
    full = [r for r in records if r["drop"] == 0]
    # raw, T-JEPA, Var-T-JEPA x 2 MLP seeds, plus the tuned XGBoost on raw features
    assert sorted((r["representation"], r["predictor"], r["downstream_seed"]) for r in full) == sorted(
        [(rep, "mlp", s) for rep in ("raw features", "T-JEPA", "Var-T-JEPA") for s in (0, 1)] + [("raw features", "xgboost-tuned", 0)]
    )
    assert {r["drop"] for r in records if r["representation"] == "Var-T-JEPA"} == {0.0, 0.1, 0.2, 0.5}
    # Every selective row names its rule; representations with a latent score get the latent and combined rules too.
    rules = {(r["representation"], r["abstain_by"]) for r in records if r["drop"] > 0}
    assert {rule for rep, rule in rules if rep == "raw features"} == {"max-prob", "entropy", "random"}
    assert {rule for rep, rule in rules if rep == "Var-T-JEPA"} == {"max-prob", "entropy", "random", "latent", "combined", "combined-lrt"}
    risk = [json.loads(line) for line in (out / "risk.jsonl").read_text().splitlines()]
    assert len(risk) == len(full) and all(0 <= r["coverage"] <= 1 and r["target"] > 0 for r in risk)
    scores = pd.DataFrame([json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()])
    assert {"decoder-scale", "predictive-nll", "posterior-q90"} <= set(scores.loc[scores["representation"] == "Var-T-JEPA", "score"])
    assert set(scores.loc[scores["representation"] == "T-JEPA", "score"]) == {"prediction-error"}
    text = report.read_text()
    assert "## sim" in text and "Var-T-JEPA ≥ T-JEPA (accuracy)" in text and "paper" in text
    assert "Goal (Var-T-JEPA, default rule" in text and "## Risk-controlled abstention" in text
    assert "## Which latent score ranks the downstream errors" in text
    # Both combined rules say in how many fits they kept the latent score (2 MLP seeds on 1 pre-training seed).
    assert "combined rule (default); latent kept in" in text and "likelihood-ratio test (the earlier default); latent kept in" in text
    var_row = next(line for line in text.splitlines() if line.startswith("| sim | Var-T-JEPA | 0 |"))
    *_, kl_s_y, smoothing, _ = var_row.split("|")
    assert float(kl_s_y) > 0  # KL s_y at the chosen epoch, from the run's history.csv
    assert float(smoothing) in SMOOTHING_GRID  # the training-kl score's smoothing, fitted on the validation rows
    summary = pd.read_csv(report.with_suffix(".csv"))
    assert (summary.loc[summary["drop"] == 0, "runs"].isin([1, 2])).all()
    embeddings = sorted(p.name for p in (out / "embeddings" / "sim").iterdir())
    assert embeddings == ["t-jepa-seed0.npz", "var-t-jepa-seed0.npz"]

    stamp = (out / "embeddings" / "sim" / "var-t-jepa-seed0.npz").stat().st_mtime_ns
    assert script.main(argv) == 0
    assert (out / "runs.jsonl").read_text().splitlines() == runs, "finished cells were recomputed"
    assert (out / "embeddings" / "sim" / "var-t-jepa-seed0.npz").stat().st_mtime_ns == stamp


def test_uncertainty_experiment_writes_figure3_table(tmp_path, capsys):
    script = load_script("uncertainty")
    out, report = tmp_path / "unc", tmp_path / "uncertainty.md"
    argv = ["--datasets", "sim", "--max-rows", "300", "--epochs", "2", "--probe-epochs", "2", "--masks", "2", "--seeds", "0,1",
            "--variants", "paper,hetero", "--default-variant", "paper", "--lr", "4e-3", "--set", "dim=16", "--out", str(out),
            "--report", str(report), "--no-progress"]
    assert script.main(argv) == 0
    # --set changes the model config of every pre-training (the CPU preset's width is 32) and is recorded
    weights = torch.load(out / "checkpoints" / "sim" / "hetero" / "var-t-jepa-seed1" / "best.pt", weights_only=True)["method"]
    assert {value.shape[-1] for key, value in weights.items() if key.endswith(".cls")} == {16}
    assert json.loads((out / "config.json").read_text())["args"]["model_set"] == {"dim": 16}
    # --lr replaces the preset's rate (1e-3): the warm-up climbs past it
    history = pd.read_csv(out / "checkpoints" / "sim" / "paper" / "var-t-jepa-seed0" / "history.csv")
    assert 1e-3 < history["lr"].max() <= 4e-3
    results = pd.read_csv(out / "results.csv")
    assert set(results["seed"]) == {0, 1} and set(results["variant"]) == {"paper", "hetero", "-"}
    hetero = set(results.loc[results["variant"] == "hetero", "score"])
    assert {"posterior-q90", "prior-std", "predictive-nll", "predictive-scale", "decoder-scale"} <= hetero
    assert "prediction-error" in set(results["score"]) and "k-means margin (raw, label-free)" in set(results["score"])
    assert results[["spearman"]].abs().le(1).all().all() and results[["roc_auc", "aurc"]].stack().between(0, 1).all()
    # AURC can never beat the oracle ranking of the same probe's errors; the ceiling is one number per seed.
    assert (results["aurc"] >= results["oracle_aurc"] - 1e-12).all()
    assert results.groupby("seed")["ceiling_spearman"].nunique().eq(1).all()
    selective = pd.read_csv(out / "selective.csv")
    assert {"combined (fitted on validation)", "random"} <= set(selective["score"])
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 * 3 and (runs["steps"] >= runs["warmup_steps"]).all()  # 2 seeds x (2 variants + T-JEPA)
    assert (out / "figure3_sim.png").stat().st_size > 0 and (tmp_path / "uncertainty_figure3_sim.png").exists()
    text = report.read_text()
    assert "| Var-T-JEPA | paper | posterior-q90 |" in text and "0.640" in text  # the paper's SIM Spearman beside ours
    assert "Supervised ceiling" in text and "Goal (default score" in text
    # checkpoints trained with other model fields are refused, with the advice that fits this script
    argv[argv.index("dim=16")] = "dim=8"
    argv[argv.index(str(out))] = str(tmp_path / "unc-dim8")
    argv += ["--checkpoints", str(out / "checkpoints")]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert "model.dim: 16 when started, 8 now" in err and "point --checkpoints at another folder" in err


def test_smoothing_ablation_reports_every_width_and_the_fitted_one(tmp_path):
    out = tmp_path / "smoothing"
    argv = ["--datasets", "sim", "--max-rows", "300", "--epochs", "2", "--seeds", "0", "--checkpoints", str(tmp_path / "ck"),
            "--threads", "1", "--out", str(out)]
    assert load_script("training_kl_smoothing").main(argv) == 0
    results = pd.read_csv(out / "smoothing.csv")
    assert list(results["width"]) == list(SMOOTHING_GRID)
    fitted = results[results["fitted"]]
    assert len(fitted) == 1 and fitted["validation_mean_kl"].iloc[0] == results["validation_mean_kl"].min()
    assert results["spearman"].abs().le(1).all() and results[["roc_auc", "within_class_roc_auc"]].stack().between(0, 1).all()
    assert "fitted width (default)" in (out / "smoothing.md").read_text() and (out / "smoothing.png").stat().st_size > 0
    forms = pd.read_csv(out / "forms.csv").set_index("score")
    assert len(forms) == 5 and forms[["roc_auc"]].stack().between(0, 1).all()
    # The fitted width's row of the width table is training-kl's row of the forms.
    assert np.isclose(forms.loc["training-kl (fitted width)", "spearman"], fitted["spearman"].iloc[0])
    assert "−ELBO, unit weights" in (out / "smoothing.md").read_text()
    # --widths: the same models, the width fitted again over the given widths (here beyond the default grid)
    argv[argv.index("--out") + 1] = str(tmp_path / "smoothing-wide")
    assert load_script("training_kl_smoothing").main([*argv, "--widths", "64,0,2"]) == 0
    wide = pd.read_csv(tmp_path / "smoothing-wide" / "smoothing.csv")
    assert list(wide["width"]) == [0.0, 2.0, 64.0] and wide["fitted"].sum() == 1
    assert wide.loc[wide["fitted"], "validation_mean_kl"].iloc[0] == wide["validation_mean_kl"].min()
    assert wide.set_index("width").loc[2.0, "validation_mean_kl"] == pytest.approx(results.set_index("width").loc[2.0, "validation_mean_kl"])
    wide_forms = pd.read_csv(tmp_path / "smoothing-wide" / "forms.csv").set_index("score")
    assert np.isclose(wide_forms.loc["training-kl (fitted width)", "spearman"], wide.loc[wide["fitted"], "spearman"].iloc[0])
    argv[argv.index("--out") + 1] = str(tmp_path / "smoothing-hetero")
    # --variant reads (or trains) that variant's runs, beside the default's
    assert load_script("training_kl_smoothing").main([*argv, "--variant", "hetero"]) == 0
    assert (tmp_path / "ck" / "sim" / "hetero" / "var-t-jepa-seed0" / "best.pt").is_file()
    assert json.loads((tmp_path / "smoothing-hetero" / "config.json").read_text())["args"]["variant"] == "hetero"


def test_benchmark_refuses_zero_threads(capsys):
    with pytest.raises(SystemExit) as info:
        load_script("benchmark_tabular").parse_args(["--threads", "0"])
    assert info.value.code == 2 and "--threads must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("widths", ["-1", "a,2", ","])
def test_smoothing_ablation_refuses_bad_widths(widths, capsys):
    with pytest.raises(SystemExit):
        load_script("training_kl_smoothing").parse_args(["--checkpoints", "ck", "--widths", widths])
    assert "widths must be" in capsys.readouterr().err


@pytest.mark.parametrize("lr", ["0", "-1", "nan"])
def test_uncertainty_experiment_refuses_a_bad_learning_rate(lr, capsys):
    with pytest.raises(SystemExit):
        load_script("uncertainty").parse_args(["--lr", lr])
    assert f"--lr must be a positive number, got {float(lr)}" in capsys.readouterr().err


@pytest.mark.parametrize("item, message", [
    ("dim", "expected FIELD=VALUE"), ("dim=wide", "dim takes a int, got 'wide'"), ("width=64", "TabularJEPAConfig has no field 'width'"),
    ("context_ratio=0.5", "context_ratio is a tuple, which this option cannot set"), ("elbo=exact", "elbo must be 'trace' or 'meanfield'"),
])
def test_uncertainty_experiment_refuses_a_bad_set(item, message, capsys):
    with pytest.raises(SystemExit):
        load_script("uncertainty").parse_args(["--set", item])
    assert message in capsys.readouterr().err


def test_uncertainty_experiment_kmeans_margin_by_hand():
    script = load_script("uncertainty")
    rng = np.random.default_rng(0)
    # Two tight clusters: rows at a centre have margin ~0, the midpoint margin 1.
    centres = np.array([[-5.0, -5.0], [5.0, 5.0]])
    train = np.concatenate([c + 0.01 * rng.normal(size=(50, 2)) for c in centres])
    margin = script.kmeans_margin({"train": train, "test": np.array([[-5.0, -5.0], [0.0, 0.0]])}, 2, seed=0)
    assert margin[0] < 0.01 and margin[1] == pytest.approx(1.0, abs=0.01)
