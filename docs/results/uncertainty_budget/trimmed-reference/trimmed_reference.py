"""One-off screen (uncertainty_notes round 14): `training-kl` against a trimmed aggregate posterior.

The default score compares a row's target posterior q(s_w | row) with the aggregate posterior of (up to 8,192)
training rows. Every training row counts, the heavily corrupted ones too, so where those sit the mixture has mass and
the score saturates (round 12). Here the mixture keeps only the fraction rho of the training rows that are most typical
by the same score, cross-fitted so that no row meets its own component: the reference rows are split in two by a seeded
permutation, each half scored against the other half's mixture (at the default's fitted width), and the rho with the
lowest KL are kept. Test rows are then scored against that trimmed mixture at the same width. Label-free throughout.

    PYTHONPATH=. python docs/results/uncertainty_budget/trimmed-reference/trimmed_reference.py DATA_DIR DATASET SEEDS CHECKPOINTS OUT_CSV

CHECKPOINTS as for experiments/uncertainty.py (``CHECKPOINTS/DATASET/default/var-t-jepa-seedK``); missing runs are
trained with the default variant at the preset's budget.
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pyro_jepa.data import load_dataset
from pyro_jepa.distributions.mixture_kl import kl_to_mixture_bound, smoothed_scale, typical_rows
from pyro_jepa.evaluate.ambiguity import supervised_ceiling
from pyro_jepa.evaluate.metrics import roc_auc, spearman
from pyro_jepa.pipeline import pretrain
from pyro_jepa.presets import make_preset

RHOS = (0.5, 0.25)


def default_model(splits, dataset: str, seed: int, checkpoints):
    """The default variant at the CPU preset's budget, as experiments/uncertainty.py stores it under ``checkpoints``
    (``DATASET/default/var-t-jepa-seedK``; trained there if missing), in eval mode."""
    model_config, train_config = make_preset("cpu", dataset, len(splits.train), None, variant="default")
    train_config = replace(train_config, seed=seed, device="cpu", progress=False, select="loss")
    model, _ = pretrain("var-t-jepa", splits, model_config, train_config,
                        Path(checkpoints) / dataset / "default" / f"var-t-jepa-seed{seed}", resume=True)
    return model.eval()


@torch.no_grad()
def trimmed_scores(model, test_rows: torch.Tensor, rhos=RHOS) -> dict[float, np.ndarray]:
    """`training-kl` of ``test_rows`` against the mixture of the fraction rho most typical reference rows, per rho
    (`typical_rows` at the default's fitted width; rho = 0.25 is the library's `trimmed-kl` since this screen)."""
    ref_loc, ref_scale = model.reference_posterior()
    smoothed = smoothed_scale(ref_scale, float(model.reference_smoothing))
    loc, scale = (t.flatten(1) for t in model.posterior(test_rows))
    out = {}
    for rho in rhos:
        keep = typical_rows(ref_loc, ref_scale, smoothed, rho)
        out[rho] = kl_to_mixture_bound(loc, scale, ref_loc[keep], smoothed[keep]).double().numpy()
    return out


def main(data_dir, dataset, seeds, checkpoints, out_csv):
    torch.set_num_threads(1)
    splits = load_dataset(dataset, data_dir=Path(data_dir), seed=0)
    u_train, u_test = splits.train.ambiguity.numpy(), splits.test.ambiguity.numpy()
    high = u_test >= np.quantile(u_test, 0.75)
    ceiling = supervised_ceiling(splits.train.rows.numpy(), u_train, splits.test.rows.numpy(), u_test)
    rows = []
    for seed in seeds:
        model = default_model(splits, dataset, seed, checkpoints)
        scores = {"training-kl (the default)": model.scores(splits.test.rows, ["training-kl"])["training-kl"].double().numpy()}
        scores |= {f"training-kl, trimmed reference rho={rho:g}": s for rho, s in trimmed_scores(model, splits.test.rows).items()}
        for name, score in scores.items():
            rows.append({"dataset": dataset, "seed": seed, "score": name, "width": float(model.reference_smoothing),
                         "spearman": spearman(score, u_test), "roc_auc": roc_auc(high, score)})
        rows.append({"dataset": dataset, "seed": seed, "score": "supervised ceiling (raw features, trained on u)", **ceiling})
        print(pd.DataFrame(rows[-len(scores) - 1:]).to_string(), flush=True)
    table = pd.DataFrame(rows)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    print(table.groupby("score", sort=False)[["spearman", "roc_auc"]].agg(["mean", "min"]).to_string())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4], sys.argv[5])
