"""One-off ablation (uncertainty_notes round 12): `training-kl` on other parts of Var-T-JEPA's latent, z's own
KL term, and where the ROC AUC's misranked pairs sit in u. Default-variant models at the preset's 405 steps.

    PYTHONPATH=. python docs/results/uncertainty_budget/latent-parts/latent_parts.py DATA_DIR DATASET SEEDS CHECKPOINTS OUT_DIR

CHECKPOINTS as for experiments/uncertainty.py (``CHECKPOINTS/DATASET/default/var-t-jepa-seedK``; missing runs are
trained). Writes ``parts_DATASET.csv`` (one row per seed and score) and ``anatomy_DATASET.csv`` into OUT_DIR.
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pyro_jepa.data import load_dataset
from pyro_jepa.distributions import kl_to_mixture_bound, smoothed_scale
from pyro_jepa.distributions.mixture_kl import SMOOTHING_GRID
from pyro_jepa.evaluate.metrics import roc_auc, spearman
from pyro_jepa.models.tabular import EVAL_CHUNK
from pyro_jepa.pipeline import pretrain
from pyro_jepa.presets import make_preset


@torch.no_grad()
def latent_parts(model, rows):
    """Flattened posterior loc and scale of s_x, z and s_w with the whole row as context (as `VarTJEPA.posterior`)."""
    parts = {"s_x": [], "z": [], "s_w": []}
    for chunk in rows.split(EVAL_CHUNK):
        sx_loc, sx_scale = model.context_head(model.context_encoder(chunk))
        pooled = model.pool(sx_loc)
        z_loc, z_scale = model.aux_encoder(pooled.flatten(1))
        w_loc, w_scale = model.target_params(chunk, pooled, z_loc)
        for name, pair in (("s_x", (sx_loc, sx_scale)), ("z", (z_loc, z_scale)), ("s_w", (w_loc, w_scale))):
            parts[name].append(tuple(t.flatten(1) for t in pair))
    return {k: tuple(torch.cat(ts) for ts in zip(*v)) for k, v in parts.items()}


def joined(parts, names, width=0.0):
    """The parts' loc and scale side by side; each part's scale smoothed by ``width`` times its own median."""
    return (torch.cat([parts[n][0] for n in names], 1),
            torch.cat([smoothed_scale(parts[n][1], width) for n in names], 1))


def main(data_dir, dataset, seeds, checkpoints, out):
    torch.set_num_threads(1)
    splits = load_dataset(dataset, data_dir=Path(data_dir), seed=0)
    u = splits.test.ambiguity.numpy()
    cut = np.quantile(u, 0.75)
    high = u >= cut
    rows, anatomy = [], []
    for seed in seeds:
        model_config, train_config = make_preset("cpu", dataset, len(splits.train), None, variant="default")
        train_config = replace(train_config, seed=seed, device="cpu", progress=False, select="loss")
        model, _ = pretrain("var-t-jepa", splits, model_config, train_config,
                            Path(checkpoints) / dataset / "default" / f"var-t-jepa-seed{seed}", resume=True)
        model.eval()
        ref, val, test = (latent_parts(model, r) for r in (model.reference_rows, model._subset(splits.val.rows, 0), splits.test.rows))
        scores, widths = {}, {}
        for names in (("s_w",), ("s_x",), ("z",), ("s_x", "z", "s_w")):
            # the training-kl recipe on these parts: the smoothing width that gives the validation rows the smallest mean KL
            # (as `fit_smoothing`, but each part smoothed by its own median std)
            val_loc, val_scale = joined(val, names)
            curve = {w: float(kl_to_mixture_bound(val_loc, val_scale, *joined(ref, names, w)).double().mean())
                     for w in SMOOTHING_GRID}
            width = min(curve, key=curve.get)
            name = f"training-kl on {'+'.join(names)}"
            widths[name] = width
            scores[name] = kl_to_mixture_bound(*joined(test, names), *joined(ref, names, width))
        z_loc, z_scale = test["z"]
        scores["KL(q(z | row) || N(0, I)), the ELBO's z term"] = 0.5 * (z_loc**2 + z_scale**2 - 1 - 2 * z_scale.log()).sum(1)
        scores["‖posterior mean of z‖"] = z_loc.norm(dim=1)
        scores["decoder-scale"] = model.scores(splits.test.rows, ["decoder-scale"])["decoder-scale"]
        for name, value in scores.items():
            v = value.double().numpy()
            rows.append({"dataset": dataset, "seed": seed, "score": name, "smoothing width": widths.get(name),
                         "spearman": spearman(v, u), "roc_auc": roc_auc(high, v)})
            if name in ("training-kl on s_w", "decoder-scale"):
                # Which pairs the ROC AUC loses: the share of (low-u, high-u) pairs ranked the wrong way, by the u of each side
                wrong = v[~high][:, None] > v[high][None, :]
                for side, u_side, shares, bands in (("u < cut", u[~high], wrong.sum(1), (0, 0.5, 0.65, cut)),
                                                    ("u >= cut", u[high], wrong.sum(0), (cut, 0.8, 0.9, 1.0 + 1e-9))):
                    for lo, hi in zip(bands[:-1], bands[1:]):
                        inside = (u_side >= lo) & (u_side < hi)
                        anatomy.append({"dataset": dataset, "seed": seed, "score": name, "side": side,
                                        "u band": f"[{lo:.2f}, {min(hi, 1):.2f})", "share of wrong pairs": shares[inside].sum() / wrong.sum()})
        # the engine's own fit, for comparison with "training-kl on s_w" (the same recipe)
        print(f"{dataset} seed {seed}: width fitted by the engine {float(model.reference_smoothing):g}", flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"parts_{dataset}.csv", index=False)
    pd.DataFrame(anatomy).to_csv(out / f"anatomy_{dataset}.csv", index=False)
    print(pd.DataFrame(rows).groupby("score", sort=False)[["spearman", "roc_auc"]].agg(["mean", "min"]).to_string())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4], sys.argv[5])
