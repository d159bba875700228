"""What a Var-T-JEPA training step costs as the problem grows: time and activation memory, plotted.

    python benchmarks/cost_curves.py                         # every curve, ~6 min on 2 CPU cores
    python benchmarks/cost_curves.py --axes batch tokens --reps 3 --out-dir /tmp/curves

Each curve varies one setting of the ``cpu`` preset (SIM's mask ratios and loss weights; d 32, depth
2, 4 heads, batch 256, K = 4 target masks) and keeps the others:

* ``batch``: rows per step;
* ``dim``: the latent width d (= token width; 4 heads, so the head width is d/4);
* ``depth``: layers of each encoder (the predictor keeps its 2);
* ``tokens``: features per row, 8 to 784 (a numerical table of that width, batch ``--tokens-batch``,
  32 by default, so that the 784-feature point fits in a minute);
* ``group``: numerical features per token (`TabularJEPAConfig.group_size`) at 784 features and the
  ``tokens`` curve's batch: 1 (784 tokens) to 28 (28 tokens), what a user of a wide table can do
  about the tokens curve;
* ``rows``: rows per epoch, timed through the engine (`pyro_jepa.train.fit`, one epoch: training
  steps, validation on a seventh as many rows, the linear probe, checkpoints).

Step points are the median of ``--reps`` training steps (forward through the Pyro ELBO, backward,
clipping, AdamW) after one untimed step, with the same batches for every point of a curve; memory is
the tensors autograd saves for backward (`pyro_jepa.benchmarking.saved_activation_mib`). The tables
are synthetic (random values, two classes): cost does not depend on the values. Every point is
written to ``OUT/cost_curves.csv`` and the curves to ``OUT/cost_curves.png``, beside the command
and the machine (``OUT/cost_curves.json``); the log-log slope between the last two points of each
curve is printed (1 = linear growth).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import torch
from matplotlib.ticker import NullFormatter
from tqdm import tqdm

from pyro_jepa import cli, io
from pyro_jepa.benchmarking import machine_description, median_time, saved_activation_mib, training_step
from pyro_jepa.data.tabular import TabularData, TabularSchema
from pyro_jepa.models import VarTJEPA
from pyro_jepa.presets import make_preset
from pyro_jepa.report import figure, save_figure
from pyro_jepa.train import _optimizer, fit

AXES: dict[str, list[int]] = {
    "batch": [32, 64, 128, 256, 512, 1024],
    "dim": [16, 32, 64, 128],
    "depth": [1, 2, 4, 8],
    "tokens": [8, 16, 32, 64, 128, 256, 784],
    "group": [1, 2, 4, 8, 16, 28],
    "rows": [1000, 2000, 4000, 8000, 16000],
}
LABELS = {"batch": "batch size (rows per step)", "dim": "latent width d", "depth": "encoder depth (layers)",
          "tokens": "features per row (tokens)", "group": "features per token (784 features)",
          "rows": "training rows per epoch"}
WIDE_FEATURES = 784  # the group curve's width: MNIST's pixels
BASE_FEATURES = 32  # SIM's width (28 numerical + 4 categorical); the synthetic tables are numerical
MEMORY_MASK_SEED = 12_345


def synthetic_table(n_rows: int, n_features: int, seed: int) -> TabularData:
    """``n_rows`` random numerical rows of ``n_features`` columns with two balanced classes."""
    g = torch.Generator().manual_seed(seed)
    schema = TabularSchema(tuple(f"x{j}" for j in range(n_features)), (), (), "y", ("a", "b"))
    return TabularData(torch.randn(n_rows, n_features, generator=g), torch.arange(n_rows) % 2, schema)


def step_cost(setting: dict, reps: int, batch_seed: int = 1) -> tuple[float, float]:
    """Median seconds of a training step and MiB of saved activations for one point of a curve."""
    n_features, batch = setting["tokens"], setting["batch"]
    table = synthetic_table(4 * batch, n_features, seed=0)
    config, train = make_preset("cpu", "sim", 7000)
    config = replace(config, dim=setting["dim"], depth=setting["depth"], group_size=setting["group_size"])
    torch.manual_seed(0)
    model = VarTJEPA(table.schema, config)
    optimizer = _optimizer(model, train)
    g = torch.Generator().manual_seed(batch_seed)

    def step() -> None:
        training_step(model, optimizer, table.rows[torch.randint(0, len(table.rows), (batch,), generator=g)], step=10**9)

    with pyro.validation_enabled(False):
        seconds = median_time(step, reps, warmup=1)
        model.reseed(MEMORY_MASK_SEED)  # the same mask-size draws at every point of a curve
        memory = saved_activation_mib(lambda: model.loss(table.rows[:batch], step=10**9))
    return seconds, memory


def epoch_cost(n_rows: int) -> float:
    """Seconds of one epoch through the engine on ``n_rows`` training rows (cpu preset, SIM's settings)."""
    train_rows, val_rows = synthetic_table(n_rows, BASE_FEATURES, seed=0), synthetic_table(max(n_rows // 7, 64), BASE_FEATURES, seed=1)
    config, train = make_preset("cpu", "sim", n_rows, epochs=1)
    torch.manual_seed(0)
    model = VarTJEPA(train_rows.schema, config)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fit(model, train_rows, val_rows, replace(train, progress=False, device="cpu"), Path(tmp))
        return time.perf_counter() - started


def slope(xs: list[float], ys: list[float]) -> float:
    """Log-log slope between the last two points: 1 is linear growth, 2 quadratic (negative: the cost falls)."""
    return math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])


def plot(frame: pd.DataFrame, path: Path) -> None:
    axes_run = list(dict.fromkeys(frame["axis"]))
    fig, panels = figure(2, len(axes_run), size=(3.4, 3.0), squeeze=False)
    for col, axis in enumerate(axes_run):
        part = frame[frame["axis"] == axis]
        for row, (metric, label) in enumerate((("seconds", "seconds per step (epoch for rows)"), ("activations_mib", "saved activations (MiB)"))):
            ax = panels[row][col]
            values = part[metric].to_numpy(dtype=float)
            if np.isnan(values).all():
                ax.set_visible(False)
                continue
            x = part["value"].to_numpy(dtype=float)
            ax.loglog(x, values, "o-", label="measured")
            # grouping divides the tokens: linear in tokens is 1/x in the group size
            reference = values[0] * (x[0] / x if axis == "group" else x / x[0])
            ax.loglog(x, reference, "--", color="grey", label="linear (in tokens) from the first point")
            ax.set_xticks(x, [f"{v:g}" for v in x])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(LABELS[axis])
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Var-T-JEPA cpu preset: cost of one training step as one setting grows")
    save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--axes", nargs="+", default=list(AXES), choices=list(AXES))
    p.add_argument("--reps", type=int, default=3, help="timed steps per point (default 3)")
    p.add_argument("--tokens-batch", type=int, default=32, help="batch size of the tokens curve (default 32)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--max-value", type=int, help="skip points above this value on every axis (a quick run)")
    p.add_argument("--out-dir", type=Path, default=Path("cost_curves"), help="folder for the CSV, JSON and PNG")
    args = p.parse_args(argv)
    if args.reps < 1 or args.tokens_batch < 2:
        p.error("--reps must be >= 1 and --tokens-batch >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = {"batch": 256, "dim": 32, "depth": 2, "tokens": BASE_FEATURES, "group_size": 1}
    wide = {"batch": args.tokens_batch, "tokens": WIDE_FEATURES}
    points = [(axis, v) for axis in args.axes for v in AXES[axis] if args.max_value is None or v <= args.max_value]
    records = []
    for axis, value in tqdm(points, desc="cost curves", disable=None):
        if axis == "rows":
            records.append({"axis": axis, "value": value, "seconds": epoch_cost(value), "activations_mib": float("nan")})
            continue
        if axis == "group":
            setting = base | wide | {"group_size": value}
        else:
            setting = base | ({"batch": args.tokens_batch} if axis == "tokens" else {}) | {axis: value}
        seconds, memory = step_cost(setting, args.reps)
        records.append({"axis": axis, "value": value, "seconds": seconds, "activations_mib": memory, **{f"setting_{k}": v for k, v in setting.items()}})
    frame = pd.DataFrame(records)
    io.write_csv(frame, args.out_dir / "cost_curves.csv")
    slopes = {}
    for axis in dict.fromkeys(frame["axis"]):
        part = frame[frame["axis"] == axis]
        if len(part) >= 2:
            slopes[axis] = {"time": slope(list(part["value"]), list(part["seconds"]))}
            if axis != "rows":
                slopes[axis]["memory"] = slope(list(part["value"]), list(part["activations_mib"]))
    io.write_json({"command": " ".join(["python benchmarks/cost_curves.py", *(sys.argv[1:] if argv is None else argv)]),
                   **machine_description(), "slopes (log-log, last two points)": slopes}, args.out_dir / "cost_curves.json")
    plot(frame, args.out_dir / "cost_curves.png")
    print(frame.to_string(index=False))
    print("\nlog-log slope between the last two points (1 = linear):")
    for axis, s in slopes.items():
        print(f"  {axis}: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()))
    print(f"\nwrote {args.out_dir}/cost_curves.csv, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
