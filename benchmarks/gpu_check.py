"""Check the CUDA path in one command (a few minutes on one GPU): step time, memory, bf16, host syncs, DDP.

    python benchmarks/gpu_check.py                       # on a GPU machine: paper preset, SIM (generated)
    python benchmarks/gpu_check.py --dataset adult --data-dir ../shared/data
    python benchmarks/gpu_check.py --tiny --device cpu   # seconds on a CPU; the test suite runs this

What it runs, on Var-T-JEPA with the preset's model (the paper's Table 7 row by default):

1. ``fp32``: median time of a training step (loss through Pyro's ELBO, backward, clipping, AdamW)
   and the peak of ``torch.cuda.max_memory_allocated`` over the timed steps;
2. ``bf16``: the same under bfloat16 autocast (log-densities stay float32), and its first loss
   against fp32's on the same batch, masks and noise;
3. ``no host sync``: the model's step (loss, backward, clipping, optimizer) inside
   ``torch.cuda.set_sync_debug_mode("error")``, so any hidden ``.item()``/host copy raises. The engine
   itself adds one deliberate sync per step (the non-finite guard before the update), outside this check;
4. ``fit``: one short epoch through `pyro_jepa.train.fit` on the device (checkpoints included);
5. ``ddp``: with two or more GPUs, ``torchrun --nproc_per_node 2`` of the main job for one epoch.

Prints a table and writes every number to ``--out`` (JSON) with the device, versions and command.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyro
import torch

from pyro_jepa import cli, io
from pyro_jepa.benchmarking import cpu_summary, sync, training_step
from pyro_jepa.data import load_dataset
from pyro_jepa.models import VarTJEPA
from pyro_jepa.presets import make_preset
from pyro_jepa.report import markdown_table
from pyro_jepa.train import TrainConfig, _optimizer, fit, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="sim", help="named dataset (default: sim, generated, no download)")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets")
    p.add_argument("--preset", default="paper", choices=("cpu", "paper"))
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:1, cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per precision (after 3 warm-up steps)")
    p.add_argument("--tiny", action="store_true", help="cpu preset, 300 rows, batch 64, 2 steps: a smoke test of this script")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON file with every number")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def time_steps(method: VarTJEPA, train_config: TrainConfig, rows: torch.Tensor, steps: int, amp: bool, warmup: int = 3) -> dict:
    """Median step time (ms), peak CUDA memory (MiB) and the first loss of ``steps`` timed steps."""
    device = rows.device
    optimizer = _optimizer(method, train_config)
    step = method.selectable_from()  # final loss weights: every site and network is active
    first = float(training_step(method, optimizer, rows, step, amp))
    for _ in range(warmup - 1):
        training_step(method, optimizer, rows, step, amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        sync(device)
        started = time.perf_counter()
        training_step(method, optimizer, rows, step, amp)
        sync(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"median_ms": 1000 * statistics.median(times), "peak_mib": peak, "first_loss": first}


def check_no_sync(method: VarTJEPA, train_config: TrainConfig, rows: torch.Tensor) -> str:
    """"ok" when a whole training step runs under the CUDA sync debugger in "error" mode, else the error."""
    if rows.device.type != "cuda":
        return "n/a (CPU)"
    optimizer = _optimizer(method, train_config)
    training_step(method, optimizer, rows, 0, False)  # lazy initialisation (optimizer state) outside the check
    torch.cuda.set_sync_debug_mode("error")
    try:
        training_step(method, optimizer, rows, method.selectable_from(), False)
    except RuntimeError as err:
        return f"FAILED: {str(err).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "ok"


def check_ddp(args: argparse.Namespace) -> str:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return f"skipped ({torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s))"
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "experiments/var_t_jepa.py",
                   "--epochs", "1", "--max-rows", "4000", "--predictors", "linear", "--device", "cuda", "--no-progress",
                   "--out", str(Path(tmp) / "run")]
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"


def main(argv: list[str] | None = None) -> int:
    """Run the checks; user errors end with one line, not a traceback (`pyro_jepa.cli`)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    preset, rows_wanted, steps = ("cpu", 300, 2) if args.tiny else (args.preset, None, args.steps)
    splits = load_dataset(args.dataset, data_dir=args.data_dir, max_rows=rows_wanted, seed=0)
    model_config, train_config = make_preset(preset, args.dataset, len(splits.train))
    batch_size = min(64 if args.tiny else train_config.batch_size, len(splits.train))
    rows = splits.train.rows[:batch_size].to(device)
    results: dict = {"command": cli.command_line("benchmarks/gpu_check.py", argv), "device": str(device),
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu_summary()}",
                     "versions": {"torch": torch.__version__, "pyro": pyro.__version__, "cuda": torch.version.cuda},
                     "preset": preset, "dataset": args.dataset, "batch_size": batch_size, "model": model_config}
    for name, amp in (("fp32", False), ("bf16", True)):
        pyro.set_rng_seed(0)
        torch.manual_seed(0)
        method = VarTJEPA(splits.schema, model_config).to(device)
        method.reseed(0)
        results[name] = time_steps(method, train_config, rows, steps, amp)
    results["bf16_vs_fp32_first_loss"] = results["bf16"]["first_loss"] / results["fp32"]["first_loss"]
    results["no_host_sync"] = check_no_sync(VarTJEPA(splits.schema, model_config).to(device), train_config, rows)
    with tempfile.TemporaryDirectory() as tmp:
        small = load_dataset(args.dataset, data_dir=args.data_dir, max_rows=300 if args.tiny else 2000, seed=0)
        config = replace(train_config, epochs=1, batch_size=min(batch_size, len(small.train)), select="loss", progress=False,
                         device=str(device), seed=0)
        weights = replace(model_config.weights, anneal_s_x=0, anneal_z=0, anneal_s_y=0)
        started = time.perf_counter()
        result = fit(VarTJEPA(small.schema, replace(model_config, weights=weights)), small.train, small.val, config, Path(tmp))
        results["fit"] = {"seconds": time.perf_counter() - started, "epochs": len(result.history),
                          "val_loss": result.history[-1]["val_loss"]}
    results["ddp"] = check_ddp(args) if not args.tiny else "skipped (--tiny)"
    def step_text(name: str) -> str:
        peak = results[name]["peak_mib"]
        return f"{results[name]['median_ms']:.1f} ms" + (f", peak {peak:.0f} MiB" if device.type == "cuda" else "")

    table = [
        {"check": "fp32 step", "result": step_text("fp32")},
        {"check": "bf16 step", "result": f"{step_text('bf16')}, first loss {results['bf16_vs_fp32_first_loss']:.4f} x fp32's"},
        {"check": "no host sync in a step", "result": results["no_host_sync"]},
        {"check": "fit, 1 epoch", "result": f"{results['fit']['seconds']:.1f} s, val loss {results['fit']['val_loss']:.4g}"},
        {"check": "DDP, 2 GPUs", "result": results["ddp"]},
    ]
    print(f"{results['device_name']} ({device}), preset {preset}, {args.dataset}, batch {batch_size}\n")
    print(markdown_table(pd.DataFrame(table)))
    io.write_json(results, args.out)
    print(f"\nwrote {args.out}")
    failed = [row["check"] for row in table if "FAILED" in row["result"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
