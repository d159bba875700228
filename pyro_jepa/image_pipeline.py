"""Steps shared by the image experiments (experiments/vje.py, experiments/vje_anomaly.py):
presets, command-line options, data, method construction, tables and the variance plot."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyro
import torch

from . import cli
from .benchmarking import machine_description
from .data.images import IMAGE_DATASETS, ImageData, load_images, stratified_subset
from .data.registry import resolve_data_dir
from .models import SimSiam, SimSiamConfig, VICReg, VICRegConfig, VJE, VJEConfig
from .models.image_ssl import ImageSSL, ImageSSLConfig
from .models.vje import DIRECTIONAL, PRIORS
from .report import figure, save_figure
from .train import TrainConfig, steps_per_epoch

IMAGE_METHODS = {"vje": (VJE, VJEConfig), "simsiam": (SimSiam, SimSiamConfig), "vicreg": (VICReg, VICRegConfig)}



@dataclass(frozen=True)
class ImagePreset:
    """A named pre-training budget; every field is an option of the image experiments.

    ``steps``: optimizer steps per model; when set, the number of epochs is derived from it and the
    training-set size (`epochs_for`), so the budget is the same whatever the data. ``None`` means
    "all images" for the per-class counts and "torch's default" for ``threads``. ``method_lr``: a
    learning rate per method name, replacing ``lr`` for that method (an explicit ``--lr`` sets every
    method's).
    """

    backbone: str
    width: int
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    train_per_class: int | None
    val_per_class: int
    test_per_class: int | None
    threads: int | None
    steps: int | None = None
    method_lr: dict[str, float] = field(default_factory=dict)


# cpu: sized for <= 10 min on 2 shared cores (one thread avoids OpenMP spin-waiting under load);
# paper: the usual CIFAR SSL setting (ResNet-18, CIFAR stem, full splits) for a GPU.
PRESETS: dict[str, ImagePreset] = {
    "cpu": ImagePreset(backbone="convnet", width=16, image_size=32, epochs=10, batch_size=256, lr=2e-3,
                       train_per_class=400, val_per_class=50, test_per_class=200, threads=1),
    "paper": ImagePreset(backbone="resnet18", width=32, image_size=32, epochs=800, batch_size=512, lr=2e-3,
                         train_per_class=None, val_per_class=100, test_per_class=None, threads=None),
}


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Options both image experiments take; preset values fill whatever is left unset."""
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="cifar10", choices=IMAGE_DATASETS)
    data.add_argument("--data-dir", type=Path, help="folder with the dataset (default: $PYRO_JEPA_DATA or ~/.cache/pyro_jepa)")
    data.add_argument("--download", action="store_true", help="let torchvision download cifar10/cifar100/stl10 into --data-dir")
    data.add_argument("--train-per-class", type=int, help="training images per class (default: preset)")
    data.add_argument("--test-per-class", type=int, help="test images per class (default: preset)")
    data.add_argument("--val-per-class", type=int, help="validation images per class, held out of the training split (default: preset)")
    model = p.add_argument_group("pre-training")
    model.add_argument("--preset", default="cpu", choices=PRESETS)
    model.add_argument("--methods", default="vje,simsiam,vicreg", help=f"comma-separated subset of {sorted(IMAGE_METHODS)}")
    model.add_argument("--backbone", choices=("convnet", "resnet18"))
    model.add_argument("--width", type=int, help="convnet base width")
    model.add_argument("--image-size", type=int, help="side length of the training views")
    model.add_argument("--epochs", type=int)
    model.add_argument("--steps", type=int, help="optimizer steps per model (sets the epochs from the training-set size)")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--lr", type=float, help="learning rate of every method (default: the preset's, per method)")
    vje = p.add_argument_group("VJE switches (docs/vje.md)")
    vje.add_argument("--df", type=float, default=5.0, help="directional degrees of freedom ν")
    vje.add_argument("--likelihood", default="student-t", choices=("student-t", "gaussian"))
    vje.add_argument("--cartesian", action="store_true", help="Cartesian Student-t on h instead of the polar subdensity")
    vje.add_argument("--separate-variances", action="store_true", help="likelihood scale from its own head")
    vje.add_argument("--no-stop-gradient", action="store_true", help="let gradients flow into the target embedding")
    vje.add_argument("--directional", choices=DIRECTIONAL, help="directional factor: the paper's bounded kernel or a normalized tangent-plane density (default: VJEConfig's)")
    vje.add_argument("--prior", choices=PRIORS, help="p(z): N(0, I), a learned mixture or a VampPrior (default: VJEConfig's)")
    vje.add_argument("--prior-components", type=int, help="components of a learned prior (default: VJEConfig's)")
    vje.add_argument("--kl-weight", type=float, help="β on VJE's KL term (default: VJEConfig's, 0.7; 1 = the plain ELBO)")
    vje.add_argument("--projector-dim", type=int, help="width of a BN projector whose output VJE models (default: VJEConfig's, 0 = none)")
    vje.add_argument("--particles", type=int, help="draws of z per pair in VJE's training ELBO (default: VJEConfig's, 32)")
    vje.add_argument("--posterior-mean", choices=("sphere", "free"), help="posterior mean on the √d-sphere or anywhere (default: VJEConfig's)")
    model.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE", dest="config_set",
                       help="set one field of a method's config, applied after every other option, e.g. "
                       "--set vicreg.cov_coeff=0 or --set simsiam.pred_hidden=64 (repeatable; the fields are "
                       "those of VJEConfig, SimSiamConfig and VICRegConfig)")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: preset)")
    run.add_argument("--out", type=Path, help="run folder")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    run.add_argument("--no-progress", action="store_true")


def fill_from_preset(args: argparse.Namespace, preset: ImagePreset) -> None:
    """Set every option the user left unset (``None``) to the preset's value; an explicit
    ``--epochs`` without ``--steps`` replaces the preset's step budget."""
    epochs_given = getattr(args, "epochs", None) is not None and getattr(args, "steps", None) is None
    if getattr(args, "method_lr", None) is None and getattr(args, "lr", None) is not None:
        args.method_lr = {}  # an explicit --lr is every method's
    for key, value in asdict(preset).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if epochs_given:
        args.steps = None


def parse_config_sets(items: list[str]) -> dict[str, dict[str, object]]:
    """``["vicreg.cov_coeff=0", ...]`` as ``{"vicreg": {"cov_coeff": 0.0}}``, each value parsed as the
    type of the field's default; a ValueError names what is wrong."""
    sets: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {item!r}: expected METHOD.FIELD=VALUE, e.g. vicreg.cov_coeff=0")
        if method not in IMAGE_METHODS:
            raise ValueError(f"--set {item!r}: unknown method {method!r}; choose from {sorted(IMAGE_METHODS)}")
        value = cli.config_field(IMAGE_METHODS[method][1], name, text, f"--set {item!r}")
        sets.setdefault(method, {})[name] = value
    return sets


def finish_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the preset, check the method names and ``--set`` fields, apply ``--threads``."""
    fill_from_preset(args, PRESETS[args.preset])
    cli.require_positive(p, "--lr", args.lr)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in IMAGE_METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(IMAGE_METHODS)}")
    try:
        args.config_set = parse_config_sets(args.config_set)
    except ValueError as error:
        p.error(str(error))
    untrained = sorted(set(args.config_set) - set(args.methods))
    if untrained:
        p.error(f"--set names {untrained}, which this run does not train (--methods {','.join(args.methods)})")
    for name in args.config_set:
        try:
            method_config(name, args)  # the config's own checks, before anything is written
        except ValueError as error:
            p.error(f"--set {name}: {error}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def load_full(args: argparse.Namespace) -> tuple[ImageData, ImageData]:
    """The dataset's official train and test split."""
    return load_images(args.dataset, resolve_data_dir(args.data_dir), download=args.download)


def load_splits(
    args: argparse.Namespace, classes: list[int] | None = None, full: tuple[ImageData, ImageData] | None = None
) -> tuple[ImageData, ImageData, ImageData]:
    """Train / validation / test subsets (of ``full``, default `load_full`); validation images are
    held out of the training split, and only ``classes`` (default all) enter train and validation."""
    train_full, test_full = full or load_full(args)
    per_class = None if args.train_per_class is None else args.train_per_class + args.val_per_class
    pool = stratified_subset(train_full, per_class, seed=args.seed, classes=classes)
    y = pool.y.numpy()
    val_idx = np.concatenate([np.flatnonzero(y == c)[: args.val_per_class] for c in np.unique(y)])
    train_idx = np.setdiff1d(np.arange(len(pool)), val_idx)
    return pool.subset(train_idx), pool.subset(val_idx), load_test(args, test_full)


def load_test(args: argparse.Namespace, test_full: ImageData) -> ImageData:
    """The test subset of every class: ``args.test_per_class`` images each, drawn with ``args.seed``."""
    return stratified_subset(test_full, args.test_per_class, seed=args.seed)


def method_config(name: str, args: argparse.Namespace) -> ImageSSLConfig:
    """The resolved config of method ``name`` under ``args`` (``--set`` fields last)."""
    config_cls = IMAGE_METHODS[name][1]
    common = dict(backbone=args.backbone, width=args.width, image_size=args.image_size)
    if name == "vje":
        # Only the switches given on the command line override VJEConfig's defaults.
        chosen = {key: getattr(args, key) for key in ("directional", "prior", "prior_components", "kl_weight", "projector_dim", "particles") if getattr(args, key) is not None}
        if args.posterior_mean is not None:
            chosen["mean_on_sphere"] = args.posterior_mean == "sphere"
        config = config_cls(
            **common, df=args.df, likelihood=args.likelihood, polar=not args.cartesian,
            shared_variance=not args.separate_variances, stop_gradient=not args.no_stop_gradient, **chosen,
        )
    else:
        config = config_cls(**common)
    return replace(config, **getattr(args, "config_set", {}).get(name, {}))


def build_method(name: str, args: argparse.Namespace) -> ImageSSL:
    return IMAGE_METHODS[name][0](method_config(name, args))


def epochs_for(args: argparse.Namespace, n_train: int) -> int:
    """``--epochs``, or with ``--steps`` the epochs that give at least that many optimizer steps."""
    if args.steps is None:
        return args.epochs
    return math.ceil(args.steps / steps_per_epoch(n_train, args.batch_size))


def learning_rate(args: argparse.Namespace, name: str) -> float:
    """Method ``name``'s learning rate: the preset's for that method, else ``args.lr``."""
    return args.method_lr.get(name, args.lr)


def train_config(args: argparse.Namespace, name: str, select: str, n_train: int) -> TrainConfig:
    """The engine's settings for method ``name``."""
    epochs = epochs_for(args, n_train)
    return TrainConfig(
        epochs=epochs, batch_size=args.batch_size, lr=learning_rate(args, name), warmup_epochs=max(1, epochs // 10),
        select=select, probe_rows=2000, seed=args.seed, device=args.device, progress=not args.no_progress,
    )


def plot_variances(variances: dict[str, np.ndarray], path: Path) -> None:
    """Learned per-feature posterior variances (mean over test images), each curve sorted descending."""
    fig, ax = figure(size=(6.0, 4.0))
    for label, var in variances.items():
        ax.plot(np.sort(var)[::-1], label=label)
    ax.set(title="VJE: per-feature posterior variance σ² (test mean)", xlabel="feature (sorted)", ylabel="σ²", yscale="log")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def variance_summary(sigma: torch.Tensor) -> dict[str, float]:
    """Distribution of the learned posterior variances σ² ``(N, d)``: quantiles over all entries and
    the range of the per-feature means (what `plot_variances` draws)."""
    var = sigma.double().pow(2)
    q = torch.quantile(var.flatten()[:1_000_000], torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
    per_feature = var.mean(0)
    return {"var_min": q[0], "var_q10": q[1], "var_median": q[2], "var_q90": q[3], "var_max": q[4],
            "var_mean": float(var.mean()), "feature_var_min": float(per_feature.min()), "feature_var_max": float(per_feature.max())}


def run_header(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The config.json fields both experiments share."""
    return {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "args": vars(args),
        # Every method's resolved settings, so a later change of a default cannot change what a run records.
        "method_configs": {name: asdict(method_config(name, args)) for name in args.methods},
        "learning_rates": {name: learning_rate(args, name) for name in args.methods},
        "versions": {"torch": torch.__version__, "pyro": pyro.__version__, "python": sys.version.split()[0]},
        "machine": machine_description(),
        "threads": torch.get_num_threads(),
    }
