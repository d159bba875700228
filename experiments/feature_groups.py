"""Feature groups on a wide table: accuracy and cost of ``--group-size`` on the 784-pixel MNIST table.

    python experiments/feature_groups.py --data-dir ../shared/data                  # CPU: 9 runs of ~12 min
    python experiments/feature_groups.py --data-dir DATA --settings mnist:16,mnist:4 --seeds 0,1,2

Every setting ``DATASET:G`` runs the main job (`experiments/var_t_jepa.py`, cpu preset unless
``--preset``) on ``DATASET`` with ``--group-size G`` once per seed, each in its own run folder
under ``--out``; the default settings compare 784 pixels in 49 tokens of 16 (``mnist:16``) and in 28
tokens of one image row (``mnist:28``) with the 7x7-pooled table at one token per pixel
(``mnist-7x7:1``, 49 tokens: the CPU stand-in the other benchmarks use). One token per pixel on 784
features (``mnist:1``) is a GPU job: about a minute per step on 2 CPU cores.

The report gives the downstream test accuracy and macro-F1 (no abstention) of every representation
and predictor as mean ± std over the seeds, with the optimizer steps and pre-training seconds per
method. Finished run folders are reused: rerun the same command to continue after an interruption.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

from pyro_jepa import cli, io
from pyro_jepa.evaluate.aggregate import format_mean_std, summarize_runs
from pyro_jepa.pipeline import METHODS
from pyro_jepa.presets import PRESETS
from pyro_jepa.report import markdown_table

MAIN_JOB = Path(__file__).with_name("var_t_jepa.py")
ROOT = MAIN_JOB.parents[1]
DEFAULT_SETTINGS = "mnist:16,mnist:28,mnist-7x7:1"


def parse_settings(text: str) -> list[tuple[str, int]]:
    """``"mnist:16,mnist-7x7:1"`` -> ``[("mnist", 16), ("mnist-7x7", 1)]``; ValueError naming a bad item."""
    settings = []
    for item in cli.split_names(text) or []:
        dataset, _, group = item.strip().rpartition(":")
        if not dataset or not group.isdigit() or int(group) < 1:
            raise ValueError(f"--settings: {item!r} is not DATASET:GROUP_SIZE with a group size >= 1")
        settings.append((dataset, int(group)))
    if not settings:
        raise ValueError("--settings names no setting")
    return settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"comma-separated DATASET:GROUP_SIZE (default {DEFAULT_SETTINGS})")
    p.add_argument("--seeds", type=cli.int_list, default="0,1,2", help="comma-separated seeds, one main-job run per setting and seed (default 0,1,2)")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets")
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--epochs", type=int, help="override the preset's pre-training epochs")
    p.add_argument("--max-rows", type=int, help="stratified subsample of the table before splitting")
    p.add_argument("--predictors", default="mlp,xgboost", help="downstream predictors (default mlp,xgboost)")
    p.add_argument("--threads", type=int, help="torch CPU threads of each run (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("runs/feature-groups"), help="work folder: one run folder per setting and seed")
    p.add_argument("--report", type=Path, default=Path("docs/results/feature_groups.md"), help="Markdown report to write")
    args = p.parse_args(argv)
    try:
        args.settings = parse_settings(args.settings)
    except ValueError as err:
        p.error(str(err))
    return args


def run_folder(out: Path, dataset: str, group: int, seed: int) -> Path:
    return out / f"{dataset}-g{group}-s{seed}"


def main_job_command(args: argparse.Namespace, dataset: str, group: int, seed: int, folder: Path) -> list[str]:
    """The main job's command line for one run; ``--resume`` continues a folder left unfinished."""
    command = [sys.executable, str(MAIN_JOB), "--dataset", dataset, "--group-size", str(group), "--seed", str(seed),
               "--preset", args.preset, "--predictors", args.predictors, "--out", str(folder), "--no-progress"]
    for flag in ("data_dir", "epochs", "max_rows"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if folder.exists():
        command.append("--resume")
    return command


def collect(folder: Path, dataset: str, group: int, seed: int) -> tuple[pd.DataFrame, list[dict]]:
    """A finished run folder's downstream results (no abstention) and its methods' pre-training cost."""
    results = pd.read_csv(folder / "results.csv")
    results = results[results["drop"] == 0].assign(setting=f"{dataset}:{group}", seed=seed)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    key_of = {method.name: key for key, method in METHODS.items()}
    cost = []
    for method, info in metrics["methods"].items():
        steps = int(pd.read_csv(folder / "checkpoints" / key_of[method] / "history.csv")["step"].iloc[-1])
        cost.append({"setting": f"{dataset}:{group}", "seed": seed, "method": method, "steps": steps,
                     "best_epoch": info["best_epoch"], "pretrain_seconds": info["pretrain_seconds"],
                     "seconds_per_step": info["pretrain_seconds"] / steps,
                     "features": len(config["dataset"]["numerical"]) + len(config["dataset"]["categorical"])})
    return results, cost


def report(args: argparse.Namespace, results: pd.DataFrame, cost: pd.DataFrame, command: str) -> str:
    # one run per seed and cell; the setting (dataset and group size) is the cell's dataset
    summary = summarize_runs(results.assign(dataset=results["setting"])).rename(columns={"dataset": "setting", "runs": "seeds"})
    for metric in ("accuracy", "macro_f1"):
        summary[metric] = [format_mean_std(m, s) for m, s in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"])]
    summary = summary[["setting", "representation", "predictor", "accuracy", "macro_f1", "seeds"]]
    steps = (
        cost.groupby(["setting", "method"], sort=False)
        .agg(features=("features", "first"), steps=("steps", "median"), best_epoch=("best_epoch", list),
             seconds_per_step=("seconds_per_step", "median"), pretrain_seconds=("pretrain_seconds", "median"))
        .reset_index()
    )
    steps["steps"] = steps["steps"].map(lambda n: f"{n:.0f}")
    steps["seconds_per_step"] = steps["seconds_per_step"].map(lambda s: f"{s:.2f}")
    steps["pretrain_seconds"] = steps["pretrain_seconds"].map(lambda s: f"{s:.0f}")
    return (
        "# Feature groups on a wide table (784-pixel MNIST)\n\n"
        f"Command: `{command}`; preset `{args.preset}`, "
        f"seeds {', '.join(map(str, args.seeds))}; {args.threads or 'the default number of'} torch threads per run on "
        f"{platform.machine()} ({os.cpu_count()} cores). "
        "A setting `DATASET:G` is the main job (`experiments/var_t_jepa.py`) with `--group-size G`; its run folders are "
        f"under `{args.out}`.\n\n"
        "## Downstream test accuracy and macro-F1 (mean ± std over seeds, no abstention)\n\n"
        f"{markdown_table(summary)}\n\n"
        "## Pre-training cost per method (median over seeds; seconds per step include validation)\n\n"
        f"{markdown_table(steps)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # The runs use this checkout's library, installed or not.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = os.environ | {"PYTHONPATH": path} | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    all_results, all_cost = [], []
    for dataset, group in args.settings:
        for seed in args.seeds:
            folder = run_folder(args.out, dataset, group, seed)
            if not (folder / "metrics.json").exists():
                command = main_job_command(args, dataset, group, seed, folder)
                print("$ " + " ".join(command), flush=True)
                done = subprocess.run(command, env=env)
                if done.returncode != 0:
                    raise RuntimeError(f"the main job failed (exit {done.returncode}) for {dataset}:{group} seed {seed}; "
                                       f"its run folder is {folder}; rerun this command to continue")
            results, cost = collect(folder, dataset, group, seed)
            all_results.append(results)
            all_cost += cost
    results, cost = pd.concat(all_results, ignore_index=True), pd.DataFrame(all_cost)
    io.write_csv(results, args.out / "feature_groups.csv")
    io.write_csv(cost, args.out / "feature_groups_cost.csv")
    text = report(args, results, cost, cli.command_line("experiments/feature_groups.py", argv))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(args.report, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
