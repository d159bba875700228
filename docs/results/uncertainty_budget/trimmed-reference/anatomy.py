"""One-off check (uncertainty_notes round 14): where along u does trimmed-kl differ from training-kl? Standardized
mean score per u bin of the test rows (the last bins straddle the cut at the upper quartile, 0.76) and Spearman within
the upper half and within u >= 0.9, on the screen's MNIST-7x7 models (seeds 0-2, trained into /tmp/s17/ck by
trimmed_reference.py). Bins of u: [0, 0.5), [0.5, 0.65), [0.65, cut), [cut, 0.9), [0.9, 1]. Output: anatomy_mnist-7x7.txt.

    PYTHONPATH=. python docs/results/uncertainty_budget/trimmed-reference/anatomy.py
"""

from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from pyro_jepa.data import load_dataset
from trimmed_reference import default_model  # this folder (the script's own) is on sys.path

torch.set_num_threads(1)
splits = load_dataset("mnist-7x7", data_dir=Path("/work/shared/data"), seed=0)
u = splits.test.ambiguity.numpy(); cut = np.quantile(u, 0.75)
for seed in (0, 1, 2):
    model = default_model(splits, "mnist-7x7", seed, "/tmp/s17/ck")
    s = {k: v.double().numpy() for k, v in model.scores(splits.test.rows, ["training-kl", "trimmed-kl"]).items()}
    bins = [0, 0.5, 0.65, cut, 0.9, 1.01]
    for name, v in s.items():
        z = (v - v.mean()) / v.std()
        means = [z[(u >= a) & (u < b)].mean() for a, b in zip(bins[:-1], bins[1:])]
        hi = u >= 0.5
        print(seed, f"{name:12s}", "mean z by u bin", np.round(means, 2), "Spearman within u>=0.5", round(spearmanr(v[hi], u[hi])[0], 3),
              "within u>=0.9", round(spearmanr(v[u >= 0.9], u[u >= 0.9])[0], 3))
