"""Does Var-T-JEPA's latent uncertainty track real ambiguity? Var-JEPA Figure 3, over pre-training seeds.

    python experiments/uncertainty.py --data-dir ../shared/data --threads 1

On corrupted MNIST (lambda = 0.75) and SIM the true per-row ambiguity u is known. For each dataset and
pre-training seed (the 70/10/20 split stays fixed by ``--split-seed``) this pre-trains Var-T-JEPA in
each model variant of ``--variants`` (decoder scale, KL weight on s_y) and T-JEPA on the training split,
keeping the epoch with the best validation loss after the KL warm-up (label-free: labels should not
pick the model whose uncertainty is judged), and scores every test row by every per-row score of the
model (``method.scores``: the paper's posterior-std aggregates, the conditional-prior std, the
masked-feature predictive NLL, the heteroscedastic decoder's scales, the KL to the training rows'
aggregate posterior, of all of them or of the most typical quarter; T-JEPA's prediction error).

For each score: Spearman with u, ROC AUC for detecting u >= q75, AURC of abstaining by it for a linear
probe on the representation, and the AUROC of the score for the probe's errors. Beside them: the
*supervised ceiling* (a gradient-boosting regressor trained on u from the raw features, scored on the
test rows: no label-free score should be expected above it), label-free raw-feature scores (squared
norm, k-means margin, Gaussian-mixture NLL: what a score needs no representation learning for) and
the probe's own confidence. A selective table compares abstaining by the default latent
score, by the probe's confidence, by the validation-fitted combination of both
(`CombinedAbstention`) and at random. Everything is reported as mean ± std over the seeds with the
sign across seeds, beside the paper's Figure 3. Each Var-T-JEPA run also gets its *predictor skill*
(how well the decoded conditional-prior mean guesses hidden numerical features) beside what the
table makes predictable (`feature_predictability`: each feature regressed on the rest of its row).

Writes ``results.csv`` (one row per dataset, seed, variant and score), ``selective.csv``,
``config.json`` and Figure-3 PNGs into ``--out`` and the Markdown report ``--report``. Reruns resume
finished pre-training (``--checkpoints``: ``DATASET/VARIANT/var-t-jepa-seedK`` and ``DATASET/t-jepa-seedK``);
the settings of a checkpoint folder are checked before it is reused. ``--set FIELD=VALUE`` changes a
field of the model config on top of the preset (e.g. ``--set dim=64``, the paper's width).
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
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from pyro_jepa.data import SIM_VERSIONS, load_dataset
from pyro_jepa.evaluate import PREDICTORS, DownstreamConfig
from pyro_jepa.evaluate.ambiguity import ambiguity_scores, feature_predictability, supervised_ceiling
from pyro_jepa.evaluate.selective import (
    CONFIDENCE,
    CombinedAbstention,
    aurc,
    confidence_scores,
    describe_coverage_test,
    error_auroc,
    selective_report,
)
from pyro_jepa import cli, io
from pyro_jepa.benchmarking import cpu_summary
from pyro_jepa.models.tabular import TabularJEPAConfig
from pyro_jepa.pipeline import pretrain, pretraining_record, representations
from pyro_jepa.presets import PRESETS, SETTINGS_NOTES, SETTINGS_OF, VARIANTS, make_preset
from pyro_jepa.train import resolve_device
from pyro_jepa.uncertainty import plot_figure3

DATASETS = ("mnist", "mnist-7x7", *SIM_VERSIONS)
# On a CPU, a transformer over MNIST's 784 pixel tokens is too slow; the cpu preset takes the 7x7 stand-in.
DEFAULT_DATASETS = {"cpu": "mnist-7x7,sim", "paper": "mnist,sim"}
# Var-JEPA Figure 3 (numbers printed in its panels).
PAPER = {"mnist": {"aurc": 0.123, "spearman": 0.949, "roc_auc": 0.986}, "sim": {"aurc": 0.209, "spearman": 0.640, "roc_auc": 0.805}}
PAPER_SCORE = "posterior-q90"  # the paper's aggregate on MNIST and SIM
# Goal lines of the issue (Figure 3 with the default score).
GOALS = {"sim": {"spearman": 0.64, "ceiling_share": 0.9, "roc_auc": 0.805}, "mnist": {"spearman": 0.949, "roc_auc": 0.986}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", help=f"comma-separated subset of {DATASETS} (default: {DEFAULT_DATASETS} by preset)")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets (MNIST's mnist_10k.npz)")
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--epochs", type=int, help="override the preset's pre-training epochs")
    p.add_argument("--lr", type=float, help="override the preset's pre-training learning rate")
    p.add_argument("--max-rows", type=int, help="stratified subsample of each table (default: all rows, 10,000)")
    p.add_argument("--seeds", type=cli.int_list, default="0,1,2", help="pre-training seeds (comma-separated)")
    p.add_argument("--split-seed", type=int, default=0, help="fixes the 70/10/20 split and the probes")
    p.add_argument("--variants", default="default,paper", help=f"comma-separated Var-T-JEPA model variants of {sorted(VARIANTS)} "
                   "(pyro_jepa.presets.VARIANTS)")
    p.add_argument("--default-variant", default="default", help="the variant the goal lines judge")
    p.add_argument("--no-t-jepa", action="store_true", help="skip the T-JEPA baseline")
    p.add_argument("--probe-epochs", type=int, default=50, help="linear-probe epochs (early-stopped on validation)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="model_set",
                   help="a field of the model config (pyro_jepa.models.tabular.TabularJEPAConfig) after the preset's, e.g. "
                   "--set dim=64 (repeatable; recorded in config.json); use its own --checkpoints folder")
    p.add_argument("--masks", type=int, default=8, help="mask draws per row for the mask-averaged scores")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("runs/uncertainty"), help="work folder (reruns resume it)")
    p.add_argument("--checkpoints", type=Path, help="pre-training folder (default: OUT/checkpoints); may be the benchmark's")
    p.add_argument("--report", type=Path, default=Path("docs/results/uncertainty.md"), help="Markdown report to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.datasets = [d for d in (args.datasets or DEFAULT_DATASETS[args.preset]).split(",") if d]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown or not args.datasets:
        p.error(f"--datasets must name some of {DATASETS} (rows with a known ambiguity u), got {unknown or 'none'}")
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in [*args.variants, args.default_variant] if v not in VARIANTS]
    if bad or args.default_variant not in args.variants:
        p.error(f"--variants must name some of {sorted(VARIANTS)} and include the default variant, got {bad or args.variants}")
    cli.require_positive(p, "--lr", args.lr)
    args.checkpoints = args.checkpoints or args.out / "checkpoints"
    try:
        args.model_set = cli.config_fields(TabularJEPAConfig, args.model_set)
    except ValueError as error:
        p.error(str(error))
    return args


def probe_outputs(features: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int, config: DownstreamConfig,
                  seed: int, device: str) -> dict[str, np.ndarray]:
    """A linear probe's class probabilities on the validation and test rows."""
    probe = PREDICTORS["linear"](features["train"], y["train"], features["val"], y["val"], n_classes, config, seed, device=device)
    return {part: probe.predict_proba(features[part]) for part in ("val", "test")}


def mixture_nll(raw: dict[str, np.ndarray], k: int, seed: int) -> np.ndarray:
    """A label-free density score on raw features: the negative log-likelihood of each test row under
    a k-component diagonal Gaussian mixture fitted to the standardized training rows."""
    scaler = StandardScaler().fit(raw["train"])
    mixture = GaussianMixture(k, covariance_type="diag", reg_covar=1e-3, random_state=seed).fit(scaler.transform(raw["train"]))
    return -mixture.score_samples(scaler.transform(raw["test"]))


def squared_norm(raw: dict[str, np.ndarray]) -> np.ndarray:
    """The simplest label-free score: each test row's mean squared feature after standardizing with
    training statistics (how far the row sits from the training mean)."""
    scaler = StandardScaler().fit(raw["train"])
    return (scaler.transform(raw["test"]) ** 2).mean(1)


def kmeans_margin(raw: dict[str, np.ndarray], k: int, seed: int) -> np.ndarray:
    """A label-free ambiguity score on raw features: distance to the nearest of k training-set
    k-means centres over the distance to the second nearest (1 = exactly between two clusters)."""
    scaler = StandardScaler().fit(raw["train"])
    kmeans = KMeans(k, n_init=5, random_state=seed).fit(scaler.transform(raw["train"]))
    distances = np.sort(kmeans.transform(scaler.transform(raw["test"])), axis=1)
    return distances[:, 0] / np.maximum(distances[:, 1], 1e-12)


def score_rows(scores: dict[str, np.ndarray], u: np.ndarray, errors: np.ndarray, **keys) -> list[dict]:
    """Figure-3 numbers and the error AUROC of each score, as result rows."""
    return [{**keys, "score": name, **ambiguity_scores(score, u, errors), "error_auroc": error_auroc(errors, score),
             "oracle_aurc": aurc(errors, errors)} for name, score in scores.items()]


class Experiment:
    """One invocation: the splits, probes and pre-training runs of every dataset and seed."""

    def __init__(self, args: argparse.Namespace, device: str) -> None:
        self.args, self.device = args, device
        self.probe_config = DownstreamConfig(epochs=args.probe_epochs, lr=1e-2)  # the paper's probe learning rate
        self.results: list[dict] = []
        self.selective: list[pd.DataFrame] = []
        self.runs: list[dict] = []
        self.figures: dict[str, dict] = {}
        self.predictability: dict[str, float] = {}

    def pretrain(self, method: str, variant: str | None, name: str, splits, seed: int):
        model_config, train_config = make_preset(self.args.preset, name, len(splits.train), self.args.epochs, variant=variant or "default")
        model_config = replace(model_config, **self.args.model_set)
        train_config = replace(train_config, seed=seed, device=self.device, progress=not self.args.no_progress, select="loss",
                               **({"lr": self.args.lr} if self.args.lr is not None else {}))
        folder = f"{method}-seed{seed}" if variant is None else f"{variant}/{method}-seed{seed}"
        try:
            model, fit = pretrain(method, splits, model_config, train_config, self.args.checkpoints / name / folder, resume=True)
        except io.CheckpointError as err:
            # The engine's advice names the training script's flags; here reuse is always on, so the way out is another folder.
            raise io.CheckpointError(f"{err}. For experiments/uncertainty.py: point --checkpoints at another folder "
                                     "(its pre-training is reused whenever the settings match)") from None
        model.eval()
        record = pretraining_record(model, fit)
        self.runs.append({"dataset": name, "seed": seed, "method": method, "variant": variant or "-", "epochs": train_config.epochs,
                          **record, "steps_after_warmup": record["steps"] - record["warmup_steps"],
                          "seconds": fit.epoch_seconds,
                          "kl_s_y": model_config.weights.kl_s_y, "decoder_scale": model_config.decoder_scale})
        return model

    def run_seed(self, name: str, splits, seed: int) -> None:
        args = self.args
        y = {s: getattr(splits, s).y.cpu().numpy() for s in ("train", "val", "test")}
        u = splits.test.ambiguity.cpu().numpy()
        rows = {s: getattr(splits, s).rows.to(self.device) for s in ("val", "test")}
        n_classes = splits.schema.n_classes
        raw = {s: getattr(splits, s).raw_features() for s in ("train", "val", "test")}
        base = {"dataset": name, "seed": seed}
        ceiling = supervised_ceiling(raw["train"], splits.train.ambiguity.cpu().numpy(), raw["test"], u, seed=seed)
        raw_proba = probe_outputs(raw, y, n_classes, self.probe_config, args.split_seed, self.device)
        raw_errors = (raw_proba["test"].argmax(1) != y["test"]).astype(float)
        self.results += score_rows({"squared norm (raw, label-free)": squared_norm(raw),
                                    "k-means margin (raw, label-free)": kmeans_margin(raw, n_classes, args.split_seed),
                                    "Gaussian-mixture NLL (raw, label-free)": mixture_nll(raw, n_classes, args.split_seed),
                                    "probe entropy (raw, uses labels)": confidence_scores(raw_proba["test"])["entropy"]},
                                   u, raw_errors, **base, variant="-", representation="raw features",
                                   probe_accuracy=1 - raw_errors.mean(), ceiling_spearman=ceiling["spearman"],
                                   ceiling_roc_auc=ceiling["roc_auc"])
        methods = [("var-t-jepa", v) for v in args.variants] + ([] if args.no_t_jepa else [("t-jepa", None)])
        for method, variant in methods:
            model = self.pretrain(method, variant, name, splits, seed)
            proba = probe_outputs(representations(model, splits), y, n_classes, self.probe_config, args.split_seed, self.device)
            errors = {part: (proba[part].argmax(1) != y[part]).astype(float) for part in ("val", "test")}
            latent = {part: {k: v.cpu().numpy() for k, v in model.scores(rows[part], n_masks=args.masks).items()} for part in ("val", "test")}
            if "predictive-mse" in latent["test"]:
                # How much better than the training mean the decoded predictor guesses hidden numerical features.
                self.runs[-1]["predictor_skill"] = 1 - latent["test"]["predictive-mse"].mean() / float((splits.test.x_num**2).mean())
                self.runs[-1]["predictability"] = self.predictability[name]
            confidence = {part: confidence_scores(proba[part]) for part in ("val", "test")}
            label = "Var-T-JEPA" if method == "var-t-jepa" else "T-JEPA"
            keys = {**base, "variant": variant or "-", "representation": label, "probe_accuracy": 1 - errors["test"].mean(),
                    "ceiling_spearman": ceiling["spearman"], "ceiling_roc_auc": ceiling["roc_auc"]}
            self.results += score_rows({**latent["test"], "probe entropy (uses labels)": confidence["test"]["entropy"]}, u, errors["test"], **keys)
            score = model.default_score
            confidence = {part: c[CONFIDENCE] for part, c in confidence.items()}
            rule = CombinedAbstention.fit(confidence["val"], latent["val"][score], errors["val"])
            abstain = {f"latent ({score})": latent["test"][score], f"probe confidence ({CONFIDENCE})": confidence["test"],
                       "combined (fitted on validation)": rule.score(confidence["test"], latent["test"][score])}
            y_pred = proba["test"].argmax(1)
            self.selective.append(selective_report(y["test"], y_pred, abstain).assign(
                **base, variant=variant or "-", representation=label, combined_uses_latent=rule.use_latent, combined_p_value=rule.p_value))
            if seed == args.seeds[0] and variant in (args.default_variant, None):
                figure = self.figures.setdefault(name, {"u": u, "scores": {}})
                figure["scores"] |= {f"{label}: {k}": (latent["test"][k], errors["test"]) for k in (
                    [PAPER_SCORE, score] if method == "var-t-jepa" else [score])}

    def run(self) -> None:
        for name in self.args.datasets:
            splits = load_dataset(name, data_dir=self.args.data_dir, seed=self.args.split_seed, max_rows=self.args.max_rows)
            if splits.test.ambiguity is None:
                raise ValueError(f"{name} has no ground-truth ambiguity column")
            self.predictability[name] = feature_predictability(splits.train.x_num.cpu().numpy(), splits.test.x_num.cpu().numpy())
            for seed in self.args.seeds:
                print(f"{name}, seed {seed}:", flush=True)
                self.run_seed(name, splits, seed)
            info = self.figures.get(name)
            if info:
                plot_figure3(info["u"], info["scores"], self.args.out / f"figure3_{name}.png",
                             title=f"{name}: uncertainty scores vs true ambiguity u (test rows, seed {self.args.seeds[0]})")


def mean_std(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, min and max over seeds of every (dataset, variant, representation, score)."""
    keys = ["dataset", "variant", "representation", "score"]
    metrics = ["spearman", "roc_auc", "aurc", "error_auroc", "probe_accuracy", "ceiling_spearman", "ceiling_roc_auc"]
    out = results.groupby(keys, sort=False)[metrics].agg(["mean", "std", "min", "max"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    return out.assign(seeds=results.groupby(keys, sort=False).size()).reset_index()


def default_score(args: argparse.Namespace, name: str) -> str:
    """The per-row score the judged variant uses by default on dataset ``name``."""
    return make_preset(args.preset, name, 1, variant=args.default_variant)[0].uncertainty


def goal_lines(name: str, block: pd.DataFrame, score: str) -> list[str]:
    """Whether the default score meets the issue's Figure-3 goals on this dataset."""
    goal = GOALS.get(SETTINGS_OF.get(name, name))
    row = block[block["score"] == score]
    if goal is None or row.empty:
        return []
    spearman, roc, ceiling = row["spearman"], row["roc_auc"], row["ceiling_spearman"]
    checks = [f"Spearman {spearman.mean():.3f} ≥ {goal['spearman']}: **{'met' if spearman.mean() >= goal['spearman'] else 'not met'}**",
              f"ROC AUC {roc.mean():.3f} ≥ {goal['roc_auc']}: **{'met' if roc.mean() >= goal['roc_auc'] else 'not met'}**",
              f"sign stable (Spearman > 0 in every seed, min {spearman.min():.3f}): **{'met' if spearman.min() > 0 else 'not met'}**"]
    if "ceiling_share" in goal:
        share = spearman.mean() / ceiling.mean()
        checks.insert(1, f"{share:.0%} of the supervised ceiling {ceiling.mean():.3f} (goal ≥ {goal['ceiling_share']:.0%}): "
                      f"**{'met' if share >= goal['ceiling_share'] else 'not met'}**")
    return [f"Goal (default score `{score}`): " + "; ".join(checks) + "."]


def report(args, results: pd.DataFrame, selective: pd.DataFrame, runs: pd.DataFrame, command: str, device: str,
           load: tuple[tuple[float, ...], tuple[float, ...]], seconds: float) -> str:
    summary = summarize(results)
    io.write_csv(summary, args.out / "summary.csv")
    lines = [
        "# Latent uncertainty vs true ambiguity (Var-JEPA Figure 3), over pre-training seeds",
        "",
        f"Made by `{command}` on {platform.node() or 'this machine'} ({cpu_summary()}, {os.cpu_count()} CPU cores, "
        f"{'CUDA' if device.startswith('cuda') else 'no GPU'}; Python {platform.python_version()}, torch {torch.__version__}); "
        f"load average {load[0][0]:.1f} at the start and {load[1][0]:.1f} at the end (this run uses {torch.get_num_threads()} torch "
        f"thread(s); a higher load means other jobs shared the machine); "
        f"{seconds / 60:.0f} min in all (pre-training resumed from existing checkpoints counts its own time in the table below).",
        "",
        f"Protocol: one 70/10/20 split (seed {args.split_seed}); for each pre-training seed ({', '.join(map(str, args.seeds))}) "
        "Var-T-JEPA (each variant) and T-JEPA are pre-trained on the training split; the epoch kept has the lowest validation loss "
        "among the epochs after the KL warm-up (label-free). Every latent score is label-free. A linear probe on each standardized "
        "representation (early-stopped on validation) gives the per-row test errors behind AURC and error AUROC. u is the "
        "generator's ground-truth ambiguity of each test row. *Supervised ceiling*: a gradient-boosting regressor trained on u "
        "(raw training features), its Spearman / ROC AUC on the test rows — no label-free score should be expected above it. "
        "Cells: mean ± std over seeds; *min* is the lowest Spearman over seeds (its sign is the sign stability). *Paper* = "
        "Var-JEPA Figure 3 (its own budget and protocol, one run).",
        "",
        "Model variants (`pyro_jepa.presets.VARIANTS`; `kl_s_y` None = Table 7's, `score` None = the paper's): "
        + "; ".join(f"`{v}` = {VARIANTS[v]}" for v in args.variants) + f". The goal lines judge `{args.default_variant}` with its default score."
        + (f" Model config fields set on top of the preset (`--set`): {args.model_set}." if args.model_set else ""),
        "",
        *[f"`{stand_in}` ({SETTINGS_NOTES[stand_in]}) takes `{ours}`'s settings; its *paper* numbers are the paper's `{ours}`."
          for stand_in, ours in SETTINGS_OF.items() if stand_in in set(results["dataset"])],
        "",
        "## Pre-training runs",
        "",
        "*Predictor skill*: 1 − the mean squared error of the decoded predictor mean at hidden numerical features over the "
        "error of predicting the training mean (0: the conditional prior has learned nothing about hidden features from the "
        "context; 1: perfect). *Predictable by the rest of the row*: the same measure for a ridge regression of each "
        "numerical feature on all the others, fitted on the training rows (`pyro_jepa.evaluate.feature_predictability`): "
        "what the table lets a predictor learn, for reference (the predictor sees only its context, the regression is linear). "
        "*Smoothing*: the width the `training-kl` score smooths the training rows' aggregate posterior by, in units of its "
        "components' median std, fitted on the validation rows (`VarTJEPA.set_reference`; 0 = unsmoothed).",
        "",
        "| dataset | method | variant | seed | best epoch / epochs | optimizer steps (after the KL warm-up) | seconds | predictor skill "
        "| predictable by the rest of the row | smoothing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in runs.iterrows():
        skill, reference = (f"{r[k]:.3f}" if pd.notna(r.get(k)) else "–" for k in ("predictor_skill", "predictability"))
        smoothing = f"{r['smoothing']:g}" if pd.notna(r.get("smoothing")) else "–"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['variant']} | {r['seed']} | {r['best_epoch']} / {r['epochs']} "
                     f"| {r['steps']} ({r['steps_after_warmup']}) | {r['seconds']:.0f} | {skill} | {reference} | {smoothing} |")
    for name, block in summary.groupby("dataset", sort=False):
        ours = SETTINGS_OF.get(name, name)
        paper = PAPER.get(ours, {})
        ceiling = block["ceiling_spearman_mean"].iloc[0], block["ceiling_spearman_std"].iloc[0]
        ceiling_roc = block["ceiling_roc_auc_mean"].iloc[0]
        lines += ["", f"## {name}", "",
                  f"Supervised ceiling (regressor trained on u): Spearman {ceiling[0]:.3f} ± {ceiling[1]:.3f}, ROC AUC {ceiling_roc:.3f}.", "",
                  *goal_lines(name, results[(results["dataset"] == name) & (results["variant"] == args.default_variant)],
                              default_score(args, name)), "",
                  "| representation | variant | score | Spearman(score, u) | min | paper | ROC AUC (u ≥ q75) | paper | AURC | paper "
                  "| error AUROC | probe accuracy |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in block.iterrows():
            ref = paper if r["score"] == PAPER_SCORE else {}
            ref = {k: f"{ref[k]:.3f}" if k in ref else "–" for k in ("spearman", "roc_auc", "aurc")}
            lines.append(
                f"| {r['representation']} | {r['variant']} | {r['score']} | {r['spearman_mean']:.3f} ± {r['spearman_std']:.3f} "
                f"| {r['spearman_min']:.3f} | {ref['spearman']} | {r['roc_auc_mean']:.3f} ± {r['roc_auc_std']:.3f} | {ref['roc_auc']} "
                f"| {r['aurc_mean']:.3f} ± {r['aurc_std']:.3f} | {ref['aurc']} | {r['error_auroc_mean']:.3f} | {r['probe_accuracy_mean']:.3f} |")
        sel = selective[selective["dataset"] == name]
        if len(sel):
            table = sel.groupby(["representation", "variant", "score", "drop"], sort=False).agg(
                accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), macro_f1=("macro_f1", "mean"),
                error_auroc=("error_auroc", "mean")).reset_index()
            lines += ["", "Selective prediction with the linear probe (test accuracy / macro-F1 after dropping the most uncertain rows; "
                      "mean over seeds):", "",
                      "| representation | variant | abstain by | error AUROC | 0 % | 10 % | 20 % | 50 % | macro-F1 at 0 / 50 % |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for (rep, variant, score), g in table.groupby(["representation", "variant", "score"], sort=False):
                g = g.set_index("drop")
                auroc = "–" if np.isnan(g["error_auroc"].iloc[0]) else f"{g['error_auroc'].iloc[0]:.3f}"
                lines.append(f"| {rep} | {variant} | {score} | {auroc} | " + " | ".join(f"{g.loc[f, 'accuracy']:.3f}" for f in (0.0, 0.1, 0.2, 0.5))
                             + f" | {g.loc[0.0, 'macro_f1']:.3f} / {g.loc[0.5, 'macro_f1']:.3f} |")
            used = sel.drop_duplicates(["representation", "variant", "seed"])
            lines += ["", f"The combined rule keeps the latent score only if {describe_coverage_test()}. It kept it in "
                      f"{int(used['combined_uses_latent'].sum())} of {len(used)} (representation, variant, seed) fits."]
        if (args.out / f"figure3_{name}.png").exists():
            lines += ["", f"![Figure 3 for {name}](uncertainty_figure3_{name}.png)"]
    lines += ["", "What these numbers say, the ablations and what is left open: "
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
    io.write_json({"command": command, "args": vars(args), "device": device, "variants": {v: VARIANTS[v] for v in args.variants}},
                  out / "config.json")
    started, load_start = time.perf_counter(), os.getloadavg()
    experiment = Experiment(args, device)
    experiment.run()
    results, selective, runs = pd.DataFrame(experiment.results), pd.concat(experiment.selective), pd.DataFrame(experiment.runs)
    for frame, file in ((results, "results.csv"), (selective, "selective.csv"), (runs, "runs.csv")):
        io.write_csv(frame, out / file)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        if (out / f"figure3_{name}.png").exists():
            shutil.copyfile(out / f"figure3_{name}.png", args.report.parent / f"uncertainty_figure3_{name}.png")
    text = report(args, results, selective, runs, command, device, (load_start, os.getloadavg()), time.perf_counter() - started)
    io.write_text(args.report, text)
    io.write_csv(summarize(results), args.report.with_suffix(".csv"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
