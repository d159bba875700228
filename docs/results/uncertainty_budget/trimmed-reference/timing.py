"""One-off timing (uncertainty_notes round 14): training-kl against trimmed-kl on the screen's seed-0 models, 2,000 test rows,
one torch thread; the first trimmed-kl call includes the cross-fitted ranking of the reference rows.

    PYTHONPATH=. python docs/results/uncertainty_budget/trimmed-reference/timing.py
"""
import time
from pathlib import Path

import torch

from pyro_jepa.data import load_dataset
from trimmed_reference import default_model  # this folder (the script's own) is on sys.path

torch.set_num_threads(1)
for name in ("mnist-7x7", "sim"):
    splits = load_dataset(name, data_dir=Path("/work/shared/data"), seed=0)
    model = default_model(splits, name, 0, "/tmp/s17/ck")
    loc, scale = model.posterior(splits.test.rows)
    model.reference_posterior()
    t = time.perf_counter(); model.training_kl(loc, scale); a = time.perf_counter() - t
    t = time.perf_counter(); model.trimmed_kl(loc, scale); b = time.perf_counter() - t
    t = time.perf_counter(); model.trimmed_kl(loc, scale); c = time.perf_counter() - t
    print(name, "reference", tuple(model.reference_loc.shape), f"training-kl {a:.2f} s, trimmed-kl first call {b:.2f} s (ranking included), later calls {c:.2f} s, 2,000 test rows, 1 thread")
