"""VJE vs SimSiam vs VICReg on images: pre-train on one budget, then k-NN, linear probe and collapse diagnostics.

    python experiments/vje.py --data-dir ../shared/data                 # CIFAR-10 subset, CPU preset (<= 10 min)
    python experiments/vje.py --dataset fashion-mnist --data-dir DIR
    python experiments/vje.py --data-dir ../shared/data --preset paper --device cuda
    python experiments/vje.py --data-dir ../shared/data --methods vje --df 30 --out runs/vje-df30   # one switch
    python experiments/vje.py --data-dir ../shared/data --methods vicreg --set vicreg.cov_coeff=0   # any config field

Pre-training sees the training subset only; the best epoch is chosen by a ridge probe on validation
images held out of the training split; the test subset is touched once, by the probes. The run folder
holds config.json, metrics.json, results.csv/.md, training_curves.png and vje_variances.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pyro_jepa import cli, io
from pyro_jepa.evaluate import collapse_report
from pyro_jepa.evaluate.probes import knn_accuracy, linear_probe
from pyro_jepa.image_pipeline import (
    add_common_args,
    build_method,
    epochs_for,
    finish_args,
    load_splits,
    plot_variances,
    run_header,
    train_config,
)
from pyro_jepa.pipeline import plot_training_curves
from pyro_jepa.report import markdown_table
from pyro_jepa.train import fit, seed_everything, steps_per_epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--knn-k", type=int, default=200)
    p.add_argument("--knn-temperature", type=float, default=0.1)
    return finish_args(p, p.parse_args(argv))


FLOATS = "{:.4g}"  # table cells: four significant digits


def probe_row(label: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, args) -> dict:
    collapse = collapse_report(x_test)
    return {
        "method": label,
        "knn_accuracy": knn_accuracy(x_train, y_train, x_test, y_test, k=args.knn_k, temperature=args.knn_temperature),
        "linear_accuracy": linear_probe(x_train, y_train, x_test, y_test),
        "effective_rank": collapse["effective_rank"],
        "dim": x_test.shape[1],
        "mean_std": collapse["mean_std"],
        "mean_cosine": collapse["mean_cosine"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; user errors and interruptions end with one line, not a traceback (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    out = args.out or Path("runs") / f"vje-{args.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    with io.claim_run_folder(out, overwrite=args.overwrite, command=cli.command_line(os.path.relpath(__file__), argv)):
        return experiment(args, argv, Path(out))


def experiment(args, argv: list[str] | None, out: Path) -> int:
    train, val, test = load_splits(args)
    started = time.perf_counter()
    header = run_header(args, argv)
    header["dataset"] = {"name": args.dataset, "images": {"train": len(train), "val": len(val), "test": len(test)}}
    # --steps decides the epochs from the training-set size, so record what the run trains, not the preset's epochs.
    epochs = epochs_for(args, len(train))
    header["budget"] = {"epochs": epochs, "steps_per_epoch": steps_per_epoch(len(train), args.batch_size)}
    io.write_json(header, out / "config.json")
    print(f"{args.dataset}: {len(train)}/{len(val)}/{len(test)} train/val/test images; run folder {out}")

    y_train, y_test = train.y.numpy(), test.y.numpy()
    rows, metrics, histories, variances = [], {"methods": {}}, {}, {}
    # An untrained backbone shows how much of each probe score pre-training adds.
    seed_everything(args.seed)  # same initial weights whatever ran before
    untrained = build_method(args.methods[0], args).eval()
    rows.append(probe_row("untrained backbone", untrained.embed(train.rows).numpy(), y_train, untrained.embed(test.rows).numpy(), y_test, args))
    for name in args.methods:
        seed_everything(args.seed)  # same initial weights whatever ran before
        method = build_method(name, args)
        result = fit(method, train, val, train_config(args, name, "probe", len(train)), out / "checkpoints" / name)
        method.cpu()
        label = method.name
        histories[label] = result.history
        row = probe_row(label, method.embed(train.rows).numpy(), y_train, method.embed(test.rows).numpy(), y_test, args)
        row["pretrain_seconds"] = result.seconds
        rows.append(row)
        metrics["methods"][label] = {"optimizer_steps": result.steps, "best_epoch": result.best_epoch,
                                     "best_val_probe": result.best_score, **row}
        if name == "vje":
            # The paper leaves open whether its probes read h or the posterior mean μ(h); report both.
            mean_row = probe_row(f"{label} (posterior mean μ)", method.posterior_mean(train.rows).numpy(), y_train,
                                 method.posterior_mean(test.rows).numpy(), y_test, args)
            rows.append(mean_row)
            metrics["methods"][label]["posterior_mean_probes"] = {k: v for k, v in mean_row.items() if k != "method"}
            var = method.uncertainty(test.rows).pow(2).mean(0).numpy()
            variances[f"{label} ({'shared' if method.config.shared_variance else 'separate'} variances)"] = var
            metrics["methods"][label]["posterior_variance"] = {"mean": float(var.mean()), "min": float(var.min()), "max": float(var.max())}
        print(f"{label}: k-NN {row['knn_accuracy']:.4f}, linear {row['linear_accuracy']:.4f}, "
              f"effective rank {row['effective_rank']:.1f}/{row['dim']}, {result.seconds:.0f} s")

    results = pd.DataFrame(rows)
    results.pipe(io.write_csv, out / "results.csv")
    metrics["wall_seconds"] = time.perf_counter() - started
    io.write_json(metrics, out / "metrics.json")
    io.write_text(
        out / "results.md",
        f"# {args.dataset}: frozen-backbone probes (test subset)\n\n{markdown_table(results, FLOATS)}\n\n"
        f"Preset `{args.preset}`: backbone {args.backbone}, {epochs} epochs of batch {args.batch_size} "
        f"({sorted({m['optimizer_steps'] for m in metrics['methods'].values()})} optimizer steps per model), "
        f"{len(train)} training images, {len(test)} test images, seed {args.seed}. k-NN: cosine, k={args.knn_k}, "
        f"T={args.knn_temperature}. Linear: logistic regression on standardized features. Wall time "
        f"{metrics['wall_seconds']:.0f} s.\n"
    )
    plot_training_curves(histories, out / "training_curves.png")
    if variances:
        plot_variances(variances, out / "vje_variances.png")
    print(markdown_table(results, FLOATS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
