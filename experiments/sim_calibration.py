"""Calibrate SIM against the paper's raw-feature baselines: test accuracy of raw-feature predictors and
the supervised ceiling of per-row scores, for each SIM version and several generator seeds.

    python experiments/sim_calibration.py                                    # ~3 min on 2 CPU cores
    python experiments/sim_calibration.py --versions sim --generator-seeds 0 --predictors xgboost

The library's SIM table is generator seed 0 (`pyro_jepa.data.loaders.GENERATION_SEED`); the other
seeds show how much a table of the same description varies. Each table gets the benchmark's split
(70/10/20, split seed 0) and preprocessing, and each predictor the benchmark's settings
(`pyro_jepa.evaluate.downstream`, downstream seed 0). *Ceiling*: Spearman of a gradient-boosting
regressor trained on u (`supervised_ceiling`). Writes ``calibration.csv`` and a Markdown report.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xgboost

from pyro_jepa import cli, io
from pyro_jepa.data import SIM_VERSIONS, load_dataset
from pyro_jepa.evaluate.ambiguity import supervised_ceiling
from pyro_jepa.evaluate.downstream import PREDICTORS, fit_predict
from pyro_jepa.report import markdown_table

# The paper's raw-feature test accuracy on SIM (Var-JEPA Table 2).
PAPER = {"mlp": 0.823, "dcnv2": 0.714, "resnet": 0.878, "autoint": 0.897, "ft-transformer": 0.962, "xgboost": 0.949}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--versions", default="sim,sim-v2", help=f"SIM datasets, a subset of {sorted(SIM_VERSIONS)} (default sim,sim-v2)")
    p.add_argument("--generator-seeds", type=cli.int_list, default="0,1,2,3,4", help="generator seeds of the tables (default 0,1,2,3,4)")
    p.add_argument("--predictors", default="linear,mlp,resnet,xgboost", help=f"raw-feature predictors, a subset of {sorted(PREDICTORS)}")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", type=Path, default=Path("runs/sim-calibration"), help="folder for calibration.csv")
    p.add_argument("--report", type=Path, help="Markdown report (default OUT/sim_calibration.md)")
    args = p.parse_args(argv)
    args.versions = cli.split_names(args.versions) or []
    args.predictors = cli.split_names(args.predictors) or []
    for what, names, known in (("versions", args.versions, SIM_VERSIONS), ("predictors", args.predictors, PREDICTORS)):
        if not names or set(names) - set(known):
            p.error(f"--{what} must name some of {sorted(known)}, got {names}")
    args.report = args.report or args.out / "sim_calibration.md"
    return args


def table_splits(version: str, generator_seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{split: (raw features, class ids, u)}`` of one generated table, split and preprocessed by
    `load_dataset` (the library's SIM is generator seed 0)."""
    splits = load_dataset(version, generator_seed=generator_seed)
    data = dict(zip(("train", "val", "test"), (splits.train, splits.val, splits.test)))
    return {split: (d.raw_features(), d.y.numpy(), d.ambiguity.numpy()) for split, d in data.items()}


def calibrate(args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for version in args.versions:
        for seed in args.generator_seeds:
            data = table_splits(version, seed)
            features = tuple(data[s][0] for s in ("train", "val", "test"))
            y_test = data["test"][1]
            ceiling = supervised_ceiling(data["train"][0], data["train"][2], data["test"][0], data["test"][2])["spearman"]
            rows.append({"version": version, "generator_seed": seed, "predictor": "ceiling (Spearman)", "value": ceiling, "seconds": np.nan})
            for predictor in args.predictors:
                started = time.perf_counter()
                _, proba = fit_predict(predictor, features, data["train"][1], data["val"][1], 3, seed=0)
                accuracy = float(np.mean(proba.argmax(1) == y_test))
                rows.append({"version": version, "generator_seed": seed, "predictor": predictor, "value": accuracy,
                             "seconds": time.perf_counter() - started})
                print(f"{version} seed {seed} {predictor}: {accuracy:.4f}", flush=True)
    return pd.DataFrame(rows)


def report(results: pd.DataFrame, command: str) -> str:
    seeds = sorted(results["generator_seed"].unique())
    grouped = results.groupby(["version", "predictor"], sort=False)["value"]
    table = pd.DataFrame({
        "library table (seed 0)": results[results["generator_seed"] == 0].set_index(["version", "predictor"])["value"]
        if 0 in seeds else np.nan,
        f"mean ± std over seeds {', '.join(map(str, seeds))}": grouped.apply(lambda v: f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"),
        "min": grouped.min(),
        "max": grouped.max(),
    })
    table["paper"] = [f"{PAPER[p]:.3f}" if p in PAPER else "–" for _, p in table.index]
    table = table.reset_index()
    return "\n".join([
        "# SIM calibration: raw-feature baselines and the supervised ceiling per SIM version", "",
        f"Made by `{command}` on {platform.node() or 'this machine'} ({os.cpu_count()} CPU cores, {torch.get_num_threads()} torch "
        f"threads; Python {platform.python_version()}, torch {torch.__version__}, xgboost {xgboost.__version__}).", "",
        "Test accuracy of each raw-feature predictor (benchmark settings, downstream seed 0) and the Spearman of a "
        "regressor trained on u (*ceiling*), for tables drawn with several generator seeds; the library uses seed 0. "
        "*Paper*: Var-JEPA Table 2, raw features on SIM.", "",
        markdown_table(table, floats="{:.3f}"), "",
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = cli.command_line("experiments/sim_calibration.py", argv)
    results = calibrate(args)
    args.out.mkdir(parents=True, exist_ok=True)
    io.write_csv(results, args.out / "calibration.csv")
    text = report(results, command)
    io.write_text(args.report, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
