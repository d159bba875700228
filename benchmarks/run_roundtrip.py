"""Check that a main-job run, used again through ``python -m pyro_jepa``, gives back what the run computed.

    python benchmarks/run_roundtrip.py RUN --work /tmp/roundtrip

Rebuilds the run's test and validation rows from its config.json (SIM or a named dataset, with the
run's seed and --max-rows), writes them as CSV files, and runs ``embed`` and ``predict`` (once per
saved predictor) on them in fresh processes. Compares:

* the test embeddings and uncertainty scores with those of the run's model applied, in this process,
  to the run's own preprocessed test split (max absolute difference);
* the validation rows' uncertainty with the scores the run saved in calibration.json;
* each predictor's test accuracy with the run's results.csv (must be equal, not close).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pyro_jepa import cli
from pyro_jepa.data import load_dataset, make_sim
from pyro_jepa.data.loaders import GENERATION_SEED, _read_named
from pyro_jepa.data.registry import DATASETS, find_dataset_file
from pyro_jepa.run import load_run


def source_table(name: str, data_dir: str | None) -> pd.DataFrame:
    """The whole table a run of the main job on dataset ``name`` was split from."""
    if name == "sim":
        return make_sim(seed=GENERATION_SEED)
    return _read_named(DATASETS[name], find_dataset_file(name, data_dir))


def cli_run(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pyro_jepa", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python -m pyro_jepa {' '.join(argv)} failed:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished run folder of experiments/var_t_jepa.py")
    p.add_argument("--work", type=Path, required=True, help="folder for the CSV inputs and outputs")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = json.loads((args.run / "config.json").read_text())
    run_args = config["args"]
    if run_args["data"] is not None:
        raise ValueError("this check rebuilds SIM or a named dataset; the run used --data")
    splits = load_dataset(run_args["dataset"], data_dir=run_args["data_dir"], seed=run_args["seed"], max_rows=run_args["max_rows"],
                          numerical=run_args["numerical"], categorical=run_args["categorical"], drop=run_args["drop"] or ())
    table = source_table(run_args["dataset"], run_args["data_dir"])
    args.work.mkdir(parents=True, exist_ok=True)
    for split in ("test", "val"):
        table.iloc[splits.source_rows[split]].to_csv(args.work / f"{split}.csv", index=False)
    reported = pd.read_csv(args.run / "results.csv").query("drop == 0").set_index(["representation", "predictor"])["accuracy"]
    labels = table.iloc[splits.source_rows["test"]][splits.schema.label].astype(str).to_numpy()
    common = ["--threads", str(args.threads), "--no-progress", "--overwrite"]
    for method in run_args["methods"]:
        loaded = load_run(args.run, method)
        cli_run(["embed", str(args.run), "--method", method, "--data", str(args.work / "test.csv"),
                 "--out", str(args.work / f"emb-{method}.parquet"), *common])
        emb = pd.read_parquet(args.work / f"emb-{method}.parquet")
        with torch.no_grad():
            expected = loaded.method.embed(splits.test.rows).flatten(1).numpy()
            print(f"{method}: test embeddings, max |fresh process - run's model on the run's split| = "
                  f"{np.abs(emb[loaded.embedding_names].to_numpy() - expected).max():.3g} ({expected.shape[0]} rows x {expected.shape[1]})")
            if loaded.score is not None:
                scores = loaded.method.scores(splits.test.rows, [loaded.score])[loaded.score].numpy()
                print(f"{method}: test uncertainty ({loaded.score}), max difference {np.abs(emb['uncertainty'].to_numpy() - scores).max():.3g}")
        if loaded.score is not None:
            cli_run(["embed", str(args.run), "--method", method, "--data", str(args.work / "val.csv"),
                     "--out", str(args.work / f"val-{method}.parquet"), *common])
            fresh = pd.read_parquet(args.work / f"val-{method}.parquet")["uncertainty"].to_numpy()
            print(f"{method}: validation uncertainty vs the run's calibration.json, max difference "
                  f"{np.abs(fresh - loaded.calibration.scores).max():.3g} ({len(fresh)} rows)")
        for predictor in loaded.predictors:
            out = args.work / f"pred-{method}-{predictor}.csv"
            cli_run(["predict", str(args.run), "--method", method, "--predictor", predictor, "--data", str(args.work / "test.csv"),
                     "--out", str(out), *common])
            accuracy = float((pd.read_csv(out, dtype={"prediction": str})["prediction"].to_numpy() == labels).mean())
            run_accuracy = float(reported[(loaded.method.name, predictor)])
            verdict = "equal" if accuracy == run_accuracy else "DIFFERENT"
            print(f"{method} + {predictor}: test accuracy {accuracy:.4f} from the fresh process, {run_accuracy:.4f} in results.csv: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
