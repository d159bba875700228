"""One-off diagnostic (uncertainty_notes round 13): is the MNIST-7×7 ROC AUC that `training-kl` misses held by the
latent at all? The supervised ceiling's regressor (`supervised_ceiling`, trained on u) on the training rows' target
posterior q(s_w | row) (loc and log-scale, flattened) instead of their raw features, scored on the test rows, beside
`training-kl` and the raw-feature ceiling of the same split. And a label-free score found from it: the first principal
component of the same standardized posterior features (fitted on the training rows), oriented so that it agrees with
`training-kl` on the validation rows (`first_component_score`).

    PYTHONPATH=. python docs/results/uncertainty_budget/latent-ceiling/latent_ceiling.py DATA_DIR DATASET SEEDS CHECKPOINTS OUT_CSV [EPOCHS [FIELD=VALUE ...]]

CHECKPOINTS as for experiments/uncertainty.py (``CHECKPOINTS/DATASET/default/var-t-jepa-seedK``; missing runs are
trained with the default variant, EPOCHS and the model fields given, as `experiments/uncertainty.py --set`).
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from pyro_jepa.cli import config_fields
from pyro_jepa.data import load_dataset
from pyro_jepa.evaluate.ambiguity import supervised_ceiling
from pyro_jepa.evaluate.metrics import roc_auc, spearman
from pyro_jepa.models.tabular import TabularJEPAConfig
from pyro_jepa.pipeline import pretrain
from pyro_jepa.presets import make_preset


@torch.no_grad()
def posterior_features(model, rows: torch.Tensor) -> np.ndarray:
    loc, scale = model.posterior(rows)
    return torch.cat([loc.flatten(1), scale.log().flatten(1)], 1).double().numpy()


def first_component_score(train: np.ndarray, val: np.ndarray, test: np.ndarray, val_anchor: np.ndarray) -> np.ndarray:
    """Test rows' coordinate on the first principal component of the standardized training features, its sign
    chosen so that the validation rows' coordinate has a positive Spearman with ``val_anchor`` (label-free)."""
    scaler = StandardScaler().fit(train)
    pca = PCA(1, random_state=0).fit(scaler.transform(train))
    sign = np.sign(spearman(pca.transform(scaler.transform(val))[:, 0], val_anchor)) or 1.0
    return sign * pca.transform(scaler.transform(test))[:, 0]


def main(data_dir, dataset, seeds, checkpoints, out_csv, epochs=None, sets=()):
    torch.set_num_threads(1)
    splits = load_dataset(dataset, data_dir=Path(data_dir), seed=0)
    u_train, u_test = splits.train.ambiguity.numpy(), splits.test.ambiguity.numpy()
    high = u_test >= np.quantile(u_test, 0.75)
    fields = config_fields(TabularJEPAConfig, sets, "FIELD=VALUE")
    raw = supervised_ceiling(splits.train.rows.numpy(), u_train, splits.test.rows.numpy(), u_test)
    rows = []
    for seed in seeds:
        model_config, train_config = make_preset("cpu", dataset, len(splits.train), epochs, variant="default")
        train_config = replace(train_config, seed=seed, device="cpu", progress=False, select="loss")
        model, _ = pretrain("var-t-jepa", splits, replace(model_config, **fields), train_config,
                            Path(checkpoints) / dataset / "default" / f"var-t-jepa-seed{seed}", resume=True)
        model.eval()
        features = {part: posterior_features(model, getattr(splits, part).rows) for part in ("train", "val", "test")}
        latent = supervised_ceiling(features["train"], u_train, features["test"], u_test)
        score = model.scores(splits.test.rows, ["training-kl"])["training-kl"].double().numpy()
        val_anchor = model.scores(splits.val.rows, ["training-kl"])["training-kl"].double().numpy()
        component = first_component_score(features["train"], features["val"], features["test"], val_anchor)
        for name, result in (("training-kl (label-free)", {"spearman": spearman(score, u_test), "roc_auc": roc_auc(high, score)}),
                             ("first principal component of q(s_w | row), oriented by training-kl (label-free)",
                              {"spearman": spearman(component, u_test), "roc_auc": roc_auc(high, component)}),
                             ("latent ceiling: regressor on q(s_w | row), trained on u", latent),
                             ("raw ceiling: regressor on the raw features, trained on u", raw)):
            rows.append({"dataset": dataset, "seed": seed, "epochs": train_config.epochs, "model_fields": str(fields), "score": name, **result})
        print(pd.DataFrame(rows[-4:]).to_string(), flush=True)
    table = pd.DataFrame(rows)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    print(table.groupby("score", sort=False)[["spearman", "roc_auc"]].agg(["mean", "min"]).to_string())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4], sys.argv[5],
         int(sys.argv[6]) if len(sys.argv) > 6 else None, sys.argv[7:])
