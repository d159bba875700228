"""Synthetic data with known per-row ambiguity: the SIM table and corrupted MNIST.

SIM follows the paper's description (Var-T-JEPA, App. "Simulated (SIM)"; see
``shared/reference/var-jepa.md`` §8.1). The paper gives the ingredients but not the constants, so the
recipe below, and every number in it, is **our reading** of that description:

1. Classes ``c in {0, 1, 2}`` in equal proportions (shuffled); per-row ambiguity ``u ~ U(0, 1)``,
   amplified as ``u_amb = u ** GAMMA`` with ``GAMMA = 2``.
2. A 32-dimensional latent space: 28 dimensions become the numerical features, 4 more are binned into the
   categorical features. Of the 28 numerical dimensions, ``N_INFORMATIVE = 12`` (a random subset) carry
   class information; the other 16 are pure noise. Class prototypes ``mu_c`` are standard normal in
   the informative dimensions and the 4 categorical latents, zero elsewhere, rescaled so that the mean
   pairwise distance between the three prototypes is ``SEPARATION`` (stable difficulty across seeds).
3. Each row draws a random *alternative* class ``a != c`` (uniform over the other two) and starts as
   ``mu_c + SIGMA * eps`` (shared isotropic variance).
4. Blend: ``x += ALPHA_MAX * u_amb * (mu_a - mu_c)`` over all class-informative dimensions.
5. Feature mixing: each informative numerical dimension is, with probability ``MIX_MAX * u_amb``,
   re-drawn around the alternative prototype (``mu_a + SIGMA * eps``).
6. Extra noise ``EXTRA_NOISE * u_amb * eps`` in the informative numerical dimensions.
7. The 4 categorical latents are quantile-binned into 3, 4, 5 and 6 bins; each value is flipped to a
   uniformly random *other* bin with probability ``FLIP_MAX * u_amb``.

Columns: ``x0..x27`` (float), ``cat0..cat3`` (strings ``"b0"..``), ``label`` (``"c0".."c2"``), and ``u``,
the ground-truth ambiguity (not a feature).

Constants: ``SEPARATION = 5.5``, ``SIGMA = 1``, ``ALPHA_MAX = 0.3``, ``MIX_MAX = 0.3``, ``EXTRA_NOISE = 1``,
``FLIP_MAX = 0.6``. They were tuned so that logistic regression on the raw features (one-hot categories)
reaches about 0.85 test accuracy: about 0.97 on the rows with u below the median and 0.72 above it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_CLASSES = 3
N_NUMERICAL = 28
N_INFORMATIVE = 12
CATEGORICAL_BINS = (3, 4, 5, 6)
GAMMA = 2.0
SEPARATION = 5.5
SIGMA = 1.0
ALPHA_MAX = 0.3
MIX_MAX = 0.3
EXTRA_NOISE = 1.0
FLIP_MAX = 0.6


def make_sim(n_rows: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Generate the SIM table (28 numerical + 4 categorical features, 3 classes, ambiguity ``u``)."""
    if n_rows < N_CLASSES:
        raise ValueError(f"n_rows must be >= {N_CLASSES}, got {n_rows}")
    rng = np.random.default_rng(seed)
    n_cat = len(CATEGORICAL_BINS)
    n_latent = N_NUMERICAL + n_cat

    y = rng.permutation(np.arange(n_rows) % N_CLASSES)
    u = rng.uniform(size=n_rows)
    u_amb = u**GAMMA

    informative = np.zeros(n_latent, dtype=bool)
    informative[rng.choice(N_NUMERICAL, N_INFORMATIVE, replace=False)] = True
    informative[N_NUMERICAL:] = True
    prototypes = np.where(informative, rng.normal(size=(N_CLASSES, n_latent)), 0.0)
    # Fixing the mean pairwise prototype distance keeps the difficulty stable across seeds.
    gaps = [np.linalg.norm(prototypes[i] - prototypes[j]) for i in range(N_CLASSES) for j in range(i)]
    prototypes *= SEPARATION / np.mean(gaps)

    alt = (y + rng.integers(1, N_CLASSES, size=n_rows)) % N_CLASSES
    mu, mu_alt = prototypes[y], prototypes[alt]
    z = mu + SIGMA * rng.normal(size=(n_rows, n_latent))
    z += ALPHA_MAX * u_amb[:, None] * (mu_alt - mu)

    num_inf = informative.copy()
    num_inf[N_NUMERICAL:] = False
    mixed = (rng.uniform(size=(n_rows, n_latent)) < MIX_MAX * u_amb[:, None]) & num_inf
    z = np.where(mixed, mu_alt + SIGMA * rng.normal(size=(n_rows, n_latent)), z)
    z += np.where(num_inf, EXTRA_NOISE * u_amb[:, None] * rng.normal(size=(n_rows, n_latent)), 0.0)

    columns: dict[str, np.ndarray] = {f"x{j}": z[:, j] for j in range(N_NUMERICAL)}
    for k, n_bins in enumerate(CATEGORICAL_BINS):
        latent = z[:, N_NUMERICAL + k]
        edges = np.quantile(latent, np.linspace(0, 1, n_bins + 1)[1:-1])
        bins = np.searchsorted(edges, latent)
        flip = rng.uniform(size=n_rows) < FLIP_MAX * u_amb
        # Adding 1..n_bins-1 modulo n_bins gives a uniformly random *other* bin.
        other = (bins + rng.integers(1, n_bins, size=n_rows)) % n_bins
        bins = np.where(flip, other, bins)
        columns[f"cat{k}"] = np.array([f"b{b}" for b in range(n_bins)], dtype=object)[bins]
    columns["label"] = np.array([f"c{c}" for c in range(N_CLASSES)], dtype=object)[y]
    columns["u"] = u
    return pd.DataFrame(columns)


def corrupt_mnist(x_uint8: np.ndarray, seed: int, lam: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Blend each image with uniform noise by a per-image amount (paper §8.1).

    ``u ~ U(0,1)``, ``a = clip(lam * u, 0, 1)``, ``x' = (1 - a) x + a r`` with ``r ~ U(0,1)^P`` and ``x``
    scaled to [0, 1]; ``P`` is 784 for MNIST (any square image size works, e.g. 49 for 7x7).
    ``u`` is drawn first, so it does not depend on the image size. Returns ``(x' float32 (N, P), u float32 (N,))``.
    """
    x = np.asarray(x_uint8)
    if x.ndim != 2 or round(x.shape[1] ** 0.5) ** 2 != x.shape[1]:
        raise ValueError(f"expected flattened square images of shape (N, side**2), got {x.shape}")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    u = rng.uniform(size=n)
    a = np.clip(lam * u, 0.0, 1.0)[:, None]
    r = rng.uniform(size=x.shape)
    x_out = (1.0 - a) * (x.astype(np.float64) / 255.0) + a * r
    return x_out.astype(np.float32), u.astype(np.float32)
