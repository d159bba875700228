"""One-class anomaly detection on images: VJE's ELBO score vs k-NN distance on each method's features.

    python experiments/vje_anomaly.py --data-dir ../shared/data                  # all 10 CIFAR-10 classes, CPU preset
    python experiments/vje_anomaly.py --data-dir ../shared/data --classes 0,1,2  # a few classes
    python experiments/vje_anomaly.py --data-dir ../shared/data --preset paper --device cuda

For every normal class: pre-train each method on that class's training images only (best epoch by
validation loss on held-out images of the same class; no labels), then score the whole test subset
and report the AUROC of "not the normal class". Scores: VJE's negative symmetric ELBO averaged over
view pairs ("VJE (ELBO)"), its expected log-likelihood term alone ("VJE (log-lik)"), and for every
method the mean cosine distance to the k nearest training features ("<method> (k-NN)"), so the
likelihood is also compared with a distance on the same representation. The run folder holds config.json, metrics.json, results.csv/.md (AUROC per
class and mean) and vje_variances.png (learned variances per normal class).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from pyro_jepa import cli, io
from pyro_jepa.evaluate.probes import knn_distance_score, one_class_auroc
from pyro_jepa.image_pipeline import (
    PRESETS,
    add_common_args,
    build_method,
    finish_args,
    load_full,
    load_splits,
    plot_variances,
    run_header,
    train_config,
)
from pyro_jepa.report import markdown_table
from pyro_jepa.train import fit, seed_everything

# One-class runs train |classes| x |methods| models, so the CPU preset gets a smaller per-run budget.
ANOMALY_PRESETS = {
    "cpu": dict(PRESETS["cpu"], epochs=8, batch_size=128, train_per_class=500, test_per_class=100),
    "paper": dict(PRESETS["paper"], epochs=200),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--classes", help="comma-separated normal classes (default: all)")
    p.add_argument("--knn-k", type=int, default=5, help="neighbours of the k-NN distance score")
    p.add_argument("--score-pairs", type=int, default=4, help="view pairs averaged in VJE's ELBO score")
    args = p.parse_args(argv)
    for key, value in ANOMALY_PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return finish_args(p, args)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; user errors and interruptions end with one line, not a traceback (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    out = args.out or Path("runs") / f"vje-anomaly-{args.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    with io.claim_run_folder(out, overwrite=args.overwrite, command=cli.command_line(os.path.relpath(__file__), argv)):
        return experiment(args, argv, Path(out))


def experiment(args, argv: list[str] | None, out: Path) -> int:
    full = load_full(args)
    _, _, test = load_splits(args, classes=[0], full=full)
    classes = list(range(len(test.classes))) if args.classes is None else [int(c) for c in args.classes.split(",")]
    started = time.perf_counter()
    io.write_json(run_header(args, argv) | {"normal_classes": classes, "test_images": len(test)}, out / "config.json")
    print(f"{args.dataset}: one-class protocol over classes {classes}, {len(test)} test images; run folder {out}")

    records, variances = [], {}
    for normal in classes:
        train, val, _ = load_splits(args, classes=[normal], full=full)
        for name in args.methods:
            seed_everything(args.seed)  # same initial weights whatever ran before
            method = build_method(name, args)
            if name == "vje":
                method.config.score_pairs = args.score_pairs
            result = fit(method, train, val, train_config(args, "loss"), out / "checkpoints" / f"{normal}-{name}")
            method.cpu()
            label = method.name
            scores = {f"{label} (k-NN)": knn_distance_score(method.embed(train.rows), method.embed(test.rows), k=args.knn_k)}
            if name == "vje":
                vje_scores = method.anomaly_scores(test.rows)
                scores[f"{label} (ELBO)"] = vje_scores["elbo"].numpy()
                scores[f"{label} (log-lik)"] = vje_scores["loglik"].numpy()
                variances[f"class {normal} ({test.classes[normal]})"] = method.uncertainty(test.rows).pow(2).mean(0).numpy()
            for score_name, score in scores.items():
                auroc = one_class_auroc(score, test.y.numpy(), normal)
                records.append({"normal_class": normal, "class_name": test.classes[normal], "score": score_name,
                                "auroc": auroc, "pretrain_seconds": result.seconds, "best_epoch": result.best_epoch})
                print(f"class {normal} ({test.classes[normal]}), {score_name}: AUROC {auroc:.4f}")

    frame = pd.DataFrame(records)
    frame.pipe(io.write_csv, out / "results.csv")
    wide = frame.pivot_table(index="score", columns="class_name", values="auroc", sort=False)
    wide["mean"] = wide.mean(axis=1)
    wide = wide.reset_index()
    wall = time.perf_counter() - started
    io.write_json({"auroc": frame.to_dict(orient="records"), "mean_auroc": dict(zip(wide["score"], wide["mean"])),
                "wall_seconds": wall}, out / "metrics.json")
    io.write_text(out / "results.md", 
        f"# {args.dataset}: one-class anomaly detection, AUROC per normal class\n\n{markdown_table(wide)}\n\n"
        f"Preset `{args.preset}`: backbone {args.backbone}, {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.train_per_class} training images of the normal class, {len(test)} test images, seed {args.seed}; "
        f"k-NN score k={args.knn_k}; VJE ELBO over {args.score_pairs} view pairs. Wall time {wall:.0f} s.\n"
    )
    plot_variances(variances, out / "vje_variances.png")
    print(markdown_table(wide))
    return 0


if __name__ == "__main__":
    sys.exit(main())
