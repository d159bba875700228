"""One training engine for every method in the library.

`fit` trains any `pyro_jepa.models.SSLMethod` (Pyro ELBOs and plain-torch baselines alike) with
AdamW, linear warm-up + cosine learning-rate decay, gradient-norm clipping, per-epoch validation
of every loss term, a checkpoint per epoch (``last.pt``, written atomically) with resume, and
selection of the best epoch on the validation split (``best.pt``). Per-term KL annealing lives in
the methods' `LossWeights`, driven by the optimizer step the engine passes to ``loss``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyro
import torch
from tqdm.auto import tqdm

from . import distributed
from .data.tabular import TabularData
from .evaluate.diagnostics import linear_probe_accuracy
from .models.base import SSLMethod

CHECKPOINT_FORMAT = "pyro_jepa-checkpoint-v1"
SELECTION_RULES = ("probe", "loss", "probe-filtered")


@dataclass
class TrainConfig:
    """Optimization settings shared by every method.

    ``select``: "probe" keeps the epoch with the best validation accuracy of a ridge probe on the
    embeddings (label-informed, on the validation split only); "loss" keeps the epoch with the
    lowest validation loss (label-free); "probe-filtered" is the paper's rule for Var-T-JEPA (label-
    informed): the probe's accuracy on the validation rows left after dropping the 20 % most
    uncertain by the method's default score, which favours the selective metrics.

    Epochs that end inside a method's KL warm-up (``method.weights.warmup_steps``) are never
    selected: their loss weights are not yet the final ones, so neither their validation loss nor
    their uncertainty is comparable with a trained model's.
    """

    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    select: str = "probe"
    probe_every: int = 1
    probe_rows: int = 5000
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    amp: str = "none"  # "bf16": networks under bfloat16 autocast; log-densities and KLs stay float32

    def __post_init__(self) -> None:
        if self.amp not in ("none", "bf16"):
            raise ValueError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        if self.select not in SELECTION_RULES:
            raise ValueError(f"select must be one of {SELECTION_RULES}, got {self.select!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")


@dataclass
class FitResult:
    """What `fit` returns: the per-epoch log and where the best epoch's weights are."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    checkpoint_dir: Path | None = None
    seconds: float = 0.0


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read as a pyro_jepa checkpoint."""


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) through Pyro's helper."""
    pyro.set_rng_seed(seed)


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float) -> float:
    """Linear warm-up to ``base_lr``, then cosine decay to ``min_ratio * base_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(state: dict, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())  # the bytes are on disk before the rename makes them the checkpoint
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing code (``weights_only=True``), with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is not a readable pyro_jepa checkpoint (the file is empty)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable pyro_jepa checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyro_jepa checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    return state


def _optimizer(method: SSLMethod, config: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in method.parameters() if p.requires_grad]
    # No weight decay on biases, norms, embeddings' 1-D vectors and scalar scales.
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def _probe_score(method: SSLMethod, train: TabularData, val: TabularData, rows: int, filtered: bool = False) -> float:
    keep = torch.arange(min(rows, len(train)), device=train.rows.device)
    x_train = method.embed(train.rows[keep]).flatten(1).cpu().numpy()
    x_val = method.embed(val.rows).flatten(1).cpu().numpy()
    score = method.default_score if filtered else None
    uncertainty = None if score is None else method.scores(val.rows, [score])[score].cpu().numpy()
    return linear_probe_accuracy(x_train, train.y[keep].cpu().numpy(), x_val, val.y.cpu().numpy(), uncertainty=uncertainty)


def _non_finite_error(
    method: SSLMethod, rows: torch.Tensor, step: int, epoch: int, last_path: Path, what: str
) -> FloatingPointError:
    """The error for a non-finite loss or gradient, naming the loss terms that are non-finite on the batch.

    The terms are re-evaluated with ``method.diagnostics`` (fixed masks), which for Var-T-JEPA gives
    rec/gen/kl_s_x/kl_z/kl_s_y separately; only called on failure, so it costs nothing otherwise.
    """
    try:
        terms = method.diagnostics(rows, step)
        bad = [k for k, v in terms.items() if k != "loss" and not math.isfinite(v)]
        if not bad and not math.isfinite(terms.get("loss", 0.0)):
            bad = ["loss"]
        values = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        detail = (
            f"non-finite ELBO/loss term(s): {', '.join(bad)} ({values})"
            if bad
            else f"every term is finite when re-evaluated with fixed masks ({values}), so one sampled mask or draw overflowed"
        )
    except Exception as err:  # diagnostics itself may fail on non-finite weights or inputs
        detail = f"the loss terms could not be re-evaluated ({type(err).__name__}: {err})"
    if not torch.isfinite(rows).all():
        detail += "; the batch itself holds NaN/inf inputs"
    params = [name for name, p in method.named_parameters() if not torch.isfinite(p).all()]
    if params:
        detail += f"; non-finite parameters: {params[:5]}"
    kept = (
        f"the last good checkpoint {last_path} (after epoch {epoch}) is kept"
        if last_path.exists()
        else "no checkpoint had been written yet"
    )
    return FloatingPointError(
        f"{method.name}: non-finite {what} at epoch {epoch + 1}, step {step}: {detail}; {kept}. "
        "Lower the learning rate (--lr) or the loss weights (--alpha), check the data for extreme values, "
        "then rerun (--resume continues from the last checkpoint)"
    )


def fit(
    method: SSLMethod,
    train: TabularData,
    val: TabularData,
    config: TrainConfig,
    out_dir: Path,
    resume: bool = False,
) -> FitResult:
    """Train ``method`` on ``train`` (the only split it sees for gradients) and select on ``val``.

    Writes ``out_dir/last.pt`` every epoch, ``out_dir/best.pt`` when the validation score
    improves and ``out_dir/history.csv`` (every loss term per epoch). With ``resume=True`` and
    an existing ``last.pt`` the run continues where it stopped. On return the method holds the
    best epoch's weights.

    Inside an initialized ``torch.distributed`` process group (``torchrun``), the method is
    wrapped in `DistributedDataParallel`: every rank draws the same shuffle, takes its strided
    share of each global batch of ``config.batch_size`` rows, and has its own seeds for masks,
    dropout and guide noise; DDP broadcasts rank 0's initial weights and averages gradients.
    Rank 0 alone validates and writes files (resuming needs ``out_dir`` on a filesystem all ranks
    see); every rank returns with the best epoch's weights, but only rank 0's result holds the
    history.
    """
    out_dir = Path(out_dir)
    rank = distributed.info()
    if rank.enabled and config.batch_size % rank.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {rank.world_size} ranks")
    if rank.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = distributed.local_device(resolve_device(config.device), rank)
    method.to(device)
    train, val = train.to(device), val.to(device)
    optimizer = _optimizer(method, config)
    n_batches = max(len(train) // config.batch_size, 1)
    total_steps = n_batches * config.epochs
    warmup_steps = n_batches * config.warmup_epochs
    kl_warmup = method.weights.warmup_steps if hasattr(method, "weights") else 0
    if kl_warmup > total_steps:
        raise ValueError(
            f"{method.name}: the KL warm-up ({kl_warmup} steps) outlasts the run ({total_steps} steps), so no epoch "
            "could be selected; train longer or shorten the warm-up (LossWeights.anneal_*)"
        )
    shuffle = torch.Generator().manual_seed(config.seed + 1)
    result = FitResult(checkpoint_dir=out_dir)
    start_epoch, step = 0, 0

    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if resume and last_path.exists():
        state = load_checkpoint(last_path, device)
        try:
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{last_path} was written by a {method.name} with different settings (preset, model size or "
                f"data columns), so --resume cannot continue it; rerun with the original settings, or start "
                f"over with --overwrite ({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from err
        torch.set_rng_state(state["rng"])
        shuffle.set_state(state["shuffle_rng"])
        start_epoch, step = state["epoch"], state["step"]
        result.history, result.best_epoch, result.best_score = state["history"], state["best_epoch"], state["best_score"]
    else:
        seed_everything(config.seed)
    if rank.enabled:
        # DDP broadcasts rank 0's weights at construction; the random streams must differ per rank.
        seed_everything(distributed.rank_seed(config.seed, rank.rank, start_epoch))
        method.reseed(distributed.rank_seed(config.seed, rank.rank, start_epoch))
        # Buffers are constants (cardinalities, offsets): no per-step buffer broadcast. A loss weight
        # of zero (KL warm-up at step 0) drops a site and the networks only it uses, so the set of
        # parameters with gradients changes during training: DDP must look for unused ones.
        device_ids = [device.index] if device.type == "cuda" else None
        net: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=device_ids, forward_sync_buffers=False, find_unused_parameters=True
        )
    else:
        net = method

    started = time.perf_counter()
    show = config.progress and rank.is_main
    bar = tqdm(total=config.epochs, initial=start_epoch, desc=method.name, disable=not show or None)
    with pyro.validation_enabled(False):
        for epoch in range(start_epoch, config.epochs):
            method.train()
            epoch_started, losses = time.perf_counter(), []
            order = torch.randperm(len(train), generator=shuffle).to(device)
            for batch in order[: n_batches * config.batch_size].view(n_batches, -1) if len(train) >= config.batch_size else [order]:
                lr = learning_rate(step, total_steps, warmup_steps, config.lr, config.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16"):
                    loss = net(train.rows[distributed.shard(batch, rank)], step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(method.parameters(), config.grad_clip)
                # One host sync checks loss and gradients before any update, so the weights (and the
                # checkpoints written from them) never turn non-finite; under DDP the all-reduced
                # gradients make every rank stop at the same step.
                if not torch.isfinite(loss.detach() + grad_norm):
                    what = "training loss" if not torch.isfinite(loss) else "gradient norm"
                    raise _non_finite_error(method, train.rows[batch], step, epoch, last_path, what)
                optimizer.step()
                step += 1
                method.on_step_end(step, total_steps)
                losses.append(loss.detach())

            train_loss = torch.stack(losses).mean()
            if rank.enabled:
                train_loss = distributed.all_reduce_mean(train_loss)
                if not rank.is_main:
                    continue  # rank 0 validates and writes; the others wait in the next collective
            method.eval()
            row = {"epoch": epoch + 1, "step": step, "lr": lr, "train_loss": float(train_loss)}
            row.update({f"val_{k}": v for k, v in method.diagnostics(val.rows, step).items()})
            if hasattr(method, "weights"):
                row.update({f"alpha_{k}": v for k, v in method.weights.at(step).items()})
            row["selectable"] = step >= kl_warmup
            probe_now = config.select != "loss" and row["selectable"] and ((epoch + 1) % config.probe_every == 0 or epoch + 1 == config.epochs)
            if probe_now:
                row["val_probe_accuracy"] = _probe_score(method, train, val, config.probe_rows, config.select == "probe-filtered")
                score = row["val_probe_accuracy"]
            else:
                score = -row["val_loss"] if config.select == "loss" else -math.inf
            score = score if row["selectable"] else -math.inf
            row["seconds"] = time.perf_counter() - epoch_started
            result.history.append(row)
            if score > result.best_score:
                result.best_epoch, result.best_score = epoch + 1, score
                save_checkpoint({"format": CHECKPOINT_FORMAT, "method": method.state_dict(), "epoch": epoch + 1, "score": score}, best_path)
            save_checkpoint(
                {
                    "format": CHECKPOINT_FORMAT,
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "history": result.history,
                    "best_epoch": result.best_epoch,
                    "best_score": result.best_score,
                    "rng": torch.get_rng_state(),
                    "shuffle_rng": shuffle.get_state(),
                    "config": asdict(config),
                },
                last_path,
            )
            pd.DataFrame(result.history).to_csv(out_dir / "history.csv", index=False)
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}")
            bar.update(1)
    bar.close()

    if rank.is_main:
        method.load_state_dict(load_checkpoint(best_path, device)["method"])
    if rank.enabled:
        distributed.broadcast_state(method)
    method.eval()
    result.seconds = time.perf_counter() - started
    return result
