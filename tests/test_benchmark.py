"""The tabular benchmark script on a tiny budget: report, machine-readable files, resume."""

import json

import pandas as pd

from tests.test_experiment import load_script


def test_benchmark_writes_report_and_resumes_without_recomputing(tmp_path):
    script = load_script("benchmark_tabular")
    out, report = tmp_path / "bench", tmp_path / "tabular.md"
    argv = ["--datasets", "sim", "--max-rows", "300", "--epochs", "1", "--pretrain-seeds", "1", "--downstream-seeds", "2",
            "--predictors", "mlp", "--downstream-epochs", "1", "--out", str(out), "--report", str(report)]
    assert script.main(argv) == 0
    runs = (out / "runs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in runs]
    full = [r for r in records if r["drop"] == 0]
    # raw, T-JEPA, Var-T-JEPA x 2 MLP seeds, plus the tuned XGBoost on raw features
    assert sorted((r["representation"], r["predictor"], r["downstream_seed"]) for r in full) == sorted(
        [(rep, "mlp", s) for rep in ("raw features", "T-JEPA", "Var-T-JEPA") for s in (0, 1)] + [("raw features", "xgboost-tuned", 0)]
    )
    assert {r["drop"] for r in records if r["representation"] == "Var-T-JEPA"} == {0.0, 0.1, 0.2, 0.5}
    text = report.read_text()
    assert "## sim" in text and "Var-T-JEPA ≥ T-JEPA (accuracy)" in text and "paper" in text
    summary = pd.read_csv(report.with_suffix(".csv"))
    assert (summary.loc[summary["drop"] == 0, "runs"].isin([1, 2])).all()
    embeddings = sorted(p.name for p in (out / "embeddings" / "sim").iterdir())
    assert embeddings == ["t-jepa-seed0.npz", "var-t-jepa-seed0.npz"]

    stamp = (out / "embeddings" / "sim" / "var-t-jepa-seed0.npz").stat().st_mtime_ns
    assert script.main(argv) == 0
    assert (out / "runs.jsonl").read_text().splitlines() == runs, "finished cells were recomputed"
    assert (out / "embeddings" / "sim" / "var-t-jepa-seed0.npz").stat().st_mtime_ns == stamp
