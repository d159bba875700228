"""Does `torch.compile` of Var-T-JEPA's networks speed up a training step? Measured, not assumed.

    python benchmarks/compile_networks.py --dataset sim --preset cpu --reps 20

Builds two identical Var-T-JEPA models (same seed); in one, the three transformer stacks
(context encoder, target posterior, predictor) are wrapped in ``torch.compile(dynamic=True)``
(mask sizes change every batch, so shapes are dynamic). The whole Pyro ELBO is not compiled:
Pyro's tracing breaks the graph (docs/architecture.md). Steps of the two models are interleaved so
both see the same machine load; compile time is reported separately from the steady-state step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch

from pyro_jepa import cli
from pyro_jepa.data import load_dataset
from pyro_jepa.models import VarTJEPA
from pyro_jepa.presets import PRESETS, make_preset


def step(model: VarTJEPA, optimizer: torch.optim.Optimizer, rows: torch.Tensor) -> float:
    started = time.perf_counter()
    loss = model.loss(rows, step=10_000)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="sim")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model (the compiled one compiles here)")
    args = p.parse_args(argv)

    splits = load_dataset(args.dataset, data_dir=args.data_dir)
    config, _ = make_preset(args.preset, args.dataset, len(splits.train))
    models = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = VarTJEPA(splits.schema, config)
        if name == "compiled":
            for module in (model.context_encoder, model.target_encoder, model.predictor):
                module.transformer = torch.compile(module.transformer, dynamic=True)
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    g = torch.Generator().manual_seed(1)
    batches = [splits.train.rows[torch.randint(0, len(splits.train), (args.batch_size,), generator=g)] for _ in range(args.warmup + args.reps)]
    times = {name: [] for name in models}
    warm = {}
    with pyro.validation_enabled(False):
        for name, (model, optimizer) in models.items():
            started = time.perf_counter()
            for rows in batches[: args.warmup]:
                step(model, optimizer, rows)
            warm[name] = time.perf_counter() - started
        for i, rows in enumerate(batches[args.warmup :]):
            for name in (("eager", "compiled") if i % 2 == 0 else ("compiled", "eager")):
                times[name].append(step(*models[name], rows))
    print(f"{args.dataset}, preset {args.preset}, batch {args.batch_size}, {args.reps} timed steps each, {torch.get_num_threads()} threads")
    print("| variant | warm-up (s, incl. compilation) | median step (ms) | min step (ms) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {warm[name]:.1f} | {1000 * statistics.median(values):.1f} | {1000 * min(values):.1f} |")
    ratio = statistics.median(times["compiled"]) / statistics.median(times["eager"])
    print(f"compiled / eager median step: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
