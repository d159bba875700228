"""Does Var-T-JEPA's latent uncertainty track real ambiguity? Var-JEPA Figure 3, measured.

    python experiments/uncertainty.py --data-dir ../shared/data

On corrupted MNIST (lambda = 0.75) and SIM the true per-row ambiguity u is known. For each
dataset this pre-trains Var-T-JEPA and T-JEPA on the training split (keeping the epoch with the
best validation loss: labels should not pick the model whose uncertainty is judged), fits a linear
probe on each representation (standardized, early-stopped on the validation split) and scores
every test row by several uncertainty scores:

* Var-T-JEPA latent uncertainty: the posterior stds of s_w aggregated by their 90th percentile
  (the paper's choice for these datasets), their mean, and the entropy of the diagonal Gaussian;
* Var-T-JEPA's learned conditional prior (the predictor): its std at hidden features;
* T-JEPA, which has no posterior: the predictor's squared error on its own masked-feature task;
* for reference, the probe's predictive entropy (it uses the labels, the latent scores do not),
  and a label-free score on raw features: the k-means margin (nearest over second-nearest centre).

For each score: AURC of abstaining by it (risk = the probe's test error), Spearman with u, and
ROC AUC for detecting u >= q75, beside the paper's numbers. Writes ``results.csv``,
``config.json`` and a Figure-3 PNG per dataset into ``--out`` and the Markdown report
``--report`` (figures copied beside it). Reruns resume finished pre-training.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from pyro_jepa.data import load_dataset
from pyro_jepa.evaluate import PREDICTORS, DownstreamConfig
from pyro_jepa import cli, io
from pyro_jepa.io import write_json
from pyro_jepa.pipeline import pretrain, representations
from pyro_jepa.presets import PRESETS, SETTINGS_OF, make_preset
from pyro_jepa.train import resolve_device
from pyro_jepa.evaluate import ambiguity_scores, aurc
from pyro_jepa.models import SCORES, row_uncertainty
from pyro_jepa.uncertainty import plot_figure3, plot_uncertainty

DATASETS = ("mnist", "mnist-7x7", "sim")
# On a CPU, a transformer over MNIST's 784 pixel tokens is too slow; the cpu preset takes the 7x7 stand-in.
DEFAULT_DATASETS = {"cpu": "mnist-7x7,sim", "paper": "mnist,sim"}
PAPER_SCORE = "q90"  # Var-JEPA aggregates posterior stds by their 90th percentile on MNIST and SIM
# Var-JEPA Figure 3 (numbers printed in its panels).
PAPER = {"mnist": {"aurc": 0.123, "spearman": 0.949, "roc_auc": 0.986}, "sim": {"aurc": 0.209, "spearman": 0.640, "roc_auc": 0.805}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", help=f"comma-separated subset of {DATASETS} (default: {DEFAULT_DATASETS} by preset)")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets (MNIST's mnist_10k.npz)")
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--epochs", type=int, help="override the preset's pre-training epochs")
    p.add_argument("--max-rows", type=int, help="stratified subsample of each table (default: all rows, 10,000)")
    p.add_argument("--select", choices=("loss", "probe"), default="loss",
                   help="best pre-training epoch by validation loss (label-free, default) or by a ridge probe's accuracy")
    p.add_argument("--probe-epochs", type=int, default=50, help="linear-probe epochs (early-stopped on validation)")
    p.add_argument("--masks", type=int, default=8, help="mask draws per row for T-JEPA's prediction error")
    p.add_argument("--seed", type=int, default=0, help="fixes the split, the pre-training and the probe")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("runs/uncertainty"), help="work folder (reruns resume it)")
    p.add_argument("--report", type=Path, default=Path("docs/results/uncertainty.md"), help="Markdown report to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.datasets = [d for d in (args.datasets or DEFAULT_DATASETS[args.preset]).split(",") if d]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown or not args.datasets:
        p.error(f"--datasets must name some of {DATASETS} (rows with a known ambiguity u), got {unknown or 'none'}")
    return args


def probe_errors(features: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int, config: DownstreamConfig,
                 seed: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Test-row 0/1 errors of a linear probe and its predictive entropy (nats)."""
    probe = PREDICTORS["linear"](features["train"], y["train"], features["val"], y["val"], n_classes, config, seed, device=device)
    proba = probe.predict_proba(features["test"])
    errors = (proba.argmax(1) != y["test"]).astype(np.float64)
    return errors, -(proba * np.log(np.clip(proba, 1e-12, None))).sum(1)


def kmeans_margin(raw: dict[str, np.ndarray], k: int, seed: int) -> np.ndarray:
    """A label-free ambiguity score on raw features: distance to the nearest of k training-set
    k-means centres over the distance to the second nearest (1 = exactly between two clusters)."""
    scaler = StandardScaler().fit(raw["train"])
    kmeans = KMeans(k, n_init=5, random_state=seed).fit(scaler.transform(raw["train"]))
    distances = np.sort(kmeans.transform(scaler.transform(raw["test"])), axis=1)
    return distances[:, 0] / np.maximum(distances[:, 1], 1e-12)


def max_abs_entry_spearman(scale: np.ndarray, ambiguity: np.ndarray) -> float:
    """The largest |Spearman| between u and any single posterior-std entry ``scale[:, j]``: no
    aggregate of the entries can track u if none of them does."""
    ranks = pd.DataFrame(scale).rank().to_numpy()
    ranks = (ranks - ranks.mean(0)) / np.maximum(ranks.std(0), 1e-12)
    u = pd.Series(ambiguity).rank().to_numpy()
    u = (u - u.mean()) / u.std()
    return float(np.abs(ranks.T @ u / len(u)).max())


def run_dataset(args: argparse.Namespace, name: str, device: str) -> tuple[pd.DataFrame, dict]:
    started = time.perf_counter()
    splits = load_dataset(name, data_dir=args.data_dir, seed=args.seed, max_rows=args.max_rows)
    if splits.test.ambiguity is None:
        raise ValueError(f"{name} has no ground-truth ambiguity column")
    model_config, train_config = make_preset(args.preset, name, len(splits.train))
    train_config = replace(train_config, seed=args.seed, device=device, progress=not args.no_progress, select=args.select,
                           **({"epochs": args.epochs} if args.epochs else {}))
    y = {s: getattr(splits, s).y.cpu().numpy() for s in ("train", "val", "test")}
    u = splits.test.ambiguity.cpu().numpy()
    test_rows = splits.test.rows.to(device)
    probe_config = DownstreamConfig(epochs=args.probe_epochs, lr=1e-2)  # the paper's linear-probe learning rate
    # (representation, score name) -> (per-row score, errors of that representation's probe)
    scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    info = {"rows": {s: len(getattr(splits, s)) for s in ("train", "val", "test")}, "model": model_config, "train": train_config}
    for method, label in (("var-t-jepa", "Var-T-JEPA"), ("t-jepa", "T-JEPA")):
        model, fit = pretrain(method, splits, model_config, train_config, args.out / "checkpoints" / name / method, resume=True)
        model.eval()
        errors, entropy = probe_errors(representations(model, splits), y, splits.schema.n_classes, probe_config, args.seed, device)
        # Summed over the epochs in the history, so a resumed run reports its whole training time.
        seconds = sum(row["seconds"] for row in fit.history)
        info[label] = {"pretrain_seconds": seconds, "best_epoch": fit.best_epoch, "probe_accuracy": 1 - errors.mean()}
        if method == "var-t-jepa":
            scale = model.uncertainty(test_rows)
            for how in SCORES:
                score = row_uncertainty(scale, how).cpu().numpy()
                scores[(label, f"posterior std, {how}" + (" (paper)" if how == PAPER_SCORE else ""))] = (score, errors)
            prior = model.prior_uncertainty(test_rows, n_masks=args.masks).cpu().numpy()
            scores[(label, "conditional-prior std")] = (prior, errors)
            info[label]["max_abs_entry_spearman"] = max_abs_entry_spearman(scale.flatten(1).cpu().numpy(), u)
            paper_score = scores[(label, f"posterior std, {PAPER_SCORE} (paper)")][0]
            plot_uncertainty(paper_score, y["test"], splits.schema.classes, u, args.out / f"uncertainty_by_class_{name}.png")
        else:
            scores[(label, "predictor error")] = (model.prediction_error(test_rows, n_masks=args.masks).cpu().numpy(), errors)
        scores[(label, "probe entropy (uses labels)")] = (entropy, errors)
    raw = {s: getattr(splits, s).raw_features() for s in ("train", "val", "test")}
    errors, _ = probe_errors(raw, y, splits.schema.n_classes, probe_config, args.seed, device)
    scores[("raw features", "k-means margin")] = (kmeans_margin(raw, splits.schema.n_classes, args.seed), errors)

    rows = []
    for (representation, score_name), (score, errors) in scores.items():
        rows.append({"dataset": name, "representation": representation, "score": score_name,
                     **ambiguity_scores(score, u, errors), "probe_error": errors.mean(), "oracle_aurc": aurc(errors, errors)})
    figure = args.out / f"figure3_{name}.png"
    plot_figure3(u, {f"{r}: {s}": v for (r, s), v in scores.items()}, figure,
                 title=f"{name}: uncertainty scores vs true ambiguity u (test rows)")
    info["seconds"] = time.perf_counter() - started
    return pd.DataFrame(rows), info


def report(args, results: pd.DataFrame, infos: dict, command: str, device: str) -> str:
    lines = [
        "# Latent uncertainty vs true ambiguity (Var-JEPA Figure 3)",
        "",
        f"Made by `{command}` on {platform.node() or 'this machine'} ({os.cpu_count()} CPU cores, "
        f"{'CUDA' if device.startswith('cuda') else 'no GPU'}; Python {platform.python_version()}, torch {torch.__version__}).",
        "",
        "Protocol: 70/10/20 split; both methods pre-trained on the training split only, the epoch kept chosen by "
        + ("validation loss (Var-T-JEPA: the weighted negative ELBO; label-free)" if args.select == "loss" else "a ridge probe's validation accuracy (uses labels)")
        + "; a linear probe on each standardized "
        "representation (early-stopped on the validation split) gives the per-row test errors behind the risk–coverage "
        "curve; u is the generator's ground-truth ambiguity of each test row. AURC: lower is better (its floor, a perfect "
        "ranking of the probe's errors, is in *oracle AURC*); Spearman and ROC AUC (detecting u ≥ its 75th percentile): "
        "higher is better. *Paper* = Var-JEPA Figure 3 (its own budget and protocol).",
        "",
        *[f"`{stand_in}` is a CPU stand-in for `{ours}` (same corruption and u, images average-pooled to 7×7); its *paper* "
          f"numbers are the paper's `{ours}`." for stand_in, ours in SETTINGS_OF.items() if stand_in in set(results["dataset"])],
        "",
    ]
    for name, block in results.groupby("dataset", sort=False):
        info = infos[name]
        train = info["train"]
        lines += [
            f"## {name}",
            "",
            f"{info['rows']['train']}/{info['rows']['val']}/{info['rows']['test']} train/val/test rows; preset `{args.preset}` "
            f"(d = {info['model'].dim}, {info['model'].depth} layers, {train.epochs} epochs, batch {train.batch_size}); "
            f"pre-training {info['Var-T-JEPA']['pretrain_seconds']:.0f} s (Var-T-JEPA, best epoch {info['Var-T-JEPA']['best_epoch']}) "
            f"and {info['T-JEPA']['pretrain_seconds']:.0f} s (T-JEPA, best epoch {info['T-JEPA']['best_epoch']}); this invocation "
            f"{info['seconds']:.0f} s in all. Linear-probe test accuracy: Var-T-JEPA "
            f"{info['Var-T-JEPA']['probe_accuracy']:.3f}, T-JEPA {info['T-JEPA']['probe_accuracy']:.3f}. The single posterior-std "
            f"entry that tracks u best reaches |Spearman| {info['Var-T-JEPA']['max_abs_entry_spearman']:.3f}.",
            "",
            "| representation | uncertainty score | AURC | paper | oracle AURC | Spearman(score, u) | paper | ROC AUC (u ≥ q75) | paper |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        paper = PAPER[SETTINGS_OF.get(name, name)]
        for _, r in block.iterrows():
            is_paper = r["score"].endswith("(paper)")
            ref = {k: (f"{v:.3f}" if is_paper else "–") for k, v in paper.items()}
            lines.append(f"| {r['representation']} | {r['score']} | {r['aurc']:.3f} | {ref['aurc']} | {r['oracle_aurc']:.3f} "
                         f"| {r['spearman']:.3f} | {ref['spearman']} | {r['roc_auc']:.3f} | {ref['roc_auc']} |")
        lines += ["", f"![Figure 3 for {name}](uncertainty_figure3_{name}.png)", ""]
    lines += ["What these numbers say, the ablations and what is left open: "
              "[uncertainty_notes.md](uncertainty_notes.md) (written by hand, not by this script)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; user errors and interruptions end with one line, not a traceback (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = cli.command_line("experiments/uncertainty.py", argv)
    with io.claim_work_folder(args.out, command=command, resume_command=command):
        return experiment(args, command, args.out)


def experiment(args: argparse.Namespace, command: str, out: Path) -> int:
    device = str(resolve_device(args.device))
    write_json({"command": command, "args": vars(args), "device": device}, out / "config.json")
    frames, infos = [], {}
    for name in args.datasets:
        print(f"{name}:", flush=True)
        frame, infos[name] = run_dataset(args, name, device)
        frames.append(frame)
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
    results = pd.concat(frames, ignore_index=True)
    results.to_csv(out / "results.csv", index=False)
    write_json({"command": command, "args": vars(args), "device": device, "datasets": infos}, out / "config.json")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        shutil.copyfile(out / f"figure3_{name}.png", args.report.parent / f"uncertainty_figure3_{name}.png")
    args.report.write_text(report(args, results, infos, command, device))
    results.to_csv(args.report.with_suffix(".csv"), index=False)
    print(f"wrote {out} and {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
