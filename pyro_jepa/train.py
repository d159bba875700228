"""One training engine for every method in the library.

`fit` trains any `pyro_jepa.models.SSLMethod` (Pyro ELBOs and plain-torch baselines alike) with
AdamW, linear warm-up + cosine learning-rate decay, gradient-norm clipping, per-epoch validation
of every loss term, a checkpoint per epoch (``last.pt``, written atomically) with resume, and
selection of the best epoch on the validation split (``best.pt``). Per-term KL annealing lives in
the methods' `LossWeights`, driven by the optimizer step the engine passes to ``loss``.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyro
import torch
from tqdm.auto import tqdm

from . import distributed, io
from .data.tabular import TabularData
from .checkpoints import CHECKPOINT_FORMAT, holds_state, load_checkpoint, save_checkpoint
from .io import CheckpointError
from .evaluate.diagnostics import linear_probe_accuracy
from .models.base import SSLMethod

SELECTION_RULES = ("probe", "loss", "probe-filtered", "last")


@dataclass
class TrainConfig:
    """Optimization settings shared by every method.

    ``select``: "probe" keeps the epoch with the best validation accuracy of a ridge probe on the
    embeddings (label-informed, on the validation split only); "loss" keeps the epoch with the
    lowest validation loss (label-free); "probe-filtered" is the paper's rule for Var-T-JEPA (label-
    informed): the probe's accuracy on the validation rows left after dropping the 20 % most
    uncertain by the method's default score, which favours the selective metrics; "last" keeps the
    final epoch (label-free, the usual SSL protocol: no validation signal picks the weights).

    Epochs that end inside a method's KL warm-up (``method.selectable_from()``) are never
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


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Optimizer steps per epoch of the engine: it drops the last incomplete batch, and takes at least one."""
    return max(n_rows // batch_size, 1)


@dataclass
class FitResult:
    """What `fit` returns: the per-epoch log and where the best epoch's weights are."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    checkpoint_dir: Path | None = None
    seconds: float = 0.0
    resume_changes: dict[str, tuple] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Optimizer steps taken by the last epoch logged (0 before any)."""
        return self.history[-1]["step"] if self.history else 0

    @property
    def epoch_seconds(self) -> float:
        """Training time summed over the logged epochs: unlike ``seconds`` (this call's wall time), a
        resumed or reused run counts the epochs it loaded."""
        return sum(epoch["seconds"] for epoch in self.history)


# Settings that may differ when a run is resumed: more epochs, another device, progress bars on or off.
MAY_CHANGE_ON_RESUME = {
    "train.epochs": lambda old, new: new >= old,
    "train.device": lambda old, new: True,
    "train.progress": lambda old, new: True,
}
FLOAT32_MAX = torch.finfo(torch.float32).max  # the loss is summed in float32
RESUME_KEYS = ("method", "optimizer", "epoch", "step", "history", "best_epoch", "best_score", "rng", "shuffle_rng", "settings")


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


def data_fingerprint(*datasets) -> str:
    """sha256 of the rows, labels and schema (or class names) of the given splits: two runs on other
    files, seeds, subsamples or column names get different fingerprints."""
    digest = hashlib.sha256()
    for data in datasets:
        for tensor in (data.rows, data.y):
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(repr(getattr(data, "schema", getattr(data, "classes", None))).encode())
    return digest.hexdigest()


def run_settings(method: SSLMethod, config: TrainConfig, train, val) -> dict:
    """What a checkpoint must match to be resumed: the method, its settings, training settings, data."""
    settings = {"method": method.name, "model": method.settings(), "train": config, "data": data_fingerprint(train, val)}
    if config.select == "probe-filtered":
        settings["selection_score"] = method.default_score
    return io.to_jsonable(settings)


def check_resumable(state: dict, path: Path, settings: dict) -> dict[str, tuple]:
    """Refuse a checkpoint that lacks resume state or was written for other settings or data.

    Returns the allowed changes (e.g. more epochs) as ``{setting: (old, new)}``.
    """
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed: it lacks {missing} (written by an older pyro_jepa or damaged); "
            "start over with --overwrite, or in a new run folder"
        )
    refused, changed = io.settings_diff(state["settings"], settings, MAY_CHANGE_ON_RESUME)
    if refused:
        raise CheckpointError(
            f"--resume refused: {path} belongs to a run with other settings or data: " + "; ".join(refused)
            + ". Rerun with the original settings and data, or start over with --overwrite (or another --out)"
        )
    return changed


def _optimizer(method: torch.nn.Module, config: TrainConfig, **code_path: bool) -> torch.optim.AdamW:
    """The engine's AdamW over ``method``'s trainable parameters; ``code_path`` (``foreach=``/``fused=``)
    replaces the engine's foreach kernels, for benchmarks that compare them."""
    params = [p for p in method.parameters() if p.requires_grad]
    # No weight decay on biases, norms, embeddings' 1-D vectors and scalar scales.
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # foreach: one kernel per group of tensors instead of ~10 per tensor; the same values bit for bit
    # as the per-tensor loop (torch picks that loop on CPU by default), and faster (docs/results/performance.md).
    return torch.optim.AdamW(groups, lr=config.lr, **(code_path or {"foreach": True}))


def clip_gradients(method: torch.nn.Module, max_norm: float, foreach: bool = True) -> torch.Tensor:
    """Clip the global gradient norm of ``method``'s parameters to ``max_norm``; returns the norm before clipping.
    ``foreach=False`` is torch's per-tensor loop (the same values; for benchmarks that compare them)."""
    return torch.nn.utils.clip_grad_norm_(method.parameters(), max_norm, foreach=foreach)


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
        # A finite term times a huge weight (e.g. --alpha kl_s_y=1e308) overflows only once weighted.
        bad += [f"{k} x weight {w:.4g}" for k, w in method.loss_weights(step).items()
                if k in terms and k not in bad and math.isfinite(terms[k]) and abs(w * terms[k]) > FLOAT32_MAX]
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


class _Training:
    """The state of one `fit` call and its named steps: restore, train an epoch, validate, save."""

    def __init__(self, method: SSLMethod, train, val, config: TrainConfig, out_dir: Path) -> None:
        self.method, self.config, self.out_dir = method, config, out_dir
        self.settings = run_settings(method, config, train, val)
        self.rank = distributed.info()
        if self.rank.enabled and config.batch_size % self.rank.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {self.rank.world_size} ranks")
        if self.rank.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.device = distributed.local_device(resolve_device(config.device), self.rank)
        method.to(self.device)
        self.train, self.val = train.to(self.device), val.to(self.device)
        self.optimizer = _optimizer(method, config)
        self.n_batches = steps_per_epoch(len(train), config.batch_size)
        self.total_steps = self.n_batches * config.epochs
        self.warmup_steps = self.n_batches * config.warmup_epochs
        self.selectable_from = method.selectable_from()
        if self.selectable_from > self.total_steps:
            raise ValueError(
                f"{method.name}: the KL warm-up ({self.selectable_from} steps) outlasts the run ({self.total_steps} steps), "
                "so no epoch could be selected; train longer or shorten the warm-up (LossWeights.anneal_*)"
            )
        self.shuffle = torch.Generator().manual_seed(config.seed + 1)
        self.result = FitResult(checkpoint_dir=out_dir)
        self.start_epoch, self.step, self.lr = 0, 0, config.lr
        self.last_path, self.best_path = out_dir / "last.pt", out_dir / "best.pt"
        self.net: torch.nn.Module = method

    def restore(self, resume: bool) -> None:
        """Continue from ``last.pt`` (checked against this run's settings and data), or seed a fresh start."""
        method, result = self.method, self.result
        if not (resume and self.last_path.exists()):
            seed_everything(self.config.seed)
            return
        state = load_checkpoint(self.last_path, self.device)
        result.resume_changes = check_resumable(state, self.last_path, self.settings)
        try:
            method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{self.last_path} was written by a {method.name} with different settings (preset, model size or "
                f"data columns), so --resume cannot continue it; rerun with the original settings, or start "
                f"over with --overwrite ({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from err
        torch.set_rng_state(state["rng"])
        self.shuffle.set_state(state["shuffle_rng"])
        self.start_epoch, self.step = state["epoch"], state["step"]
        result.history, result.best_epoch, result.best_score = state["history"], state["best_epoch"], state["best_score"]

    def distribute(self) -> None:
        """Under ``torchrun``: per-rank random streams and a `DistributedDataParallel` wrapper."""
        rank, seed = self.rank, self.config.seed
        if not rank.enabled:
            return
        # DDP broadcasts rank 0's weights at construction; the random streams must differ per rank.
        seed_everything(distributed.rank_seed(seed, rank.rank, self.start_epoch))
        self.method.reseed(distributed.rank_seed(seed, rank.rank, self.start_epoch))
        # Buffers are constants (cardinalities, offsets): no per-step buffer broadcast. A loss weight
        # of zero (KL warm-up at step 0) drops a site and the networks only it uses, so the set of
        # parameters with gradients changes during training: DDP must look for unused ones.
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.net = torch.nn.parallel.DistributedDataParallel(
            self.method, device_ids=device_ids, forward_sync_buffers=False, find_unused_parameters=True
        )

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over the shuffled training rows; returns the mean training loss (all ranks)."""
        config, method, train = self.config, self.method, self.train
        method.train()
        losses = []
        order = torch.randperm(len(train), generator=self.shuffle).to(self.device)
        batches = order[: self.n_batches * config.batch_size].view(self.n_batches, -1) if len(train) >= config.batch_size else [order]
        for batch in batches:
            self.lr = learning_rate(self.step, self.total_steps, self.warmup_steps, config.lr, config.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16"):
                loss = self.net(train.rows[distributed.shard(batch, self.rank)], self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(method, config.grad_clip)
            # One host sync checks loss and gradients before any update, so the weights (and the
            # checkpoints written from them) never turn non-finite; under DDP the all-reduced
            # gradients make every rank stop at the same step.
            if not torch.isfinite(loss.detach() + grad_norm):
                what = "training loss" if not torch.isfinite(loss) else "gradient norm"
                raise _non_finite_error(method, train.rows[batch], self.step, epoch, self.last_path, what)
            self.optimizer.step()
            self.step += 1
            method.on_step_end(self.step, self.total_steps)
            losses.append(loss.detach())
        train_loss = torch.stack(losses).mean()
        return distributed.all_reduce_mean(train_loss) if self.rank.enabled else train_loss

    def validate(self, epoch: int, train_loss: torch.Tensor) -> tuple[dict, float]:
        """The epoch's history row (every loss term on the validation split) and its selection score."""
        config, method = self.config, self.method
        method.eval()
        row = {"epoch": epoch + 1, "step": self.step, "lr": self.lr, "train_loss": float(train_loss)}
        row.update({f"val_{k}": v for k, v in method.diagnostics(self.val.rows, self.step).items()})
        row.update({f"alpha_{k}": v for k, v in method.loss_weights(self.step).items()})
        row["selectable"] = self.step >= self.selectable_from
        if not row["selectable"]:
            return row, -math.inf
        if config.select == "last":
            return row, float(epoch + 1)
        if config.select != "loss" and ((epoch + 1) % config.probe_every == 0 or epoch + 1 == config.epochs):
            row["val_probe_accuracy"] = _probe_score(method, self.train, self.val, config.probe_rows, config.select == "probe-filtered")
            return row, row["val_probe_accuracy"]
        return row, -row["val_loss"] if config.select == "loss" else -math.inf

    def save(self, epoch: int, row: dict, score: float) -> None:
        """Log the epoch; ``best.pt`` if it is the best so far; ``last.pt`` and ``history.csv`` always."""
        method, result = self.method, self.result
        result.history.append(row)
        if score > result.best_score:
            result.best_epoch, result.best_score = epoch + 1, score
            save_checkpoint({"format": CHECKPOINT_FORMAT, "method": method.state_dict(), "epoch": epoch + 1, "score": score,
                             "settings": self.settings}, self.best_path)
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT, "method": method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": epoch + 1, "step": self.step, "history": result.history, "best_epoch": result.best_epoch,
                "best_score": result.best_score, "rng": torch.get_rng_state(), "shuffle_rng": self.shuffle.get_state(),
                "config": asdict(self.config), "settings": self.settings,
            },
            self.last_path,
        )
        io.write_csv(pd.DataFrame(result.history), self.out_dir / "history.csv")

    def store_final_state(self) -> None:
        """Rewrite ``best.pt`` with the method's state as it is now if that differs: its weights, and what
        `set_reference` kept or fitted after training (a best.pt resumed from an older pyro_jepa lacks it)."""
        if not self.rank.is_main:
            return
        now = self.method.state_dict()
        if not holds_state(self.best_checkpoint["method"], now):
            save_checkpoint(self.best_checkpoint | {"method": now}, self.best_path)

    def finish(self) -> None:
        """Every rank ends with the best epoch's weights, in eval mode."""
        if self.rank.is_main:
            self.best_checkpoint = load_checkpoint(self.best_path, self.device)  # kept for `store_final_state`
            self.method.load_state_dict(self.best_checkpoint["method"])
        if self.rank.enabled:
            distributed.broadcast_state(self.method)
        self.method.eval()


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
    an existing ``last.pt`` the run continues where it stopped, after checking that the checkpoint
    was written for the same method settings, training settings and data (`check_resumable`;
    more epochs, another device and progress bars may change; `FitResult.resume_changes` lists
    them). On return the method holds the best epoch's weights.

    Inside an initialized ``torch.distributed`` process group (``torchrun``), the method is
    wrapped in `DistributedDataParallel`: every rank draws the same shuffle, takes its strided
    share of each global batch of ``config.batch_size`` rows, and has its own seeds for masks,
    dropout and guide noise; DDP broadcasts rank 0's initial weights and averages gradients.
    Rank 0 alone validates and writes files (resuming needs ``out_dir`` on a filesystem all ranks
    see); every rank returns with the best epoch's weights, but only rank 0's result holds the
    history.
    """
    run = _Training(method, train, val, config, Path(out_dir))
    run.restore(resume)
    method.set_reference(run.train.rows)  # before the first checkpoint, so every checkpoint holds it
    run.distribute()
    started = time.perf_counter()
    bar = tqdm(total=config.epochs, initial=run.start_epoch, desc=method.name, disable=not (config.progress and run.rank.is_main) or None)
    with pyro.validation_enabled(False):
        for epoch in range(run.start_epoch, config.epochs):
            epoch_started = time.perf_counter()
            train_loss = run.train_epoch(epoch)
            if not run.rank.is_main:
                continue  # rank 0 validates and writes; the others wait in the next collective
            row, score = run.validate(epoch, train_loss)
            row["seconds"] = time.perf_counter() - epoch_started
            run.save(epoch, row, score)
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}")
            bar.update(1)
    bar.close()
    run.finish()
    # With the best weights back: fit what the scores take from the validation rows, and keep it in best.pt.
    method.set_reference(run.train.rows, held_out=run.val.rows)
    run.store_final_state()
    run.result.seconds = time.perf_counter() - started
    return run.result
