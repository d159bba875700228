"""Image datasets behind one name: CIFAR-10 (shared npz), CIFAR-10/100 and STL-10 (torchvision), Fashion-MNIST,
and MNIST (the shared 10k-image npz, an out-of-distribution set for Fashion-MNIST).

`ImageData` has the attributes the training engine uses (``rows``, ``y``, ``len``, ``to``), so
`pyro_jepa.train.fit` trains image methods unchanged; ``rows`` are uint8 images ``(N, 3, H, W)``
(grayscale datasets are repeated to three channels so one augmentation recipe serves all).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .registry import DatasetNotFoundError

IMAGE_DATASETS = ("cifar10", "cifar100", "stl10", "fashion-mnist", "mnist-10k")
# mnist-10k is a prefix of MNIST's training set only; its last images serve as the "test" split.
MNIST_10K_TEST = 2000


@dataclass
class ImageData:
    """uint8 images ``rows (N, 3, H, W)``, labels ``y (N,)`` int64 and the class names."""

    rows: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.rows.ndim != 4 or self.rows.shape[1] != 3:
            raise ValueError(f"rows must have shape (N, 3, H, W), got {tuple(self.rows.shape)}")
        if self.rows.dtype != torch.uint8:
            hint = (
                "; floats in [0, 1] must be scaled by 255 and cast to uint8 first"
                if self.rows.is_floating_point()
                else ""
            )
            raise ValueError(f"images must be uint8 with values 0-255, got dtype {self.rows.dtype}{hint}")
        if self.rows.shape[0] == 0:
            raise ValueError("no images: rows is empty")
        if self.y.shape != (self.rows.shape[0],):
            raise ValueError(f"y must have shape ({self.rows.shape[0]},), got {tuple(self.y.shape)}")
        if self.y.dtype != torch.long or int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes):
            raise ValueError(
                f"labels must be int64 in [0, {len(self.classes)}) for the {len(self.classes)} classes, "
                f"got dtype {self.y.dtype} and range [{int(self.y.min())}, {int(self.y.max())}]"
            )

    def __len__(self) -> int:
        return self.rows.shape[0]

    def subset(self, index: torch.Tensor | np.ndarray) -> ImageData:
        index = torch.as_tensor(index, dtype=torch.long, device=self.rows.device)
        return ImageData(self.rows[index], self.y[index], self.classes)

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.rows.to(device), self.y.to(device), self.classes)


def _from_hwc(x: np.ndarray, y: np.ndarray, classes) -> ImageData:
    """``(N, H, W, C)`` or ``(N, H, W)`` uint8 -> `ImageData`."""
    images = torch.from_numpy(np.ascontiguousarray(x))
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    images = images.permute(0, 3, 1, 2).expand(-1, 3, -1, -1).contiguous()
    return ImageData(images, torch.as_tensor(np.asarray(y), dtype=torch.long), tuple(str(c) for c in classes))


def stratified_subset(data: ImageData, per_class: int | None, seed: int = 0, classes: list[int] | None = None) -> ImageData:
    """Up to ``per_class`` random images of each class (of ``classes``, default all), shuffled."""
    rng = np.random.default_rng(seed)
    y = data.y.cpu().numpy()
    keep = []
    for c in range(len(data.classes)) if classes is None else classes:
        idx = np.flatnonzero(y == c)
        keep.append(rng.permutation(idx)[: per_class or len(idx)])
    return data.subset(rng.permutation(np.concatenate(keep)))


def load_cifar10_npz(data_dir: str | os.PathLike[str]) -> tuple[ImageData, ImageData]:
    """Train and test split from ``cifar10_train.npz``/``cifar10_test.npz`` (see the folder's PROVENANCE.md)."""
    root = Path(data_dir)
    for candidate in (root, root / "cifar10"):
        train, test = candidate / "cifar10_train.npz", candidate / "cifar10_test.npz"
        if train.is_file() and test.is_file():
            splits = []
            for path in (train, test):
                z = np.load(path)
                splits.append(_from_hwc(z["x"], z["y"], z["classes"]))
            return splits[0], splits[1]
    raise DatasetNotFoundError(f"cifar10_train.npz / cifar10_test.npz not found in {root} or {root / 'cifar10'}")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Where the Debian package `dataset-fashion-mnist` and torchvision's folder layout put the files.
FASHION_DIRS = ("", "fashion-mnist", "FashionMNIST/raw", "/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None) -> tuple[ImageData, ImageData]:
    """Fashion-MNIST from IDX files (``train-images-idx3-ubyte[.gz]`` etc.) as 3-channel 28×28 images."""
    root = Path(data_dir or ".")
    for sub in FASHION_DIRS:
        folder = root / sub
        splits = []
        for prefix in ("train", "t10k"):
            files = [sorted(folder.glob(f"{prefix}-{kind}-idx{n}-ubyte*")) for kind, n in (("images", 3), ("labels", 1))]
            if not all(files):
                break
            splits.append(_from_hwc(read_idx(files[0][0]), read_idx(files[1][0]), FASHION_CLASSES))
        if len(splits) == 2:
            return splits[0], splits[1]
    raise DatasetNotFoundError(
        f"Fashion-MNIST IDX files not found under {root} (looked in {', '.join(s or '.' for s in FASHION_DIRS)}); "
        "install the Debian package `dataset-fashion-mnist` or put train-/t10k-*-ubyte[.gz] in --data-dir"
    )


def load_mnist_10k(data_dir: str | os.PathLike[str]) -> tuple[ImageData, ImageData]:
    """``mnist_10k.npz`` (first 10,000 MNIST training digits; see its PROVENANCE.md) as 3-channel
    28×28 images: the first 8,000 as "train", the last `MNIST_10K_TEST` as "test"."""
    root = Path(data_dir)
    for path in (root / "mnist_10k.npz", root / "mnist-10k" / "mnist_10k.npz"):
        if path.is_file():
            z = np.load(path)
            data = _from_hwc(z["x"], z["y"], [str(i) for i in range(10)])
            n = len(data)
            return data.subset(np.arange(n - MNIST_10K_TEST)), data.subset(np.arange(n - MNIST_10K_TEST, n))
    raise DatasetNotFoundError(f"mnist_10k.npz not found in {root} or {root / 'mnist-10k'}")


def _torchvision(name: str, root: Path, download: bool) -> tuple[ImageData, ImageData]:
    import torchvision.datasets as tvd

    try:
        if name == "stl10":
            train, test = tvd.STL10(root, "train", download=download), tvd.STL10(root, "test", download=download)
            return tuple(_from_hwc(d.data.transpose(0, 2, 3, 1), d.labels, d.classes) for d in (train, test))
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
        return tuple(_from_hwc(d.data, d.targets, d.classes) for d in (train, test))
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError when absent
        raise DatasetNotFoundError(
            f"{name} is not in {root} and could not be downloaded ({type(err).__name__}: {err}). "
            f"Offline: copy torchvision's {name} folder into --data-dir, or for cifar10 point --data-dir "
            "at a folder with cifar10_train.npz/cifar10_test.npz"
        ) from err


def load_images(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False) -> tuple[ImageData, ImageData]:
    """Official train and test split of a named image dataset.

    ``cifar10`` is read from the npz pair in ``data_dir`` when present; otherwise CIFAR-10/100 and
    STL-10 (labelled splits) come through torchvision, downloading into ``data_dir`` only with
    ``download=True``. Raises `DatasetNotFoundError` with what to do when the data are missing.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose from {IMAGE_DATASETS}")
    root = Path(data_dir or ".")
    if name == "fashion-mnist":
        return load_fashion_mnist(root)
    if name == "mnist-10k":
        return load_mnist_10k(root)
    if name == "cifar10":
        try:
            return load_cifar10_npz(root)
        except DatasetNotFoundError:
            pass
    return _torchvision(name, root, download)
