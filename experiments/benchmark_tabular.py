"""The tabular benchmark (Var-JEPA Tables 2-3) with a stricter protocol, in one resumable command.

    python experiments/benchmark_tabular.py --quick --data-dir ../shared/data --threads 1   # CPU, small budget
    python experiments/benchmark_tabular.py --preset paper --data-dir DATA        # GPU, the paper's settings
    python experiments/benchmark_tabular.py --data my.csv --label y --datasets ""  # your own table

For every dataset: pre-train T-JEPA and Var-T-JEPA on the training split only, once per
pre-training seed; train every downstream predictor on raw features and on both embeddings, once
per downstream seed; report accuracy and macro-F1 as mean ± std over all (pre-training seed,
downstream seed) runs, with Var-T-JEPA's selective rows and a tuned XGBoost on raw features.
Finished work is never recomputed: embeddings are cached per (dataset, method, seed) and every
downstream run is appended to ``runs.jsonl``; rerun the same command to continue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pyro_jepa.data import load_dataset
from pyro_jepa.evaluate import DownstreamConfig, PREDICTORS, collapse_report
from pyro_jepa.evaluate.downstream import fit_predict
from pyro_jepa.evaluate.ambiguity import supervised_ceiling
from pyro_jepa.evaluate.selective import abstention_study, describe_coverage_test, error_auroc
from pyro_jepa.evaluate.aggregate import count_cells, format_mean_std, summarize_runs
from pyro_jepa import cli, io
from pyro_jepa.benchmarking import cpu_summary, machine_description
from pyro_jepa.io import write_json
from pyro_jepa.pipeline import device_of, pretrain, pretraining_record, representations, uncertainties
from pyro_jepa.presets import PRESETS, SETTINGS_NOTES, SETTINGS_OF, VARIANTS, make_preset
from pyro_jepa.train import SELECTION_RULES, resolve_device

DATASETS = ("adult", "covertype", "electricity", "mnist", "sim")
# On a CPU, a transformer over MNIST's 784 pixel tokens is too slow; the quick run takes the 7x7 stand-in.
QUICK_DATASETS = ("electricity", "adult", "sim", "covertype", "mnist-7x7")  # cheapest first
PAPER_PREDICTORS = ("mlp", "resnet", "dcnv2", "autoint", "ft-transformer", "xgboost")
METHODS = {"t-jepa": "T-JEPA", "var-t-jepa": "Var-T-JEPA"}
PAPER_TABLES = Path(__file__).resolve().parent / "data" / "var_jepa_paper_tables.csv"
# --quick: the budget of a 2-core CPU: 10,000-row tables (2,000 test rows), three pre-training seeds at the
# preset's epochs, MLP and XGBoost downstream (one seed each); see docs/results/tabular_notes.md for its cost.
QUICK = {"pretrain_seeds": 3, "downstream_seeds": 1, "max_rows": 10_000, "downstream_epochs": 50,
         "datasets": ",".join(QUICK_DATASETS), "predictors": "mlp,xgboost"}
# Selective prediction: drop shares, and the risk-controlled rule's target (this share of the predictor's
# validation error rate at full coverage) and failure probability.
DROP_FRACTIONS = (0.1, 0.2, 0.5)
RISK_SHARE, RISK_DELTA = 0.5, 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", help=f"comma-separated named datasets ('' for none; default {','.join(DATASETS)}, "
                   f"with --quick {','.join(QUICK_DATASETS)})")
    p.add_argument("--data", type=Path, action="append", default=[], help="extra CSV/Parquet table (repeatable; needs --label)")
    p.add_argument("--label", action="append", default=[], help="label column of each --data, in order")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets")
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--variant", default="default", choices=sorted(VARIANTS),
                   help="Var-T-JEPA model variant (pyro_jepa.presets.VARIANTS; 'paper' = the paper's decoders, KL weights and score)")
    p.add_argument("--quick", action="store_true", help=f"small budget for CPUs: {QUICK}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"pre-training methods, a subset of {list(METHODS)} "
                   "('' for raw features only)")
    p.add_argument("--pretrain-seeds", type=int, default=3)
    p.add_argument("--downstream-seeds", type=int, default=5)
    p.add_argument("--predictors", help=f"subset of {sorted(PREDICTORS)} (default: the paper's six; --quick: mlp,xgboost)")
    p.add_argument("--epochs", type=int, help="override the preset's pre-training epochs")
    p.add_argument("--max-rows", type=int, help="stratified subsample of every table (default: the dataset's own)")
    p.add_argument("--downstream-epochs", type=int, default=50)
    p.add_argument("--split-seed", type=int, default=0, help="fixes the 70/10/20 split for every run")
    p.add_argument("--select", choices=SELECTION_RULES, default="loss",
                   help="pre-training epoch kept: lowest validation loss after the KL warm-up (label-free, default), a ridge "
                   "probe's validation accuracy, or probe-filtered, the paper's rule (both label-informed)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); the downstream MLPs' results "
                   "depend on it in the last digits and beyond, so fix it to compare runs")
    p.add_argument("--out", type=Path, default=Path("runs/benchmark-tabular"), help="work folder (resumable)")
    p.add_argument("--checkpoints", type=Path, help="pre-training folder (default: OUT/checkpoints); may be shared with "
                   "experiments/uncertainty.py")
    p.add_argument("--report", type=Path, default=Path("docs/results/tabular.md"), help="Markdown report to write")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key in ("pretrain_seeds", "downstream_seeds", "downstream_epochs") or getattr(args, key) is None:
                setattr(args, key, value)
    args.predictors = args.predictors or ",".join(PAPER_PREDICTORS)
    if args.datasets is None:
        args.datasets = ",".join(DATASETS)
    args.checkpoints = args.checkpoints or args.out / "checkpoints"
    if len(args.data) != len(args.label):
        p.error("give one --label per --data")
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.predictors = [q for q in args.predictors.split(",") if q]
    args.methods = [m for m in args.methods.split(",") if m]
    if set(args.methods) - set(METHODS):
        p.error(f"unknown methods {sorted(set(args.methods) - set(METHODS))}; choose from {list(METHODS)}")
    unknown = [q for q in args.predictors if q not in PREDICTORS]
    if unknown:
        p.error(f"unknown predictors {unknown}; choose from {sorted(PREDICTORS)}")
    if not args.datasets and not args.data:
        p.error("nothing to run: no --datasets and no --data")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    return args


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def checkpoint_folder(args, name: str, method: str, seed: int) -> Path:
    """Where one pre-training run lives: ``CHECKPOINTS/DATASET[/VARIANT]/METHOD-seedK``, the layout of
    experiments/uncertainty.py, so the two can share runs (their settings are checked before reuse)."""
    return args.checkpoints / name / (args.variant if method == "var-t-jepa" else "") / f"{method}-seed{seed}"


def cached_representations(args, name, splits, method, seed) -> dict[str, np.ndarray]:
    """Embeddings and the method's default uncertainty score (validation and test rows) of one
    pre-training run, computed once."""
    path = args.out / "embeddings" / name / f"{method}-seed{seed}.npz"
    if path.exists():
        return dict(np.load(path))
    model_config, train_config = make_preset(args.preset, name, len(splits.train), args.epochs, variant=args.variant)
    train_config = replace(train_config, seed=seed, device=str(resolve_device(args.device)), progress=False, select=args.select)
    started = time.perf_counter()
    model, fit = pretrain(method, splits, model_config, train_config, checkpoint_folder(args, name, method, seed), resume=True)
    reps = representations(model, splits)
    reps |= {f"score_{part}": values for part, values in uncertainties(model, splits).items()}
    # Every score the method has, on the test rows: which one ranks the downstream errors best, across datasets.
    reps |= {f"test_score:{name}": values.cpu().numpy() for name, values in model.scores(splits.test.rows.to(device_of(model))).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **reps)
    os.replace(tmp, path)
    append_jsonl(args.out / "pretrain.jsonl", [{
        "dataset": name, "method": method, "seed": seed, "seconds": time.perf_counter() - started,
        "epochs": train_config.epochs, "score": model.default_score, "collapse_test": collapse_report(reps["test"]),
        **pretraining_record(model, fit),
    }])
    return reps


def run_dataset(args, name: str, source: str, label: str | None, done: set) -> None:
    splits = load_dataset(source, label=label, data_dir=args.data_dir, seed=args.split_seed, max_rows=args.max_rows)
    y = {s: getattr(splits, s).y.cpu().numpy() for s in ("train", "val", "test")}
    config = DownstreamConfig(epochs=args.downstream_epochs)
    device = str(resolve_device(args.device))
    sources = [("raw features", None, {s: getattr(splits, s).raw_features() for s in ("train", "val", "test")})]
    if name not in read_ceilings(args):
        write_ceiling(args, name, splits, sources[0][2])
    n_features = splits.schema.n_features
    for method in args.methods:
        for seed in range(args.pretrain_seeds):
            reps = cached_representations(args, name, splits, method, seed)
            # (N, D, d): AutoInt and FT-Transformer take one token per feature embedding.
            reps |= {s: reps[s].reshape(len(reps[s]), n_features, -1) for s in ("train", "val", "test")}
            sources.append((METHODS[method], seed, reps))
    jobs = [(p, s) for p in args.predictors for s in (range(1) if p.startswith("xgboost") else range(args.downstream_seeds))]
    jobs += [("xgboost-tuned", 0)]
    for representation, pretrain_seed, reps in sources:
        for predictor, seed in jobs:
            if predictor == "xgboost-tuned" and representation != "raw features":
                continue
            key = (name, representation, pretrain_seed, predictor, seed)
            if key in done:
                continue
            started = time.perf_counter()
            proba_val, proba_test = fit_predict(predictor, (reps["train"], reps["val"], reps["test"]), y["train"], y["val"],
                                                splits.schema.n_classes, config, seed, device,
                                                splits.schema.raw_token_sizes if representation == "raw features" else None)
            val_error = float(np.mean(proba_val.argmax(1) != y["val"]))
            selective, risk = abstention_study(y["val"], proba_val, y["test"], proba_test, reps.get("score_val"), reps.get("score_test"),
                                               risk_target=RISK_SHARE * val_error or None, delta=RISK_DELTA,
                                               drop_fractions=DROP_FRACTIONS, seed=seed)
            run = {"dataset": name, "representation": representation, "pretrain_seed": pretrain_seed, "predictor": predictor,
                   "downstream_seed": seed, "seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}
            full = selective[selective["drop"] == 0].iloc[:1].assign(score="none", error_auroc=np.nan)
            rows = pd.concat([full, selective[selective["drop"] > 0]]).rename(columns={"score": "abstain_by"})
            append_jsonl(args.out / "runs.jsonl", [{**run, **r} for r in rows.to_dict(orient="records")])
            if risk is not None:
                append_jsonl(args.out / "risk.jsonl", [{**run, **risk, "validation_error": val_error}])
            errors = proba_test.argmax(1) != y["test"]
            append_jsonl(args.out / "scores.jsonl", [{**run, "score": key.split(":", 1)[1], "error_auroc": error_auroc(errors, reps[key])}
                                                    for key in reps if key.startswith("test_score:")])
            done.add(key)
            print(f"  {name} | {representation} (pretrain seed {pretrain_seed}) | {predictor} seed {seed}: "
                  f"acc {full['accuracy'].iloc[0]:.4f}", flush=True)


def read_ceilings(args) -> dict:
    path = args.out / "ceilings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_ceiling(args, name: str, splits, raw: dict[str, np.ndarray]) -> None:
    """For tables with a known ambiguity u (SIM, corrupted MNIST): how well a regressor trained on u
    reads it off the raw features, reported beside the table's results."""
    if splits.test.ambiguity is None:
        return
    ceilings = read_ceilings(args)
    ceilings[name] = supervised_ceiling(raw["train"], splits.train.ambiguity.cpu().numpy(), raw["test"], splits.test.ambiguity.cpu().numpy())
    write_json(ceilings, args.out / "ceilings.json")


def paper_lookup() -> pd.DataFrame:
    paper = pd.read_csv(PAPER_TABLES)
    paper = pd.concat([paper, *(paper[paper["dataset"] == ours].assign(dataset=stand_in) for stand_in, ours in SETTINGS_OF.items())])
    return paper.pivot_table(index=["dataset", "predictor", "representation", "drop"], columns="metric", values="mean")


def pretraining_diagnostics(args, datasets: list[str]) -> list[str]:
    """Per pre-training run: best epoch, collapse diagnostics of the test embeddings and, for
    Var-T-JEPA, the validation ELBO terms at the chosen epoch (from its history.csv)."""
    lines = ["## Pre-training diagnostics", "",
             "Per pre-training run: the epoch chosen on the validation split, collapse diagnostics of the test embeddings "
             "(per-dimension std, effective rank of D·d dims, mean pairwise cosine) and Var-T-JEPA's unweighted validation "
             "ELBO terms at that epoch (per row, normalized as in docs/elbo.md); *smoothing*: the width `training-kl` smooths the "
             "training rows' aggregate posterior by (in units of its components' median std), fitted on the validation rows.", "",
             "| dataset | method | seed | best epoch / epochs | optimizer steps (after the KL warm-up) | mean std | eff. rank (ratio) "
             "| mean cosine | rec | gen | KL s_x | KL z | KL s_y | smoothing |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in read_jsonl(args.out / "pretrain.jsonl"):
        if run["dataset"] not in datasets or run["seed"] >= args.pretrain_seeds:
            continue
        c = run["collapse_test"]
        terms = ["–"] * 5
        history = checkpoint_folder(args, run["dataset"], run["method"], run["seed"]) / "history.csv"
        if run["method"] == "var-t-jepa" and history.exists():
            best = pd.read_csv(history).set_index("epoch").loc[run["best_epoch"]]
            terms = [f"{best[f'val_{t}']:.3g}" for t in ("rec", "gen", "kl_s_x", "kl_z", "kl_s_y")]
        steps = f"{run['steps']} ({run['steps'] - run['warmup_steps']})" if "steps" in run else "–"
        smoothing = f"{run['smoothing']:g}" if "smoothing" in run else "–"
        lines.append(f"| {run['dataset']} | {METHODS[run['method']]} | {run['seed']} | {run['best_epoch']} / {run['epochs']} | {steps} "
                     f"| {c['mean_std']:.3f} | {c['effective_rank']:.0f} ({c['effective_rank_ratio']:.2f}) | {c['mean_cosine']:.2f} | "
                     + " | ".join([*terms, smoothing]) + " |")
    return lines


RULE_LABELS = {"combined": "combined rule (default)", "combined-lrt": "combined rule, likelihood-ratio test (the earlier default)",
               "latent": "latent score alone", "max-prob": "predictor max-prob", "entropy": "predictor entropy", "random": "random"}


def selective_section(block: pd.DataFrame, paper: pd.DataFrame, dataset: str, kept: pd.DataFrame) -> list[str]:
    """The selective table of one dataset (every abstention rule beside the baselines) and its goal lines;
    ``kept`` counts, per (predictor, representation, rule), the fits whose combined rule kept the latent score."""
    lines = ["", "Selective prediction: test accuracy after abstaining on the 10/20/50 % of rows each rule ranks most "
             "uncertain (mean ± std over runs); error AUROC = how well the rule ranks the predictor's errors; *paper* = "
             "the paper's selective rows (abstaining by its latent score).", "",
             "| predictor | representation | abstain by | error AUROC | 10 % | 20 % | 50 % | paper 10/20/50 | macro-F1 0 → 50 % |",
             "|---|---|---|---|---|---|---|---|---|"]
    goals = []
    full = block[block["drop"] == 0].set_index(["predictor", "representation"])
    for (predictor, representation), cell in block[block["drop"] > 0].groupby(["predictor", "representation"], sort=False):
        by_rule = {rule: g.set_index("drop") for rule, g in cell.groupby("abstain_by", sort=False)}
        for rule in [r for r in RULE_LABELS if r in by_rule]:
            g = by_rule[rule]
            ref = "–"
            if rule == "latent" and representation == "Var-T-JEPA":
                keys = [(dataset, predictor, representation, f) for f in DROP_FRACTIONS]
                if all(k in paper.index for k in keys):
                    ref = " / ".join(f"{paper.loc[k, 'accuracy']:.3f}" for k in keys)
            auroc = "–" if g["error_auroc_mean"].isna().all() else f"{g['error_auroc_mean'].iloc[0]:.3f}"
            f1_full = full.loc[(predictor, representation), "macro_f1_mean"]
            label = RULE_LABELS[rule]
            if (dataset, predictor, representation, rule) in kept.index:
                used = kept.loc[(dataset, predictor, representation, rule)]
                label += f"; latent kept in {int(used['sum'])} of {int(used['count'])} fits"
            lines.append(f"| {predictor} | {representation} | {label} | {auroc} | "
                         + " | ".join(format_mean_std(g.loc[f, "accuracy_mean"], g.loc[f, "accuracy_std"]) for f in DROP_FRACTIONS)
                         + f" | {ref} | {f1_full:.3f} → {g.loc[DROP_FRACTIONS[-1], 'macro_f1_mean']:.3f} |")
        if representation == "Var-T-JEPA" and "combined" in by_rule:
            rule, confidence = by_rule["combined"]["accuracy_mean"], by_rule["max-prob"]["accuracy_mean"]
            accuracy = [full.loc[(predictor, representation), "accuracy_mean"], *(rule[f] for f in DROP_FRACTIONS)]
            rises = all(a < b for a, b in zip(accuracy, accuracy[1:]))
            beats = all(rule[f] >= confidence[f] for f in DROP_FRACTIONS)
            goals.append(f"{predictor}: accuracy {' → '.join(f'{a:.3f}' for a in accuracy)} "
                         f"({'rises' if rises else 'does not rise'} at every step; {'≥' if beats else 'not ≥'} max-prob alone "
                         f"{' / '.join(f'{confidence[f]:.3f}' for f in DROP_FRACTIONS)}): **{'met' if rises and beats else 'not met'}**")
    if goals:
        lines += ["", "Goal (Var-T-JEPA, default rule: accuracy rises at 10 → 20 → 50 % dropped and is at least abstaining by the "
                  "predictor's confidence alone): " + "; ".join(goals) + "."]
    return lines


def risk_section(risk: pd.DataFrame) -> list[str]:
    """The risk-controlled rule's outcome per (dataset, predictor, representation)."""
    if risk.empty:
        return []
    lines = ["## Risk-controlled abstention", "",
             f"The user asks for a target error rate; here the target is {RISK_SHARE:g} × the predictor's validation error at full "
             f"coverage. The rule (`RiskControlledAbstention` on the default abstention score: the combined rule, or max-prob for raw "
             f"features) is calibrated on the validation rows to keep the error rate of the kept rows at or below the target with "
             f"probability ≥ {1 - RISK_DELTA:.0%} (Clopper–Pearson bounds, Bonferroni over 20 thresholds); below, the realised test "
             "error and coverage.", "",
             "| dataset | predictor | representation | runs | target | realised test error (max) | coverage | target met on test |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, predictor, representation), g in risk.groupby(["dataset", "predictor", "representation"], sort=False):
        lines.append(f"| {dataset} | {predictor} | {representation} | {len(g)} | {g['target'].mean():.3f} | {g['error'].mean():.3f} "
                     f"({g['error'].max():.3f}) | {g['coverage'].mean():.3f} | {int(g['met'].sum())} of {len(g)} |")
    return lines + [""]


def score_section(scores: pd.DataFrame) -> list[str]:
    """Error AUROC of every latent score, per dataset and representation (mean over runs and predictors)."""
    if scores.empty:
        return []
    table = scores.pivot_table(index=["representation", "score"], columns="dataset", values="error_auroc", aggfunc="mean", sort=False)
    lines = ["## Which latent score ranks the downstream errors", "",
             "AUROC of each per-row score of the pre-trained model (`method.scores`) for the downstream predictor's test errors, "
             "mean over pre-training seeds and predictors (0.5 = no information). The default abstention rule uses each model's "
             "default score.", "",
             "| representation | score | " + " | ".join(table.columns) + " | mean |", "|---|---|" + "---|" * (len(table.columns) + 1)]
    for (representation, score), row in table.iterrows():
        lines.append(f"| {representation} | {score} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {row.mean():.3f} |")
    return lines + [""]


def thread_counts(runs: pd.DataFrame) -> str:
    """The torch threads the downstream runs used, for the report's machine line (a resumed run may mix them)."""
    counts = sorted({int(n) for n in runs.get("threads", pd.Series(dtype=float)).dropna()})
    if not counts:
        return "torch threads not recorded"
    if len(counts) == 1:
        return f"{counts[0]} torch thread(s) per run"
    return f"torch threads per run: {', '.join(map(str, counts))} (a resumed run; results depend on the count)"


def report(args, runs: pd.DataFrame, timing: dict, command: str) -> str:
    summary = summarize_runs(runs)
    io.write_csv(summary, args.out / "summary.csv")
    paper = paper_lookup()
    selective = summary[summary["abstain_by"] != "none"]
    summary = summary[summary["abstain_by"] == "none"]
    combined = runs[runs["abstain_by"].str.startswith("combined") & (runs["drop"] == DROP_FRACTIONS[0])]
    kept = combined.astype({"uses_latent": bool}).groupby(["dataset", "predictor", "representation", "abstain_by"])["uses_latent"].agg(["sum", "count"])
    lines = [
        "# Tabular benchmark: Var-T-JEPA vs T-JEPA vs raw features",
        "",
        f"Made by `{command}` on {platform.node() or 'this machine'} ({cpu_summary()}, {os.cpu_count()} CPU cores, "
        f"{'CUDA' if resolve_device(args.device).type == 'cuda' else 'no GPU'}; Python {platform.python_version()}; "
        f"{thread_counts(runs)}).",
        f"Preset `{args.preset}`{' with --quick' if args.quick else ''}, model variant `{args.variant}` ({VARIANTS[args.variant]}): "
        f"{args.pretrain_seeds} pre-training seed(s), "
        f"{args.downstream_seeds} downstream seed(s) (XGBoost: 1, it is deterministic), pre-training epochs "
        f"{args.epochs or 'from the preset'}, rows per table {args.max_rows or 'the dataset default'}, downstream MLP-type epochs "
        f"{args.downstream_epochs}. Split 70/10/20 fixed by seed {args.split_seed}; pre-training sees the training split only; "
        f"the pre-training epoch kept is chosen on the validation split by `{args.select}` among the epochs after the KL warm-up"
        + (" (label-free)." if args.select == "loss" else " (label-informed)."),
        "",
        "Each cell: mean ± std over all (pre-training seed × downstream seed) runs. *Paper* = Var-JEPA Tables 2–3 "
        "(transductive pre-training, one pre-training seed, untuned baselines); not the same protocol, so compare with care. "
        "Selective rows drop the given share of the test rows a rule ranks most uncertain (reduced coverage): the default rule "
        "combines the predictor's confidence with the representation's latent score (Var-T-JEPA: its default score; T-JEPA: its "
        "prediction error), fitted on the validation rows (`CombinedAbstention`: the latent score enters only if "
        f"{describe_coverage_test()}; the earlier likelihood-ratio test is shown beside it). Machine-readable: `summary.csv`, `runs.jsonl`, `risk.jsonl`, `pretrain.jsonl` in the work folder "
        f"`{args.out}`; `{args.report.with_suffix('.csv').name}` beside this file.",
        "",
        *[f"`{stand_in}` ({SETTINGS_NOTES[stand_in]}) takes `{ours}`'s settings; its *paper* column is the paper's `{ours}`."
          for stand_in, ours in SETTINGS_OF.items() if stand_in in set(summary["dataset"])],
        "",
    ]
    for dataset, block in summary.groupby("dataset", sort=False):
        ceiling = read_ceilings(args).get(dataset)
        lines += [f"## {dataset}", "", f"Wall time: {timing.get(dataset, float('nan')):.0f} s.", "",
                  *([f"Supervised ceiling of any per-row score (a regressor trained on the true ambiguity u, test rows): Spearman "
                     f"{ceiling['spearman']:.3f}, ROC AUC (u ≥ q75) {ceiling['roc_auc']:.3f}.", ""] if ceiling else []),
                  "| predictor | representation | accuracy | paper | macro-F1 | paper |", "|---|---|---|---|---|---|"]
        for _, row in block.iterrows():
            rep = row["representation"] + (f" ({int(round(row['drop'] * 100))}%)" if row["drop"] else "")
            key = (dataset, row["predictor"], row["representation"], row["drop"])
            ref = paper.loc[key] if key in paper.index else None
            ref_acc = f"{ref['accuracy']:.3f}" if ref is not None else "–"
            ref_f1 = f"{ref['macro_f1']:.3f}" if ref is not None else "–"
            lines.append(f"| {row['predictor']} | {rep} | {format_mean_std(row['accuracy_mean'], row['accuracy_std'])} | {ref_acc} "
                         f"| {format_mean_std(row['macro_f1_mean'], row['macro_f1_std'])} | {ref_f1} |")
        lines += selective_section(pd.concat([block, selective[selective["dataset"] == dataset]]), paper, dataset, kept)
        lines.append("")
    lines += ["## Cell counts at full coverage (predictor × dataset)", ""]
    for challenger, reference in (("Var-T-JEPA", "T-JEPA"), ("Var-T-JEPA", "raw features"), ("T-JEPA", "raw features")):
        for metric in ("accuracy", "macro_f1"):
            c = count_cells(summary[summary["predictor"] != "xgboost-tuned"], challenger, reference, metric)
            goal = ""
            if (challenger, reference) == ("Var-T-JEPA", "T-JEPA") and c["cells"]:
                share = c["wins"] / c["cells"]
                goal = f" That is {share:.0%}; the goal is ≥ 80 %: **{'met' if share >= 0.8 else 'not met'}**."
            lines.append(f"- {challenger} ≥ {reference} ({metric}): {c['wins']} of {c['cells']} cells; "
                         f"gap larger than the std: {c['significant_wins']} better, {c['significant_losses']} worse.{goal}")
    tuned = summary[(summary["predictor"] == "xgboost-tuned")]
    full_var = summary[(summary["representation"] == "Var-T-JEPA") & (summary["drop"] == 0)]
    lines += ["", "## Var-T-JEPA's best predictor vs the tuned XGBoost on raw features", "",
              "| dataset | tuned XGBoost (raw) | best Var-T-JEPA cell | gap |", "|---|---|---|---|"]
    for dataset in tuned["dataset"]:
        t = tuned.loc[tuned["dataset"] == dataset, "accuracy_mean"].iloc[0]
        v = full_var[full_var["dataset"] == dataset]
        if len(v):
            best = v.loc[v["accuracy_mean"].idxmax()]
            lines.append(f"| {dataset} | {t:.3f} | {best['accuracy_mean']:.3f} ({best['predictor']}) | {best['accuracy_mean'] - t:+.3f} |")
    if "adult" in set(tuned["dataset"]) and len(full_var[full_var["dataset"] == "adult"]):
        gap = full_var.loc[full_var["dataset"] == "adult", "accuracy_mean"].max() - tuned.loc[tuned["dataset"] == "adult", "accuracy_mean"].iloc[0]
        lines += ["", f"Goal: within 1 point of the tuned XGBoost on adult: gap {gap * 100:+.1f} points, "
                      f"**{'met' if gap >= -0.01 else 'not met'}**."]
    risk = pd.DataFrame(read_jsonl(args.out / "risk.jsonl"))
    risk = risk[risk["dataset"].isin(summary["dataset"].unique())] if len(risk) else risk
    scores = pd.DataFrame(read_jsonl(args.out / "scores.jsonl"))
    scores = scores[scores["dataset"].isin(summary["dataset"].unique())] if len(scores) else scores
    lines += ["", *risk_section(risk), *score_section(scores), *pretraining_diagnostics(args, list(summary["dataset"].unique())), "",
              "What these numbers say and why: [tabular_notes.md](tabular_notes.md) (written by hand, not by this script)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; user errors and interruptions end with one line, not a traceback (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = cli.command_line("experiments/benchmark_tabular.py", argv)
    with io.claim_work_folder(args.out, inputs=args.data, command=command, resume_command=command):
        return benchmark(args, command)


def benchmark(args: argparse.Namespace, command: str) -> int:
    write_json({"command": command, "args": vars(args), "machine": machine_description()}, args.out / "config.json")
    done = {(r["dataset"], r["representation"], r["pretrain_seed"], r["predictor"], r["downstream_seed"])
            for r in read_jsonl(args.out / "runs.jsonl") if r["drop"] == 0}
    timing_path = args.out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    tables = [(n, n, None) for n in args.datasets] + [(p.stem, str(p), lab) for p, lab in zip(args.data, args.label)]
    for name, source, label in tables:
        print(f"{name}:", flush=True)
        started = time.perf_counter()
        run_dataset(args, name, source, label, done)
        timing[name] = timing.get(name, 0.0) + time.perf_counter() - started
        write_json(timing, timing_path)
    runs = pd.DataFrame(read_jsonl(args.out / "runs.jsonl"))
    runs = runs[runs["dataset"].isin([t[0] for t in tables])]
    text = report(args, runs, timing, command)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(args.report, text)
    io.write_csv(summarize_runs(runs), args.report.with_suffix(".csv"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
