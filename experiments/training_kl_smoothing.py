"""Ablation of the `training-kl` score's smoothing: the aggregate posterior of the training rows as it
is, smoothed by each width of the grid, and smoothed by the width fitted on the validation rows (the
default), judged against the true ambiguity u of the test rows.

    python experiments/training_kl_smoothing.py --data-dir ../shared/data --checkpoints runs/uncertainty/checkpoints

Reads (or trains, like experiments/uncertainty.py with the same flags) the pre-training runs of the
``--variant`` (`default` unless given) for each dataset and seed: ``CHECKPOINTS/DATASET/VARIANT/var-t-jepa-seedK``. For every
width of `SMOOTHING_GRID` (or of ``--widths``, over which the width is then fitted again) it reports the validation rows' mean KL bound (what the fit minimizes; no
labels, no u) beside the test rows' Spearman with u and ROC AUC for u >= q75 (what the fit never
sees). A last column checks whether digit or class composition explains the ROC AUC: the mean over
classes of the ROC AUC within each class. A second table puts the fitted score beside other forms on
the same models: the negative ELBO with unit weights under the same prior (the whole row's
reconstruction NLL at the posterior mean plus `training-kl`), the scale score `decoder-scale`, and the
mean of the two scores' ranks. Writes ``smoothing.csv``, ``forms.csv``, ``config.json``, a figure and a
Markdown report into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from pyro_jepa import cli, io  # noqa: E402
from pyro_jepa.benchmarking import machine_description  # noqa: E402
from pyro_jepa.data import load_dataset  # noqa: E402
from pyro_jepa.distributions.mixture_kl import SMOOTHING_GRID  # noqa: E402
from pyro_jepa.evaluate.metrics import roc_auc, spearman  # noqa: E402
from pyro_jepa.pipeline import pretrain  # noqa: E402
from pyro_jepa.presets import VARIANTS, make_preset  # noqa: E402
from pyro_jepa.report import markdown_table  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist-7x7,sim", help="datasets with a known ambiguity u (default mnist-7x7,sim)")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets")
    p.add_argument("--seeds", type=cli.int_list, default="0,1,2", help="pre-training seeds (comma-separated)")
    p.add_argument("--variant", default="default", choices=sorted(VARIANTS), help="Var-T-JEPA model variant (pyro_jepa.presets.VARIANTS)")
    p.add_argument("--epochs", type=int, help="override the preset's pre-training epochs (as in experiments/uncertainty.py)")
    p.add_argument("--max-rows", type=int, help="stratified subsample of each table (as in experiments/uncertainty.py)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--checkpoints", type=Path, required=True, help="pre-training folder of experiments/uncertainty.py")
    p.add_argument("--widths", type=width_list, default=SMOOTHING_GRID,
                   help="comma-separated smoothing widths to fit and report, e.g. the default grid and larger ones "
                        "where the fit picks the grid's largest width (default: SMOOTHING_GRID)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", type=Path, default=Path("runs/training-kl-smoothing"))
    return p.parse_args(argv)


def width_list(text: str) -> tuple[float, ...]:
    """``"0,0.5,16,32"`` → sorted distinct widths; refuses negative or non-numeric ones."""
    try:
        widths = tuple(sorted(set(cli.float_list(text))))
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"widths must be comma-separated numbers: {err}") from None
    if any(not w >= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be >= 0, got {text!r}")
    return widths


def width_rows(model, splits, widths: tuple[float, ...]) -> list[dict]:
    """One row per width of the grid: validation mean KL, test Spearman / ROC AUC / within-class ROC AUC."""
    u, y = splits.test.ambiguity.numpy(), splits.test.y.numpy()
    high = u >= np.quantile(u, 0.75)
    test_loc, test_scale = model.posterior(splits.test.rows)
    fitted = float(model.reference_smoothing)
    rows = []
    for width in widths:
        score = model.training_kl(test_loc, test_scale, width).numpy().astype(np.float64)
        within = [roc_auc(high[y == c], score[y == c]) for c in np.unique(y) if 0 < high[y == c].sum() < (y == c).sum()]
        rows.append({"width": width, "fitted": width == fitted, "validation_mean_kl": model.smoothing_curve[width],
                     "spearman": spearman(score, u), "roc_auc": roc_auc(high, score), "within_class_roc_auc": float(np.mean(within))})
    return rows


def form_rows(model, splits) -> list[dict]:
    """The fitted `training-kl` beside other score forms on the same model: test Spearman and ROC AUC."""
    u = splits.test.ambiguity.numpy()
    high = u >= np.quantile(u, 0.75)
    names = ["training-kl", "trimmed-kl", "reconstruction-nll", "decoder-scale"]
    scores = {k: v.numpy().astype(np.float64) for k, v in model.scores(splits.test.rows, names).items()}
    forms = {
        "training-kl (fitted width)": scores["training-kl"],
        "trimmed-kl (the default score, same width)": scores["trimmed-kl"],
        # reconstruction-nll is a mean over features; the ELBO's term is their sum
        "−ELBO, unit weights": splits.test.rows.shape[1] * scores["reconstruction-nll"] + scores["training-kl"],
        "decoder-scale": scores["decoder-scale"],
        "mean rank of training-kl and decoder-scale": rankdata(scores["training-kl"]) + rankdata(scores["decoder-scale"]),
    }
    return [{"score": name, "spearman": spearman(v, u), "roc_auc": roc_auc(high, v)} for name, v in forms.items()]


def run(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, forms = [], []
    for name in args.datasets:
        splits = load_dataset(name, data_dir=args.data_dir, seed=args.split_seed, max_rows=args.max_rows)
        if splits.test.ambiguity is None:
            raise ValueError(f"{name} has no ground-truth ambiguity column")
        for seed in args.seeds:
            model_config, train_config = make_preset("cpu", name, len(splits.train), args.epochs, variant=args.variant)
            train_config = replace(train_config, seed=seed, device="cpu", progress=False, select="loss")
            model, _ = pretrain("var-t-jepa", splits, model_config, train_config,
                                args.checkpoints / name / args.variant / f"var-t-jepa-seed{seed}", resume=True)
            if args.widths != SMOOTHING_GRID:  # the saved fit chose among the default grid's widths
                model.fit_reference_smoothing(splits.val.rows, grid=args.widths)
            with torch.no_grad():
                rows += [{"dataset": name, "seed": seed, **r} for r in width_rows(model.eval(), splits, args.widths)]
                forms += [{"dataset": name, "seed": seed, **r} for r in form_rows(model, splits)]
            print(f"{name}, seed {seed}: fitted width {float(model.reference_smoothing):g}", flush=True)
    return pd.DataFrame(rows), pd.DataFrame(forms)


def plot(results: pd.DataFrame, path: Path) -> None:
    names = list(dict.fromkeys(results["dataset"]))
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 3.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        for seed, block in results[results["dataset"] == name].groupby("seed"):
            for ax, metric in zip(row, ("validation_mean_kl", "spearman", "roc_auc")):
                ax.plot(block["width"], block[metric], marker=".", label=f"seed {seed}")
                chosen = block[block["fitted"]]
                ax.plot(chosen["width"], chosen[metric], "ko", fillstyle="none", markersize=9)
        for ax, metric in zip(row, ("validation mean KL (fitted: min)", "test Spearman with u", "test ROC AUC, u ≥ q75")):
            ax.set(title=f"{name}: {metric}", xlabel="smoothing width (× median posterior std)")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Unsmoothed (width 0) against the fitted width (the default): mean ± std (min) over seeds."""
    out = []
    for name in dict.fromkeys(results["dataset"]):
        block = results[results["dataset"] == name]
        for label, rows in (("unsmoothed", block[block["width"] == 0]), ("fitted width (default)", block[block["fitted"]])):
            cell = {"dataset": name, "aggregate posterior": label, "width per seed": ", ".join(f"{w:g}" for w in rows["width"])}
            out.append(cell | {metric: mean_std_min(rows[metric]) for metric in ("spearman", "roc_auc", "within_class_roc_auc")})
    return pd.DataFrame(out)


def mean_std_min(values: pd.Series) -> str:
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f} (min {values.min():.4f})"


def forms_summary(forms: pd.DataFrame) -> pd.DataFrame:
    """Each score form: mean ± std (min) over seeds of its test Spearman and ROC AUC."""
    grouped = forms.groupby(["dataset", "score"], sort=False)
    return grouped.agg(spearman=("spearman", mean_std_min), roc_auc=("roc_auc", mean_std_min)).reset_index()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.datasets = cli.split_names(args.datasets) or []
    torch.set_num_threads(args.threads)
    command = cli.command_line("experiments/training_kl_smoothing.py", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    io.write_json({"command": command, "args": vars(args), "machine": machine_description()}, args.out / "config.json")
    results, forms = run(args)
    io.write_csv(results, args.out / "smoothing.csv")
    io.write_csv(forms, args.out / "forms.csv")
    plot(results, args.out / "smoothing.png")
    text = "\n".join([
        "# `training-kl`: the aggregate posterior unsmoothed, at each width, and at the width fitted on validation rows", "",
        f"Made by `{command}`.", "",
        markdown_table(summary(results)), "",
        "Other score forms on the same models (test rows; `mean rank` is a post-hoc ensemble of two scores, shown to see "
        "whether the two shapes combine):", "",
        markdown_table(forms_summary(forms)), "",
        "Every width (test columns are diagnostics: the fit sees only the validation column):", "",
        markdown_table(results, floats="{:.4f}"), "",
        "![smoothing](smoothing.png)", "",
    ])
    io.write_text(args.out / "smoothing.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
