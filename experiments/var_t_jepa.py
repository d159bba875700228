"""Var-T-JEPA vs T-JEPA vs raw features on one table: pre-train, evaluate, inspect uncertainty.

    python experiments/var_t_jepa.py                      # SIM (generated), CPU preset, minutes
    python experiments/var_t_jepa.py --dataset adult --data-dir ../shared/data
    python experiments/var_t_jepa.py --data my.csv --label target
    python experiments/var_t_jepa.py --dataset adult --preset paper --device cuda

Pre-training sees the training split only; checkpoints are selected on the validation split;
the test split is touched once, by the downstream predictors. Everything lands in one run folder
(see README, "What a run writes").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch

from pyro_jepa import cli, distributed, io
from pyro_jepa.benchmarking import machine_description
from pyro_jepa.data import DATASETS, SIM_VERSIONS, load_dataset
from pyro_jepa.models import ROW_SCORES, TERMS
from pyro_jepa.evaluate import DownstreamConfig, collapse_report, evaluate_embeddings, spearman
from pyro_jepa.pipeline import METHODS, plot_training_curves, pretrain, representations, uncertainties
from pyro_jepa.presets import PRESETS, VARIANTS, make_preset
from pyro_jepa.report import markdown_table
from pyro_jepa.run import save_model
from pyro_jepa.train import MAY_CHANGE_ON_RESUME, SELECTION_RULES, data_fingerprint, resolve_device
from pyro_jepa.uncertainty import plot_forest, plot_uncertainty, sample_latents, summarize, to_inference_data

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="sim", help=f"named dataset: {', '.join(SIM_VERSIONS)} (generated) or one of {sorted(DATASETS)} (default: sim)")
    data.add_argument("--data", type=Path, help="a CSV/Parquet file to use instead of a named dataset (needs --label)")
    data.add_argument("--label", help="label column of --data")
    data.add_argument("--numerical", help="comma-separated columns to treat as numerical (overrides inference; "
                      "'\\,' is a comma inside a name)")
    data.add_argument("--categorical", help="comma-separated columns to treat as categorical (overrides inference)")
    data.add_argument("--drop", help="comma-separated columns that are not features (e.g. a row ID)")
    data.add_argument("--na-values", help="comma-separated cell texts that mean 'missing' in every column "
                      "(default: only empty cells; NA, null, ... count as missing in numerical columns only)")
    data.add_argument("--data-dir", type=Path, help="folder with the named datasets (default: $PYRO_JEPA_DATA or ~/.cache/pyro_jepa)")
    data.add_argument("--max-rows", type=int, help="stratified subsample of the table before splitting")
    model = p.add_argument_group("pre-training")
    model.add_argument("--preset", default="cpu", choices=PRESETS, help="cpu: small, minutes on 2 cores; paper: Var-JEPA Table 7 (GPU)")
    model.add_argument("--variant", default="default", choices=sorted(VARIANTS),
                       help="Var-T-JEPA model variant: decoder scale, KL weight of s_y, default score (pyro_jepa.presets.VARIANTS; "
                       "'paper' = the paper's)")
    model.add_argument("--methods", default="var-t-jepa,t-jepa", help=f"comma-separated subset of {sorted(METHODS)}")
    model.add_argument("--epochs", type=int, help="override the preset's pre-training epochs")
    model.add_argument("--batch-size", type=int, help="override the preset's batch size")
    model.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    model.add_argument("--elbo", choices=("trace", "meanfield"), help="Trace_ELBO (default) or TraceMeanField_ELBO (analytic KLs)")
    model.add_argument(
        "--alpha",
        help="override final loss weights, e.g. 'rec=1,gen=1,kl_s_x=1,kl_z=1,kl_s_y=1' (all 1 = the plain ELBO)",
    )
    model.add_argument("--group-size", type=int,
                       help="numerical features per token (consecutive columns share one, like an image patch; default 1): "
                       "for very wide tables, whose attention cost grows with the square of the token count")
    model.add_argument("--amp", choices=("none", "bf16"), default="none",
                       help="bf16: run the networks under bfloat16 autocast (log-densities and KLs stay float32); for GPUs")
    model.add_argument("--select", choices=SELECTION_RULES, default="probe",
                       help="best-epoch criterion on the validation split: a ridge probe's accuracy (label-informed), the "
                       "validation loss (label-free), or probe-filtered, the paper's (label-informed; drops the 20 %% most "
                       "uncertain validation rows first)")
    evaluation = p.add_argument_group("evaluation")
    evaluation.add_argument("--predictors", default="mlp,xgboost", help="comma-separated downstream predictors")
    evaluation.add_argument("--downstream-epochs", type=int, default=50, help="max epochs of the downstream MLP")
    evaluation.add_argument("--uncertainty", choices=sorted(ROW_SCORES),
                            help="Var-T-JEPA's per-row uncertainty score for the selective rows (default: the variant's)")
    evaluation.add_argument("--posterior-samples", type=int, default=200, help="guide samples per row for the arviz summary")
    evaluation.add_argument("--posterior-rows", type=int, default=4, help="test rows summarized in arviz")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="fixes splits, initial weights, masks and sampling")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; recorded in config.json, "
                     "and results depend on it)")
    run.add_argument("--out", type=Path, help="run folder (default: runs/<dataset>-<timestamp>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last checkpoints")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    if args.data is not None and not args.label:
        p.error("--data needs --label (the name of the label column)")
    if args.resume and args.out is None:
        p.error("--resume needs --out (the run folder to continue)")
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite exclude each other (continue the run folder, or replace it)")
    if args.data is not None and args.data.is_dir():
        p.error(f"--data {args.data} is a folder; pass the CSV or Parquet file inside it")
    if args.data is not None and not args.data.is_file():
        p.error(f"--data {args.data}: no such file")
    if args.data is None and args.dataset not in SIM_VERSIONS and args.dataset not in DATASETS:
        p.error(f"--dataset {args.dataset!r} is unknown; choose {' or '.join(SIM_VERSIONS)} or one of {sorted(DATASETS)}, or pass --data FILE")
    for flag, least in (("max_rows", 1), ("epochs", 1), ("batch_size", 2), ("group_size", 1), ("downstream_epochs", 1),
                        ("posterior_samples", 1), ("posterior_rows", 1), ("threads", 1)):
        value = getattr(args, flag)
        if value is not None and value < least:
            p.error(f"--{flag.replace('_', '-')} must be at least {least}, got {value}")
    cli.require_positive(p, "--lr", args.lr)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    try:
        args.alpha = {k.strip(): float(v) for k, v in (item.split("=") for item in cli.split_names(args.alpha) or [])}
    except ValueError:
        p.error(f"--alpha must look like 'rec=1,kl_s_y=1e-5', got {args.alpha!r}")
    unknown = sorted(set(args.alpha) - set(TERMS))
    if unknown:
        p.error(f"--alpha: unknown terms {unknown}; choose from {list(TERMS)}")
    bad = {k: v for k, v in args.alpha.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        p.error(f"--alpha weights must be finite and >= 0, got {bad}")
    for flag in ("numerical", "categorical", "drop", "na_values"):
        setattr(args, flag, cli.split_names(getattr(args, flag)))
    args.predictors = [m.strip() for m in args.predictors.split(",") if m.strip()]
    return args


def results_table(results: pd.DataFrame) -> str:
    """Results as a Markdown table: one row per representation (and drop), one column pair per predictor."""
    frame = results.copy()
    frame["representation"] = [
        rep if drop == 0 else f"{rep} ({int(round(drop * 100))}% most uncertain dropped)"
        for rep, drop in zip(frame["representation"], frame["drop"])
    ]
    wide = frame.pivot_table(index="representation", columns="predictor", values=["accuracy", "macro_f1"], sort=False)
    wide.columns = [f"{predictor} {metric}" for metric, predictor in wide.columns]
    wide = wide[sorted(wide.columns, key=lambda c: (c.split()[0], c.split()[1]))]
    return markdown_table(wide.reset_index())


def main(argv: list[str] | None = None) -> int:
    """Run the main job; user errors and interruptions end with one line, not a traceback (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Under torchrun every rank runs this script; pre-training is data-parallel, the rest is rank 0's.
    rank = distributed.init_from_env(args.device)
    try:
        dataset = args.data.stem if args.data is not None else args.dataset
        out = args.out or Path("runs") / f"{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
        with contextlib.ExitStack() as stack:
            error = None
            if rank.is_main:
                try:
                    stack.enter_context(io.claim_run_folder(
                        out, overwrite=args.overwrite, resume=args.resume, inputs=[args.data] if args.data else [],
                        command=cli.command_line(SCRIPT, argv), resume_command=cli.resume_command(SCRIPT, argv, out),
                    ))
                except io.RunFolderError as err:
                    error = err
            if rank.enabled:  # one folder name (its timestamp is rank 0's) and one verdict for all ranks
                out, message = distributed.broadcast_object((out, None if error is None else str(error)))
                error = error or (None if message is None else io.RunFolderError(message))
            if error is not None:
                if rank.is_main:
                    raise error
                return cli.EXIT_USER_ERROR
            return run(args, argv, rank, dataset, Path(out))
    finally:
        distributed.shutdown()


SCRIPT = os.path.relpath(__file__)
# Settings of the main job's config.json that may change on --resume (besides the engine's own).
MAY_CHANGE = {**MAY_CHANGE_ON_RESUME, "device": lambda old, new: True}


def resolved_config(args, argv, splits, dataset: str, model_config, train_config, downstream_config, device) -> dict:
    """Everything that fixes the run's results, as written to config.json."""
    schema = splits.schema
    return io.to_jsonable({
        "command": cli.command_line(SCRIPT, argv),
        "args": vars(args),
        "dataset": {
            "name": dataset,
            "source": str(args.data) if args.data is not None else f"{dataset} (generated)" if dataset in SIM_VERSIONS else dataset,
            "rows": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
            "numerical": schema.numerical,
            "categorical": schema.categorical,
            "cardinalities": schema.cardinalities,
            "classes": schema.classes,
            "sha256": data_fingerprint(splits.train, splits.val, splits.test),
        },
        "model": model_config,
        "train": train_config,
        "downstream": downstream_config,
        "device": str(device),
        "versions": {"torch": torch.__version__, "pyro": __import__("pyro").__version__, "python": sys.version.split()[0]},
        "machine": machine_description(),  # another CPU's kernels give other last bits, so other trained weights
    })


def record_resume(out: Path, config: dict) -> dict:
    """Check a resumed run against the config.json it started with; return the record to write.

    Refuses (ValueError naming each setting) when the data or a setting that shapes the results
    differs; allowed changes (more epochs, device, progress bars) are kept and listed under ``resumes``.
    """
    path = out / "config.json"
    if not path.is_file():  # interrupted before its config was written: nothing to compare with
        return config
    stored = json_load(path)
    compared = ("dataset", "model", "train", "downstream", "device")
    refused, changed = io.settings_diff(
        {k: stored.get(k) for k in compared}, {k: config[k] for k in compared}, MAY_CHANGE
    )
    if refused:
        raise io.RunFolderError(
            f"--resume refused: {out} was started with other data or settings: " + "; ".join(refused)
            + ". Rerun with the original flags (see its config.json), or start a new run (--out) or over (--overwrite)"
        )
    resumes = [*stored.get("resumes", []), {"command": config["command"], "time": datetime.now().isoformat(timespec="seconds"),
                                            "changed": {k: list(v) for k, v in changed.items()}}]
    return {**stored, **{k: config[k] for k in compared}, "resumes": resumes}


def kept_warmup(out: Path, weights):
    """``weights`` with the KL warm-up lengths (steps) the resumed run started with: the presets cap
    the warm-up at a share of the run, so ``--epochs`` grown on ``--resume`` would otherwise stretch a
    schedule the run is already inside (or past)."""
    path = out / "config.json"
    stored = json_load(path).get("model", {}).get("weights", {}) if path.is_file() else {}
    kept = {k: stored[k] for k in ("anneal_s_x", "anneal_z", "anneal_s_y") if isinstance(stored.get(k), int)}
    return replace(weights, **kept)


def json_load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise io.RunFolderError(f"cannot read {path} to check --resume against it ({err}); start a new run") from err


def run(args: argparse.Namespace, argv: list[str] | None, rank: distributed.DistInfo, dataset: str, out: Path) -> int:
    started = time.perf_counter()
    device = distributed.local_device(resolve_device(args.device), rank)
    splits = load_dataset(
        str(args.data) if args.data is not None else args.dataset,
        label=args.label,
        data_dir=args.data_dir,
        seed=args.seed,
        numerical=args.numerical,
        categorical=args.categorical,
        drop=args.drop or (),
        na_values=args.na_values or (),
        max_rows=args.max_rows,
    )
    schema = splits.schema
    model_config, train_config = make_preset(args.preset, dataset, len(splits.train), args.epochs, args.batch_size, args.variant)
    train_config = replace(
        train_config,
        seed=args.seed,
        device=str(device),
        select=args.select,
        amp=args.amp,
        progress=not args.no_progress,
        **({"lr": args.lr} if args.lr is not None else {}),
    )
    model_config = replace(
        model_config,
        weights=replace(model_config.weights, **args.alpha),
        **{k: v for k, v in {"elbo": args.elbo, "uncertainty": args.uncertainty, "group_size": args.group_size}.items() if v is not None},
    )
    if args.resume:
        model_config = replace(model_config, weights=kept_warmup(out, model_config.weights))
    downstream_config = DownstreamConfig(epochs=args.downstream_epochs)
    if rank.is_main:
        config = resolved_config(args, argv, splits, dataset, model_config, train_config, downstream_config, device)
        io.write_json(record_resume(out, config) if args.resume else config, out / "config.json")
        print(f"{dataset}: {len(splits.train)}/{len(splits.val)}/{len(splits.test)} train/val/test rows, "
              f"{schema.n_numerical} numerical + {schema.n_categorical} categorical features, {schema.n_classes} classes; "
              f"device {device}" + (f" x {rank.world_size} ranks" if rank.enabled else "") + f"; run folder {out}")

    features = {"raw features": tuple(getattr(splits, s).raw_features() for s in ("train", "val", "test"))}
    uncertainty, histories, metrics, trained = {}, {}, {"dataset": dataset, "methods": {}}, {}
    for name in args.methods:
        label = METHODS[name].name
        checkpoints = out / "checkpoints" / name
        if args.resume and rank.is_main and not (checkpoints / "last.pt").exists():
            print(f"note: {checkpoints} holds no checkpoint yet; {label} starts from scratch")
        method, fit = pretrain(name, splits, model_config, train_config, checkpoints, resume=args.resume)
        if not rank.is_main:
            continue
        trained[name], histories[label] = method, fit.history
        reps = representations(method, splits)
        features[label] = (reps["train"], reps["val"], reps["test"])
        unc = uncertainties(method, splits)
        metrics["methods"][label] = {
            "pretrain_seconds": fit.seconds,
            "best_epoch": fit.best_epoch,
            "best_validation_score": fit.best_score,
            "selection": train_config.select,
            "collapse_test": collapse_report(reps["test"]),
        }
        if unc is not None:
            uncertainty[label] = unc["test"]
            if splits.test.ambiguity is not None:
                rho = spearman(unc["test"], splits.test.ambiguity.cpu().numpy())
                metrics["methods"][label]["spearman_uncertainty_vs_true_ambiguity"] = float(rho)

    if not rank.is_main:
        return 0
    y = {s: getattr(splits, s).y.cpu().numpy() for s in ("train", "val", "test")}
    fitted = {}
    results = evaluate_embeddings(
        features, y["train"], y["val"], y["test"], schema.n_classes, predictors=args.predictors,
        config=downstream_config, seed=args.seed, uncertainty=uncertainty, device=str(device),
        token_sizes={"raw features": schema.raw_token_sizes}, fitted=fitted,
    )
    for name, method in trained.items():  # usable again: pyro_jepa.load_run(out, name), python -m pyro_jepa
        save_model(out / "checkpoints" / name, name, method, splits.preprocessor, splits.val,
                   {p: fitted[(p, method.name)] for p in args.predictors})
    results.insert(0, "dataset", dataset)
    io.write_csv(results, out / "results.csv")
    table = results_table(results)
    io.write_text(out / "results.md", 
        f"# {dataset}: downstream test accuracy and macro-F1\n\n{table}\n\n"
        f"Preset `{args.preset}`, seed {args.seed}, device {device}. Pre-training on the training split only; "
        "best epoch chosen on the validation split. Selective rows drop the test rows with the highest "
        f"uncertainty (Var-T-JEPA: `{model_config.uncertainty}`; T-JEPA: `prediction-error`) and score the rest.\n"
    )
    metrics["downstream"] = results.to_dict(orient="records")
    plot_training_curves(histories, out / "training_curves.png")

    if "var-t-jepa" in trained:
        var = trained["var-t-jepa"]
        rows = splits.test.rows[: args.posterior_rows].to(device)
        idata = to_inference_data(
            sample_latents(var, rows, args.posterior_samples), list(range(len(rows))), var.token_names
        )
        summarize(idata, ["z", "s_w"]).to_csv(out / "arviz_summary.csv")
        plot_forest(idata, "s_w", {"feature": list(var.token_names[:2]), "latent": list(range(min(4, model_config.dim)))}, out / "posterior_forest.png")
        ambiguity = None if splits.test.ambiguity is None else splits.test.ambiguity.cpu().numpy()
        plot_uncertainty(uncertainty[var.name], y["test"], schema.classes, ambiguity, out / "uncertainty.png")

    metrics["seconds_total"] = time.perf_counter() - started
    io.write_json(metrics, out / "metrics.json")
    print(f"\n{table}\n")
    for label, info in metrics["methods"].items():
        collapse = info["collapse_test"]
        extra = f", Spearman(uncertainty, true u) {info['spearman_uncertainty_vs_true_ambiguity']:.3f}" if "spearman_uncertainty_vs_true_ambiguity" in info else ""
        print(f"{label}: best epoch {info['best_epoch']}, per-dim std mean {collapse['mean_std']:.3f} "
              f"(min {collapse['min_std']:.3f}), effective rank {collapse['effective_rank']:.1f}{extra}")
    print(f"\nwrote {out} in {metrics['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
