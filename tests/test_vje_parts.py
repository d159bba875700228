"""Image data, backbones, augmentations, probes and the two VJE experiments (never downloads)."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_jepa.data.images import ImageData, load_images, read_idx, stratified_subset
from pyro_jepa.data.registry import DatasetNotFoundError
from pyro_jepa.evaluate.probes import knn_accuracy, knn_distance_score, linear_probe, mahalanobis_score, one_class_auroc
from pyro_jepa.models import VJEConfig
from pyro_jepa.nn.vision import TwoViewAugment, make_backbone

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_image_data_container():
    data = ImageData(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ("a", "b"))
    assert len(data) == 4 and len(data.subset([0, 2])) == 2 and data.to("cpu").rows.dtype == torch.uint8
    with pytest.raises(ValueError):
        ImageData(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), ("a",))
    sub = stratified_subset(data, 1, classes=[1])
    assert sub.y.tolist() == [1]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_reader(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    assert read_idx(folder / "t10k-labels-idx1-ubyte.gz").tolist() == [0, 1, 2, 3]
    train, test = load_images("fashion-mnist", tmp_path)
    assert train.rows.shape == (6, 3, 28, 28) and test.y.tolist() == [0, 1, 2, 3]
    assert torch.equal(train.rows[:, 0], train.rows[:, 2])  # gray repeated to 3 channels


def test_missing_datasets_give_clear_offline_errors(tmp_path, monkeypatch):
    import pyro_jepa.data.images as images

    # Only folders under tmp_path: the Debian package's system folder may exist on this machine.
    monkeypatch.setattr(images, "FASHION_DIRS", tuple(d for d in images.FASHION_DIRS if not d.startswith("/")))
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded"):
        load_images("cifar100", tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_images("fashion-mnist", tmp_path)


def test_backbones():
    net = make_backbone("resnet18")
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    small = make_backbone("convnet", width=4)
    assert small(torch.randn(2, 3, 16, 16)).shape == (2, small.out_dim) == (2, 32)


def test_augmentations_are_per_image_and_seeded():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(8, -1, -1, -1)
    aug = TwoViewAugment(16)
    views = aug(images, torch.Generator().manual_seed(0))
    assert views.shape == (8, 3, 16, 16) and torch.isfinite(views).all()
    assert not torch.allclose(views[0], views[1])  # same image, different random parameters
    assert torch.equal(views, aug(images, torch.Generator().manual_seed(0)))
    assert TwoViewAugment(64).blur and not aug.blur


def test_probes_on_separable_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(3) * 5
    y_train, y_test = np.arange(60) % 3, np.arange(30) % 3
    x_train = centers[y_train] + rng.normal(size=(60, 3))
    x_test = centers[y_test] + rng.normal(size=(30, 3))
    assert knn_accuracy(x_train, y_train, x_test, y_test, k=200) == 1.0
    assert linear_probe(x_train, y_train, x_test, y_test) == 1.0
    score = knn_distance_score(x_train[y_train == 0], x_test, k=3)
    assert one_class_auroc(score, y_test, normal_class=0) > 0.95
    assert one_class_auroc(-score, y_test, normal_class=0) < 0.05


def test_mahalanobis_score_uses_the_covariance():
    """An elongated normal cluster: a point along its long axis is less anomalous than one at the
    same Euclidean distance across it (k-NN cannot see that; Mahalanobis must)."""
    rng = np.random.default_rng(0)
    train = np.c_[np.ones(500), 0.3 * rng.normal(size=500), 0.02 * rng.normal(size=500)]
    test = np.array([[1.0, 0.3, 0.0], [1.0, 0.0, 0.3]])
    along, across = mahalanobis_score(train, test)
    assert across > 10 * along


def fake_cifar(folder: Path, per_class: int = 12) -> None:
    rng = np.random.default_rng(0)
    classes = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    for split in ("train", "test"):
        y = np.repeat(np.arange(10), per_class)
        x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
        x[..., 0] = np.clip(x[..., 0].astype(int) * 0 + y[:, None, None] * 25, 0, 255)  # label-dependent red
        np.savez_compressed(folder / f"cifar10_{split}.npz", x=x, y=y, classes=classes)


def run_experiment(script: str, argv: list[str]) -> int:
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        module = __import__(script)
        return module.main(argv)
    finally:
        sys.path.remove(str(EXPERIMENTS))
        sys.modules.pop(script, None)


TINY = ["--val-per-class", "2", "--epochs", "1", "--batch-size", "16", "--width", "4", "--image-size", "8", "--threads", "1", "--no-progress"]


def test_vje_experiment_writes_a_run_folder(tmp_path):
    fake_cifar(tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path), "--train-per-class", "4", "--test-per-class", "3", "--out", str(out), *TINY]
    assert run_experiment("vje", argv) == 0
    for name in ("config.json", "metrics.json", "results.csv", "results.md", "vje_variances.png", "training_curves.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"VJE", "SimSiam", "VICReg"}
    mean_probes = metrics["methods"]["VJE"]["posterior_mean_probes"]  # the paper's other candidate read-out
    assert 0 <= mean_probes["knn_accuracy"] <= 1 and mean_probes["dim"] == 32  # the backbone width 4 gives d = 32
    results = pd.read_csv(out / "results.csv")
    assert list(results["method"]) == ["untrained backbone", "VJE", "VJE (posterior mean μ)", "SimSiam", "VICReg"]
    assert run_experiment("vje", argv) == 2  # never clobbers a run folder (exit 2: a user error, as every script)


def test_vje_experiment_records_the_budget_that_steps_resolve_to(tmp_path):
    fake_cifar(tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path), "--train-per-class", "4", "--test-per-class", "3", "--methods", "vje", "--out", str(out),
            *TINY, "--steps", "5"]
    assert run_experiment("vje", argv) == 0
    config, metrics = (json.loads((out / name).read_text()) for name in ("config.json", "metrics.json"))
    per_epoch = config["dataset"]["images"]["train"] // 16
    epochs = math.ceil(5 / per_epoch)
    assert epochs > 1  # --steps, not the --epochs 1 of TINY, decides the budget
    assert config["budget"] == {"epochs": epochs, "steps_per_epoch": per_epoch}
    assert metrics["methods"]["VJE"]["optimizer_steps"] == epochs * per_epoch
    assert f"{epochs} epochs of batch 16 ([{epochs * per_epoch}] optimizer steps per model)" in (out / "results.md").read_text()


def test_anomaly_experiment_writes_a_run_folder(tmp_path):
    fake_cifar(tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path), "--classes", "0,1", "--methods", "vje,simsiam", "--train-per-class", "6",
            "--test-per-class", "3", "--score-pairs", "1", "--prior", "mixture", "--prior-components", "2",
            "--out", str(out), *TINY]
    assert run_experiment("vje_anomaly", argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    vje_scores = {"−ELBO", "−log-lik", "KL", "typicality", "−evidence", "|Δ ELBO| (typical set)", "mean σ", "entropy",
                  "KL to training posteriors", "KL to training Gaussian", "k-NN", "Mahalanobis", "k-NN on μ", "Mahalanobis on μ"}
    assert set(metrics["mean_auroc"]) == {f"VJE ({s})" for s in vje_scores} | {"SimSiam (k-NN)", "SimSiam (Mahalanobis)"}
    assert all(0.0 <= r["auroc"] <= 1.0 for r in metrics["auroc"])
    assert all(m["steps"] == 1 for m in metrics["models"]) and "var_median" in metrics["models"][0]
    assert (out / "vje_variances.png").is_file() and "airplane" in (out / "results.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["prior"] == "mixture" and config["args"]["select"] == "last"
    history = pd.read_csv(out / "checkpoints" / "seed0-0-vje" / "history.csv")
    assert metrics["models"][0]["best_epoch"] == len(history)  # scored at the last epoch
    # a finished run cannot be re-scored under another checkpoint rule, and the refusal changes nothing
    written = {name: (out / name).read_bytes() for name in ("config.json", "metrics.json", "results.csv")}
    assert run_experiment("vje_anomaly", [*argv, "--resume", "--select", "loss"]) == 2
    assert all((out / name).read_bytes() == data for name, data in written.items())
    # --resume loads the finished models instead of retraining them: same scores
    assert run_experiment("vje_anomaly", [*argv, "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["auroc"] == metrics["auroc"]
    # ... and can add the diagnostic split of the KL to the training posteriors
    assert run_experiment("vje_anomaly", [*argv, "--resume", "--score-parts"]) == 0
    parts = {f"VJE (KL to training posteriors: {part} term)" for part in ("location", "scale")}
    assert set(json.loads((out / "metrics.json").read_text())["mean_auroc"]) == set(metrics["mean_auroc"]) | parts


def test_anomaly_experiment_refuses_an_unknown_class(tmp_path, capsys):
    fake_cifar(tmp_path)
    argv = ["--data-dir", str(tmp_path), "--classes", "0,12", "--methods", "vje", "--out", str(tmp_path / "run"), *TINY]
    assert run_experiment("vje_anomaly", argv) == 2
    assert "--classes [12]: cifar10 has classes 0..9" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def fake_mnist_pair(folder: Path) -> None:
    """Fashion-MNIST IDX files and an mnist_10k.npz of random 28×28 images."""
    rng = np.random.default_rng(0)
    (folder / "fashion-mnist").mkdir()
    for prefix, n in (("train", 60), ("t10k", 30)):
        write_idx(folder / "fashion-mnist" / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / "fashion-mnist" / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    (folder / "mnist-10k").mkdir()
    np.savez_compressed(folder / "mnist-10k" / "mnist_10k.npz", x=rng.integers(0, 256, (2010, 28, 28), dtype=np.uint8),
                        y=np.arange(2010) % 10)


def test_fmnist_mnist_benchmark_writes_a_run_folder(tmp_path):
    fake_mnist_pair(tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path), "--benchmark", "fmnist-mnist", "--seeds", "0,1", "--methods", "vje,vicreg",
            "--train-per-class", "4", "--test-per-class", "2", "--ood-test", "15", "--score-pairs", "1", "--steps", "2",
            "--out", str(out), *TINY]
    assert run_experiment("vje_anomaly", argv) == 0
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["seed"]) == {0, 1} and set(frame["method"]) == {"VJE", "VICReg"}
    models = pd.read_csv(out / "models.csv")
    assert (models["steps"] == 2).all() and models["knn_accuracy"].between(0, 1).all() and models["linear_accuracy"].between(0, 1).all()
    config = json.loads((out / "config.json").read_text())
    configs = config["method_configs"]
    assert set(configs) == {"vje", "vicreg"}
    # the preset's per-method learning rates reach the record (and the engine, test below)
    assert config["learning_rates"] == {"vje": 1.6e-2, "vicreg": 4e-3}
    assert (configs["vje"]["kl_weight"], configs["vje"]["particles"]) == (VJEConfig.kl_weight, VJEConfig.particles)
    vje = models["method"] == "VJE"
    assert models.loc[vje, "knn_accuracy_mu"].between(0, 1).all() and models.loc[~vje, "knn_accuracy_mu"].isna().all()
    assert "std" in (out / "results.md").read_text()



def test_preset_learning_rates_are_per_method_unless_lr_is_given():
    import argparse
    from dataclasses import replace

    from pyro_jepa.image_pipeline import PRESETS, fill_from_preset, train_config

    preset = replace(PRESETS["cpu"], lr=1e-3, method_lr={"vje": 5e-3})

    def resolved(lr: float | None) -> dict[str, float]:
        args = argparse.Namespace(lr=lr, epochs=None, steps=None, seed=0, device="cpu", no_progress=True)
        fill_from_preset(args, preset)
        fill_from_preset(args, PRESETS["cpu"])  # the experiments fill from the shared preset second
        return {name: train_config(args, name, "last", 1000).lr for name in ("vje", "simsiam")}

    assert resolved(None) == {"vje": 5e-3, "simsiam": 1e-3}
    assert resolved(2e-4) == {"vje": 2e-4, "simsiam": 2e-4}  # an explicit --lr is every method's


@pytest.mark.parametrize("lr", ["0", "nan"])
def test_image_experiments_refuse_a_bad_learning_rate(tmp_path, capsys, lr):
    argv = ["--data-dir", str(tmp_path), "--lr", lr, "--out", str(tmp_path / "run"), *TINY]
    with pytest.raises(SystemExit) as refused:
        run_experiment("vje_anomaly", argv)
    assert refused.value.code == 2
    assert f"--lr must be a positive number, got {float(lr)}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_set_overrides_a_method_config_field_with_its_type(tmp_path):
    from pyro_jepa.image_pipeline import parse_config_sets

    sets = parse_config_sets(["vicreg.cov_coeff=0", "simsiam.pred_hidden=64", "vje.stop_gradient=false", "vicreg.cov_coeff=0.5"])
    # each value has its field's type, and the later of two settings wins
    assert sets == {"vicreg": {"cov_coeff": 0.5}, "simsiam": {"pred_hidden": 64}, "vje": {"stop_gradient": False}}
    assert type(sets["simsiam"]["pred_hidden"]) is int and type(sets["vicreg"]["cov_coeff"]) is float
    fake_cifar(tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path), "--train-per-class", "4", "--test-per-class", "3", "--methods", "vicreg",
            "--set", "vicreg.cov_coeff=0", "--set", "vicreg.expander_dim=32", "--out", str(out), *TINY]
    assert run_experiment("vje", argv) == 0
    config = json.loads((out / "config.json").read_text())["method_configs"]["vicreg"]
    assert (config["cov_coeff"], config["expander_dim"], config["std_coeff"]) == (0.0, 32, 25.0)


def test_anomaly_resume_refuses_a_changed_set(tmp_path, capsys):
    fake_cifar(tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path), "--classes", "0", "--methods", "vicreg", "--train-per-class", "6", "--test-per-class", "3",
            "--out", str(out), *TINY]
    assert run_experiment("vje_anomaly", [*argv, "--set", "vicreg.cov_coeff=0"]) == 0
    assert json.loads((out / "config.json").read_text())["method_configs"]["vicreg"]["cov_coeff"] == 0.0
    written = (out / "metrics.json").read_bytes()
    assert run_experiment("vje_anomaly", [*argv, "--set", "vicreg.cov_coeff=1", "--resume"]) == 2
    assert "model.cov_coeff: 0.0 when started, 1.0 now" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == written


@pytest.mark.parametrize("item, message", [
    ("vicreg.cov_coeff=x", "cov_coeff takes a float, got 'x'"),
    ("vicreg.foo=1", "VICRegConfig has no field 'foo'"),
    ("vicreg=1", "expected METHOD.FIELD=VALUE"),
    ("byol.tau=1", "unknown method 'byol'"),
    ("vje.polar=maybe", "polar takes true or false"),
    ("simsiam.pred_hidden=64", "--set names ['simsiam'], which this run does not train"),
    ("vje.particles=0", "--set vje: particles must be >= 1, got 0"),
])
def test_image_experiments_refuse_a_bad_set(tmp_path, capsys, item, message):
    argv = ["--data-dir", str(tmp_path), "--methods", "vje,vicreg", "--set", item, "--out", str(tmp_path / "run"), *TINY]
    with pytest.raises(SystemExit) as refused:
        run_experiment("vje", argv)
    assert refused.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ood_summary_reports_a_spread_only_over_several_seeds():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        summary_table = __import__("vje_anomaly").summary_table
    finally:
        sys.path.remove(str(EXPERIMENTS))
        sys.modules.pop("vje_anomaly", None)
    frame = pd.DataFrame({"seed": [0, 1, 0, 1], "task": "t", "score": ["a", "a", "b", "b"], "auroc": [0.6, 0.8, 0.5, 0.5]})
    table = summary_table(frame, "fmnist-mnist").set_index("score")
    assert table.loc["a", "mean"] == pytest.approx(0.7) and table.loc["a", "std"] == pytest.approx(0.1414, abs=1e-4)
    assert "std" not in summary_table(frame[frame["seed"] == 0], "fmnist-mnist")  # one seed: no NaN column
    assert "std" not in summary_table(frame, "one-class")

def test_mnist_10k_loader(tmp_path):
    fake_mnist_pair(tmp_path)
    train, test = load_images("mnist-10k", tmp_path)
    assert len(train) == 10 and len(test) == 2000 and train.rows.shape[1:] == (3, 28, 28)
