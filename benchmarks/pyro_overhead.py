"""What Pyro costs per Var-T-JEPA training step: the Pyro ELBO against the same loss written by hand.

    python benchmarks/pyro_overhead.py --data-dir /work/shared/data          # adult, paper preset, batch 512
    python benchmarks/pyro_overhead.py --device cuda --reps 100              # the same on a GPU

Four ways to take one optimizer step on the same modules, batch, masks and optimizer settings:

* ``hand``: the Trace_ELBO loss (or the analytic-KL loss with ``--elbo meanfield``) written in
  plain torch from the model's networks, torch AdamW (the engine's two parameter groups) and
  global gradient-norm clipping;
* ``pyro``: ``elbo.differentiable_loss(model, guide, ...)`` with the same torch AdamW, as
  `pyro_jepa.train.fit` does;
* ``pyro-nosync``: the same through the engine's default ELBO, which skips Pyro's per-site
  ``.item()`` calls (`pyro_jepa.infer.SyncFreeTrace_ELBO`);
* ``svi``: ``pyro.infer.SVI.step`` with ``pyro.optim.AdamW`` (one torch optimizer per
  parameter tensor, per-tensor clipping) and ``pyro.module`` registration in model and guide.

Before timing, the hand-written and Pyro losses and gradients are checked to agree on the same
noise. Repetitions are interleaved (the order rotates every repetition) so every variant sees the
same machine load; each variant trains its own copy of the model from the same initial weights.
Memory: on a GPU the peak of ``torch.cuda.max_memory_allocated`` over the timed steps; on every
device the tensors autograd saves for backward in one extra untimed step (the activations, which
dominate a step's peak; ``ru_maxrss`` cannot attribute a peak to one interleaved variant and
tracemalloc does not see torch's allocator), plus the process's ``ru_maxrss`` at the end.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyro
import torch

from pyro_jepa import cli
from pyro_jepa.benchmarking import cpu_summary, saved_activation_mib, sync
from pyro_jepa.data import load_dataset
from pyro_jepa.data.registry import DatasetNotFoundError
from pyro_jepa.models import VarTJEPA
from pyro_jepa.models.var_jepa import weighted_loss
from pyro_jepa.nn import scatter_tokens
from pyro_jepa.presets import VARIANTS as MODEL_VARIANTS, make_preset
from pyro_jepa.train import _optimizer, clip_gradients, resolve_device

VARIANTS = ("hand", "pyro", "pyro-nosync", "svi")
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_density(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - LOG_SQRT_2PI


def gaussian_kl(loc_q, scale_q, loc_p, scale_p) -> torch.Tensor:
    var_q, var_p = scale_q**2, scale_p**2
    return 0.5 * (var_q / var_p + (loc_p - loc_q) ** 2 / var_p + torch.log(var_p / var_q) - 1)


def tabular_log_lik(m: VarTJEPA, path: str, latents, rows, n_num: int) -> torch.Tensor:
    """Per-feature log-density of ``rows`` under the context (``path="x"``) or target (``"y"``) decoder,
    whose numerical scale is global or per row (the model variant's)."""
    loc, scale, logits = m.decode(path, latents)
    lp_num = normal_log_density(rows[..., :n_num], loc, scale)
    codes = rows[..., n_num:].long()
    lp_cat = torch.log_softmax(logits, -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    return torch.cat([lp_num, lp_cat], -1)


def hand_loss(m: VarTJEPA, rows, context, target, weights: dict[str, float], analytic: bool) -> torch.Tensor:
    """Var-T-JEPA's loss (Eq. 10, the program's normalizers) in plain torch.

    Networks run and noise is drawn in the order Pyro runs the guide and then the model, so with
    the same seed both see the same dropout masks and the same reparameterization noise.
    """
    b, n_feat = rows.shape
    k, m_trg = target.shape[1:]
    m_ctx = context.shape[1]
    loc_x, scale_x = m.context_head(m.context_encoder(rows, index=context))
    s_x = loc_x + torch.randn_like(loc_x) * scale_x
    pooled = m.pool(s_x)
    loc_z, scale_z = m.aux_encoder(pooled.flatten(1))
    z = loc_z + torch.randn_like(loc_z) * scale_z
    loc_w, scale_w = m.target_params(rows, pooled, z)
    s_w = loc_w.unsqueeze(1) + torch.randn(b, k, n_feat, loc_w.shape[-1], device=rows.device) * scale_w.unsqueeze(1)
    loc_p, scale_p = m.predictor_head(m.predictor(s_x, context, target, condition=z))
    idx = target.unsqueeze(-1).expand(-1, -1, -1, loc_w.shape[-1])
    loc_q = torch.gather(loc_w.unsqueeze(1).expand(-1, k, -1, -1), 2, idx)
    scale_q = torch.gather(scale_w.unsqueeze(1).expand(-1, k, -1, -1), 2, idx)
    zero, one = rows.new_zeros(()), rows.new_ones(())
    if analytic:
        kl_sx = gaussian_kl(loc_x, scale_x, zero, one)
        kl_z = gaussian_kl(loc_z, scale_z, zero, one)
        kl_sy = gaussian_kl(loc_q, scale_q, loc_p, scale_p)
    else:
        s_y = torch.gather(s_w, 2, idx)
        kl_sx = normal_log_density(s_x, loc_x, scale_x) - normal_log_density(s_x, zero, one)
        kl_z = normal_log_density(z, loc_z, scale_z) - normal_log_density(z, zero, one)
        kl_sy = normal_log_density(s_y, loc_q, scale_q) - normal_log_density(s_y, loc_p, scale_p)
    n_num = m.schema.n_numerical
    ctx_mask = torch.zeros_like(rows).scatter(1, context, 1.0)
    rec = tabular_log_lik(m, "x", scatter_tokens(s_x, context, n_feat), rows, n_num)
    gen = tabular_log_lik(m, "y", s_w, rows.unsqueeze(1).expand(-1, k, -1), n_num)
    terms = {
        "rec": -(rec * ctx_mask).sum() / (m_ctx * b),
        "gen": -gen.sum() / (k * n_feat * b),
        "kl_s_x": kl_sx.sum() / (m_ctx * b),
        "kl_z": kl_z.sum() / b,
        "kl_s_y": kl_sy.sum() / (k * m_trg * b),
    }
    return weighted_loss(terms, weights)


class Runner:
    """One variant: its own model copy, optimizer and step function."""

    def __init__(self, variant: str, base: VarTJEPA, train_config, analytic: bool) -> None:
        self.variant, self.analytic = variant, analytic
        self.model = copy.deepcopy(base).train()
        self.clip = train_config.grad_clip
        elbo_cls = pyro.infer.TraceMeanField_ELBO if analytic else pyro.infer.Trace_ELBO
        if variant == "svi":
            optim = pyro.optim.AdamW({"lr": train_config.lr, "weight_decay": train_config.weight_decay}, {"clip_norm": self.clip})
            self.svi = pyro.infer.SVI(self._svi_model, self._svi_guide, optim, loss=elbo_cls(max_plate_nesting=1))
        else:
            self.optimizer = _optimizer(self.model, train_config)
            # "pyro" is stock Pyro; "pyro-nosync" is the ELBO the model trains with by default.
            self.elbo = elbo_cls(max_plate_nesting=1) if variant == "pyro" else self.model.elbo

    # SVI finds parameters through the param store, so model and guide register the module.
    def _svi_model(self, *data, weights):
        pyro.module("var_t_jepa", self.model)
        self.model.model(*data, weights=weights)

    def _svi_guide(self, *data, weights):
        pyro.module("var_t_jepa", self.model)
        self.model.guide(*data, weights=weights)

    def loss(self, rows, context, target, weights) -> torch.Tensor:
        if self.variant == "hand":
            return hand_loss(self.model, rows, context, target, weights, self.analytic)
        return self.elbo.differentiable_loss(self.model.model, self.model.guide, rows, context, target, weights=weights)

    def step(self, rows, context, target, weights) -> None:
        if self.variant == "svi":
            self.svi.step(rows, context, target, weights=weights)
            return
        loss = self.loss(rows, context, target, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(self.model, self.clip)
        self.optimizer.step()


def setup(args):
    try:
        splits = load_dataset(args.dataset, data_dir=args.data_dir, seed=0)
        dataset = args.dataset
    except (DatasetNotFoundError, FileNotFoundError):
        print(f"{args.dataset} not found under {args.data_dir}; falling back to SIM", file=sys.stderr)
        splits, dataset = load_dataset("sim", seed=0), "sim"
    model_config, train_config = make_preset("paper", dataset, len(splits.train), variant=args.model_variant)
    model_config = replace(model_config, elbo=args.elbo)
    train_config = replace(train_config, batch_size=args.batch_size)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    base = VarTJEPA(splits.schema, model_config).to(device)
    weights = model_config.weights
    # A step after every KL warm-up, so all five terms are active.
    step = max(weights.anneal_s_x, weights.anneal_z, weights.anneal_s_y)
    return splits, dataset, model_config, train_config, device, base, weights.at(step)


def check_agreement(base: VarTJEPA, rows, masks, weights, analytic: bool) -> tuple[float, float, float]:
    """Loss difference and max relative gradient difference of hand vs Pyro on the same noise."""
    hand, pyro_copy = copy.deepcopy(base).train(), copy.deepcopy(base).train()
    elbo = (pyro.infer.TraceMeanField_ELBO if analytic else pyro.infer.Trace_ELBO)(max_plate_nesting=1)
    pyro.set_rng_seed(123)
    a = hand_loss(hand, rows, masks.context, masks.target, weights, analytic)
    pyro.set_rng_seed(123)
    b = elbo.differentiable_loss(pyro_copy.model, pyro_copy.guide, rows, masks.context, masks.target, weights=weights)
    a.backward()
    b.backward()
    grad_err = max(
        float((p.grad - q.grad).abs().max() / (q.grad.abs().max() + 1e-12))
        for p, q in zip(hand.parameters(), pyro_copy.parameters())
        if q.grad is not None and q.grad.numel() and q.grad.abs().max() > 0
    )
    return float(a.detach()), float(b.detach()), grad_err


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="adult")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the named datasets (SIM if missing)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--reps", type=int, default=40, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--elbo", choices=("trace", "meanfield"), default="trace")
    p.add_argument("--model-variant", default="default", choices=sorted(MODEL_VARIANTS),
                   help="the model variant (pyro_jepa.presets.VARIANTS; default: the library's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    analytic = args.elbo == "meanfield"
    splits, dataset, model_config, train_config, device, base, weights = setup(args)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"{dataset}: {len(splits.train)} training rows, D={splits.schema.n_features}; paper preset, model variant {args.model_variant} "
          f"(decoder scale {model_config.decoder_scale}), d={model_config.dim}, "
          f"L={model_config.depth}, Lp={model_config.pred_dim}; {n_params:,} parameters in "
          f"{len(list(base.parameters()))} tensors; batch {args.batch_size}; device {device}, {torch.get_num_threads()} threads")

    rows_all = splits.train.rows.to(device)
    g = torch.Generator().manual_seed(1)
    batch = rows_all[torch.randperm(len(rows_all), generator=g)[: args.batch_size].to(device)]
    masks = base.masks(args.batch_size, device)
    a, b, grad_err = check_agreement(base, batch, masks, weights, analytic)
    print(f"agreement on the same noise: hand loss {a:.6f}, Pyro loss {b:.6f}, |diff| {abs(a - b):.2e}, "
          f"max relative gradient difference {grad_err:.2e}")
    if not math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5) or grad_err > 1e-3:
        print("hand-written and Pyro losses disagree; timing would compare different things", file=sys.stderr)
        return 1

    runners = {v: Runner(v, base, train_config, analytic) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, float] = {v: 0.0 for v in variants}
    on_gpu = device.type == "cuda"
    with pyro.validation_enabled(False):
        for rep in range(args.warmup + args.reps):
            idx = torch.randperm(len(rows_all), generator=g)[: args.batch_size].to(device)
            rows = rows_all[idx]
            m = base.masks(args.batch_size, device)
            order = variants[rep % len(variants):] + variants[: rep % len(variants)]
            for v in order:
                if on_gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                t0 = time.perf_counter()
                runners[v].step(rows, m.context, m.target, weights)
                sync(device)
                if rep >= args.warmup:
                    times[v].append(time.perf_counter() - t0)
                if on_gpu:
                    peaks[v] = max(peaks[v], torch.cuda.max_memory_allocated(device) / 2**20)
        saved = {v: saved_activation_mib(lambda v=v: runners[v].step(rows, m.context, m.target, weights)) for v in variants}

    hand_median = statistics.median(times["hand"]) if "hand" in times else float("nan")

    def paired(v: str) -> str:
        # Steps of one repetition run back to back, so their ratio cancels load that drifts between repetitions.
        if "hand" not in times:
            return "-"
        q1, med, q3 = quartiles([t / h for t, h in zip(times[v], times["hand"])])
        return f"{med:.3f} ({q1:.3f}–{q3:.3f})"

    gpu_column = " peak CUDA memory (MiB) |" if on_gpu else ""
    print(f"\n| variant | median step (ms) | IQR (ms) | rows/s | saved activations (MiB) |{gpu_column} "
          "step / hand-written: ratio of medians | median of per-repetition ratios (IQR) |")
    print("|---|---|---|---|---|" + ("---|" if on_gpu else "") + "---|---|")
    for v in variants:
        q1, med, q3 = quartiles(times[v])
        print(f"| {v} | {med * 1e3:.1f} | {q1 * 1e3:.1f}–{q3 * 1e3:.1f} | {args.batch_size / med:,.0f} | "
              f"{saved[v]:.0f} |" + (f" {peaks[v]:.0f} |" if on_gpu else "") + f" {med / hand_median:.3f} | {paired(v)} |")
    print(f"\nprocess peak resident set (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"{args.reps} timed steps per variant (after {args.warmup} untimed), interleaved; "
          f"torch {torch.__version__}, pyro {pyro.__version__}, Python {platform.python_version()}, {cpu_summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
