"""How much of the machine a training step uses: achieved FLOP/s against the same machine's matmul.

    python benchmarks/utilisation.py                                   # cpu preset, paper preset, VJE
    python benchmarks/utilisation.py --cases cpu --reps 20 --threads 2
    python benchmarks/utilisation.py --data-dir ../shared/data         # the paper preset on Adult

For each case, one training step (loss through the Pyro ELBO, backward, gradient clipping, the
engine's AdamW) is

1. counted: floating-point operations of forward and backward from `torch.utils.flop_counter`, with
   the CPU flash-attention kernels registered (torch counts only the CUDA attention kernels, so a
   plain ``FlopCounterMode`` misses the largest part of a CPU step);
2. timed: the median of ``--reps`` steps after ``--warmup`` untimed ones, and split into phases: the
   forward of each network component (module hooks), the rest of the forward (the Pyro program,
   distributions, ELBO), backward, and the optimizer (clipping + AdamW);
3. profiled: the operators with the most self time (``torch.profiler``), and the attention calls
   grouped by shape, each group timed alone at its median length (forward + backward) with the math
   and the flash backend; the encoders' feed-forward layer is timed alone too. These say how fast the
   step's own kernels can run at the step's shapes. On a CPU, clipping + AdamW over the model's
   parameters is also timed per torch code path (per-tensor loop, foreach, fused);
4. bounded: the *kernel ceiling*, the share a step would reach if its attention ran at the faster
   backend and every other FLOP at the feed-forward layer's speed (`kernel_ceiling`), an upper bound
   on what tuning the rest of the step can give at these shapes.

Cases: ``cpu`` (Var-T-JEPA, the cpu preset on SIM, batch 256, the main job's model), ``paper``
(Var-JEPA Table 7's Adult row, batch 512; SIM's columns when Adult is not found) and ``vje`` (VJE's
cpu preset: the small convnet on 32x32 images, batch 256, random pixels: the cost does not depend
on the values; VJEConfig's defaults, 32 particles and β = 0.7); ``vje-1p``, not run by default, is
the same with the plain one-sample ELBO (one particle, β = 1). The reference is a 1024x1024 float32 matmul on the same threads. Writes every
number to ``--out`` (JSON) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyro
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils import flop_counter

from pyro_jepa import cli, io
from pyro_jepa.benchmarking import count_flops, cpu_summary, machine_description, matmul_flops_per_second, median_time, sync
from pyro_jepa.data import load_dataset
from pyro_jepa.data.registry import DatasetNotFoundError
from pyro_jepa.models import VJE, VarTJEPA
from pyro_jepa.models.vje import VJEConfig
from pyro_jepa.presets import make_preset
from pyro_jepa.report import markdown_table
from pyro_jepa.train import TrainConfig, _optimizer, clip_gradients, resolve_device

# VJE's cases: VJEConfig's defaults, and the plain one-sample ELBO (the default before docs/results/vje.md §4e).
VJE_CASES = {"vje": {}, "vje-1p": {"particles": 1, "kl_weight": 1.0}}
CASES = ("cpu", "paper", *VJE_CASES)
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                 "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention")


class Case:
    """A model, its optimizer, a batch source and the components whose forward time is reported."""

    def __init__(self, name: str, model: torch.nn.Module, batches: Callable[[], torch.Tensor], components: dict[str, list[torch.nn.Module]],
                 note: str, linear_shape: tuple[int, int, int] | None = None):
        self.name, self.model, self.batches, self.components, self.note = name, model, batches, components, note
        # (rows, in, out) of the encoders' feed-forward layer, timed alone for comparison
        self.linear_shape = linear_shape
        self.optimizer = _optimizer(model, TrainConfig())

    def step(self, phases: dict[str, float] | None = None, device: torch.device = torch.device("cpu")) -> None:
        """One training step as the engine takes it; with ``phases``, adds each phase's seconds to it."""
        rows = self.batches()
        clock = _Clock(device, phases)
        loss = self.model.loss(rows, step=10**9)  # past every warm-up: the final loss weights
        clock.lap("forward")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap("backward")
        clip_gradients(self.model, 1.0)
        self.optimizer.step()
        clock.lap("optimizer")


class _Clock:
    def __init__(self, device: torch.device, phases: dict[str, float] | None) -> None:
        self.device, self.phases = device, phases
        sync(device)
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.phases is None:
            return
        sync(self.device)
        now = time.perf_counter()
        self.phases[name] += now - self.last
        self.last = now


def tabular_case(name: str, preset: str, dataset: str, data_dir: Path | None, device: torch.device) -> Case:
    splits = load_dataset(dataset, data_dir=data_dir)
    config, train = make_preset(preset, dataset, len(splits.train))
    torch.manual_seed(0)
    model = VarTJEPA(splits.schema, config).to(device)
    rows = splits.train.rows.to(device)
    g = torch.Generator().manual_seed(1)

    def batches() -> torch.Tensor:
        return rows[torch.randint(0, len(rows), (train.batch_size,), generator=g).to(device)]

    components = {
        "context encoder": [model.context_encoder, model.context_head],
        "pooling + z": [model.pool, model.aux_encoder],
        "target encoder": [model.target_encoder, model.target_head],
        "predictor": [model.predictor, model.predictor_head],
        "decoders": [model.context_decoder, model.target_decoder],
    }
    note = (f"Var-T-JEPA, {preset} preset, {dataset} ({splits.schema.n_features} features), batch {train.batch_size}, "
            f"d {config.dim}, depth {config.depth}, heads {config.heads}, predictor {config.pred_dim}x{config.pred_depth}")
    tokens = train.batch_size * (config.n_cls + splits.schema.n_features)
    return Case(name, model, batches, components, note, linear_shape=(tokens, config.dim, config.ff))


def vje_case(name: str, device: torch.device, batch: int = 256) -> Case:
    """The VJE case ``name`` of `VJE_CASES`."""
    torch.manual_seed(0)
    config = VJEConfig(backbone="convnet", width=16, image_size=32, **VJE_CASES[name])
    model = VJE(config).to(device)
    g = torch.Generator().manual_seed(1)

    def batches() -> torch.Tensor:
        return torch.randint(0, 256, (batch, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)

    # The augmentations are not a module: their time is in the forward's "rest".
    components = {"backbone": [model.backbone], "inference network": [model.inference, model.head]}
    note = (f"VJE, cpu preset (convnet width 16, 32x32 images), batch {batch}, {config.particles} particle(s), "
            f"KL weight {config.kl_weight:g}")
    return Case(name, model, batches, components, note)


def forward_component_times(case: Case, reps: int, device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Mean seconds per step of each component's forward calls (module hooks), and of the step's phases."""
    spent: dict[str, float] = defaultdict(float)
    handles, started = [], {}
    for label, modules in case.components.items():
        for module in modules:
            def pre(mod, args, label=label):
                sync(device)
                started[id(mod)] = time.perf_counter()

            def post(mod, args, out, label=label):
                sync(device)
                spent[label] += time.perf_counter() - started.pop(id(mod))

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    phases: dict[str, float] = defaultdict(float)
    try:
        for _ in range(reps):
            case.step(phases, device)
    finally:
        for h in handles:
            h.remove()
    return {k: v / reps for k, v in spent.items()}, {k: v / reps for k, v in phases.items()}


def profile_step(case: Case, steps: int, top: int) -> tuple[list[dict], list[dict]]:
    """The ``top`` operators by self time, and the attention calls grouped by ``(B, H, d_head)``:
    calls per step, their sequence lengths and their share of the step's attention FLOPs."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            case.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    top_ops = [{"op": e.key, "calls per step": e.count / steps, "share of step": e.self_cpu_time_total / total} for e in ops]
    # Mask sizes change every batch, so one network's attention calls come in many lengths.
    groups: dict[tuple, list[int]] = defaultdict(list)
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in ATTENTION_OPS and len(e.input_shapes[0]) == 4:
            b, h, length, d = e.input_shapes[0]
            groups[(b, h, d)] += [length] * e.count
    cost = {key: sum(key[0] * key[1] * key[2] * n * n for n in lengths) for key, lengths in groups.items()}
    attention = [
        {"B": b, "H": h, "d_head": d, "calls per step": len(lengths) / steps, "median L": int(statistics.median(lengths)),
         "share of attention FLOPs": cost[(b, h, d)] / sum(cost.values())}
        for (b, h, d), lengths in sorted(groups.items(), key=lambda kv: -cost[kv[0]])
    ]
    return top_ops, attention


def attention_kernel(shape: list[int], reps: int, device: torch.device) -> dict[str, float]:
    """Forward + backward of self-attention at ``shape`` alone, per backend: seconds and GFLOP/s."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, length, d = shape
    q, k, v = (torch.randn(b, h, length, d, device=device, requires_grad=True) for _ in range(3))
    shape = (b, h, length, d)
    flops = flop_counter.sdpa_flop_count(shape, shape, shape) + flop_counter.sdpa_backward_flop_count(shape, shape, shape, shape)
    out = {}
    for backend in (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION):
        def run():
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()

        try:
            seconds = median_time(run, reps, 2, device)
        except RuntimeError:  # no such kernel for this device or shape
            continue
        out[backend.name.lower()] = {"ms": 1000 * seconds, "GFLOP/s": flops / seconds / 1e9}
    return out


def linear_kernel(n_rows: int, d_in: int, d_out: int, reps: int, device: torch.device) -> dict[str, float]:
    """Forward + backward of one linear layer ``(n_rows, d_in) -> d_out`` alone: ms and GFLOP/s."""
    x = torch.randn(n_rows, d_in, device=device, requires_grad=True)
    layer = torch.nn.Linear(d_in, d_out).to(device)
    seconds = median_time(lambda: layer(x).sum().backward(), reps, 2, device)
    return {"shape": [n_rows, d_in, d_out], "ms": 1000 * seconds, "GFLOP/s": 3 * 2 * n_rows * d_in * d_out / seconds / 1e9}


def optimizer_paths(model: torch.nn.Module, reps: int, steps: int = 30) -> dict[str, dict[str, float]]:
    """Clipping + AdamW over ``model``'s parameters with random gradients, per torch code path: median
    ms per optimizer step, and the largest difference from the per-tensor loop after ``steps`` steps."""
    flags = {"per-tensor loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=g) for p in model.parameters()] for _ in range(steps)]
    after, out = {}, {}
    for path, flag in flags.items():
        params = torch.nn.ParameterList(torch.nn.Parameter(p.detach().clone()) for p in model.parameters())
        optimizer = _optimizer(params, TrainConfig(lr=1e-3, weight_decay=0.05), **flag)
        feed = itertools.cycle(grads)

        def step() -> None:
            for p, grad in zip(params, next(feed)):
                p.grad = grad.clone()
            clip_gradients(params, 1.0, foreach=flag.get("foreach", True))
            optimizer.step()

        for _ in range(steps):
            step()
        after[path] = [p.detach().clone() for p in params]
        difference = max(float((a - b).abs().max()) for a, b in zip(after["per-tensor loop"], after[path]) if a.numel())
        out[path] = {"ms": 1000 * median_time(step, reps, 0), "max |difference| from the loop": difference}
    return out


def kernel_ceiling(flops: float, attention: list[dict], linear: dict | None, matmul: float) -> float | None:
    """The share of the matmul reference that a step of ``flops`` could reach with its own kernels: its
    attention calls at the faster measured backend (each group at its median length) and every other
    FLOP at the speed of the model's own feed-forward layer alone. Elementwise work, dropout masks and
    the optimizer cost nothing here, so the real step can only be slower: a step whose attention is
    slow at its shapes cannot reach a share above this, however the rest is tuned."""
    if not linear:
        return None
    attention_seconds = attention_flops = 0.0
    for group in attention:
        backends = [key.removesuffix(" (ms)") for key in group if key.endswith(" (ms)")]  # those `measure` timed
        fastest = min(backends, key=lambda b: group[f"{b} (ms)"])
        seconds = group["calls per step"] * group[f"{fastest} (ms)"] / 1e3
        attention_seconds += seconds
        attention_flops += seconds * group[f"{fastest} (GFLOP/s)"] * 1e9
    rest_seconds = max(flops - attention_flops, 0.0) / (linear["GFLOP/s"] * 1e9)
    return flops / (attention_seconds + rest_seconds) / matmul


def measure(case: Case, args: argparse.Namespace, device: torch.device, matmul: float) -> dict:
    with pyro.validation_enabled(False):
        flops = count_flops(case.step)
        step = median_time(lambda: case.step(device=device), args.reps, args.warmup, device)
        forward_parts, phases = forward_component_times(case, args.reps, device)
        top_ops, attention = profile_step(case, args.profile_steps, args.top)
    breakdown = {f"forward: {k}": v for k, v in forward_parts.items()}
    breakdown["forward: rest (Pyro program, distributions, ELBO; VJE: augmentations)"] = phases["forward"] - sum(forward_parts.values())
    breakdown |= {"backward": phases["backward"], "optimizer (clip + AdamW)": phases["optimizer"]}
    phase_total = sum(phases.values())
    # Each group of attention calls at its median length, timed alone with each backend.
    for group in attention:
        shape = [group["B"], group["H"], group["median L"], group["d_head"]]
        for backend, timing in attention_kernel(shape, args.reps, device).items():
            group |= {f"{backend} (ms)": timing["ms"], f"{backend} (GFLOP/s)": timing["GFLOP/s"]}
    linear = linear_kernel(*case.linear_shape, args.reps, device) if case.linear_shape else None
    optimizers = optimizer_paths(case.model, args.reps) if device.type == "cpu" else None
    return {
        "case": case.name, "model": case.note, "parameters": sum(p.numel() for p in case.model.parameters()),
        "GFLOP per step": flops / 1e9, "median step (ms)": 1000 * step, "achieved GFLOP/s": flops / step / 1e9,
        "share of matmul": flops / step / matmul, "kernel ceiling (share of matmul)": kernel_ceiling(flops, attention, linear, matmul),
        "breakdown (share of step)": {k: v / phase_total for k, v in breakdown.items()},
        "top operators": top_ops, "attention calls": attention, "feed-forward matmul alone": linear,
        "optimizer paths (clip + AdamW, random gradients)": optimizers,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["cpu", "paper", "vje"], choices=CASES,
                   help="vje-1p: VJE with one particle and β = 1 (not run by default)")
    p.add_argument("--data-dir", type=Path, help="folder with the named datasets (for Adult in the paper case)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--reps", type=int, default=10, help="timed steps per case (default 10)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--top", type=int, default=8, help="operators listed per case")
    p.add_argument("--out", type=Path, default=Path("utilisation.json"))
    args = p.parse_args(argv)
    if args.reps < 1 or args.warmup < 0 or args.profile_steps < 1:
        p.error("--reps and --profile-steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    matmul = matmul_flops_per_second(device)
    results = []
    for name in args.cases:
        if name in VJE_CASES:
            case = vje_case(name, device)
        elif name == "cpu":
            case = tabular_case(name, "cpu", "sim", None, device)
        else:
            try:
                case = tabular_case(name, "paper", "adult", args.data_dir, device)
            except DatasetNotFoundError:
                print("Adult not found (pass --data-dir): the paper case uses SIM's Table 7 row")
                case = tabular_case(name, "paper", "sim", None, device)
        results.append(measure(case, args, device, matmul))
        print(f"{name}: {results[-1]['achieved GFLOP/s']:.1f} GFLOP/s, {results[-1]['share of matmul']:.1%} of matmul", flush=True)

    header = {"command": " ".join(["python benchmarks/utilisation.py", *(sys.argv[1:] if argv is None else argv)]), "device": str(device),
              **machine_description(), "matmul 1024x1024 float32 GFLOP/s": matmul / 1e9}
    io.write_json({**header, "cases": results}, args.out)
    print(f"\n{header['threads']} threads, {device} ({cpu_summary()}); matmul 1024x1024 float32: {matmul / 1e9:.1f} GFLOP/s\n")
    print(markdown_table(pd.DataFrame([{k: r[k] for k in ("case", "GFLOP per step", "median step (ms)", "achieved GFLOP/s", "share of matmul", "kernel ceiling (share of matmul)")} for r in results])))
    for r in results:
        print(f"\n{r['case']}: {r['model']}\n")
        print(markdown_table(pd.DataFrame([{"phase": k, "share of step": v} for k, v in r["breakdown (share of step)"].items()])))
        print()
        print(markdown_table(pd.DataFrame(r["top operators"])))
        if r["feed-forward matmul alone"]:
            lin = r["feed-forward matmul alone"]
            print(f"\nthe encoders' feed-forward layer {lin['shape']} alone, forward + backward: {lin['ms']:.1f} ms, {lin['GFLOP/s']:.1f} GFLOP/s")
        if r["optimizer paths (clip + AdamW, random gradients)"]:
            print()
            print(markdown_table(pd.DataFrame([{"optimizer path": k, **v} for k, v in r["optimizer paths (clip + AdamW, random gradients)"].items()]), floats="{:.3g}"))
        if r["attention calls"]:
            print()
            print(markdown_table(pd.DataFrame(r["attention calls"], dtype=object)))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
