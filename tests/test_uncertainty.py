"""Row uncertainty scores and the arviz view of guide samples."""

import numpy as np
import pytest
import torch

from pyro_jepa.models import TabularJEPAConfig, VarTJEPA
from pyro_jepa.uncertainty import ARVIZ_1, row_uncertainty, sample_latents, summarize, to_inference_data

SMALL = TabularJEPAConfig(dim=4, depth=1, heads=2, ff=8, dropout=0.0, n_pool=2, pred_dim=4, pred_depth=1, pred_heads=2, pred_ff=8)


def test_row_uncertainty_mean_and_q90():
    scale = torch.arange(1, 21, dtype=torch.float).reshape(1, 4, 5).repeat(2, 1, 1)
    torch.testing.assert_close(row_uncertainty(scale, "mean"), torch.full((2,), 10.5))
    torch.testing.assert_close(row_uncertainty(scale, "q90"), torch.full((2,), float(np.quantile(np.arange(1, 21), 0.9))))
    with pytest.raises(ValueError):
        row_uncertainty(scale, "max")


def test_inference_data_has_named_dims_and_matches_the_posterior(schema, table):
    torch.manual_seed(0)
    model = VarTJEPA(schema, SMALL).eval()
    rows = table.rows[:3]
    samples = sample_latents(model, rows, num_samples=400)
    assert samples["s_w"].shape == (400, 3, schema.n_features, 4)
    data = to_inference_data(samples, ["r0", "r1", "r2"], schema.feature_names)
    posterior = data.posterior if not ARVIZ_1 else data["posterior"]
    assert set(posterior["s_w"].dims) >= {"row", "feature", "latent"}
    assert list(posterior["s_w"].coords["feature"].values) == list(schema.feature_names)
    assert list(posterior["s_w"].coords["row"].values) == ["r0", "r1", "r2"]
    summary = summarize(data, ["z"])
    assert len(summary) == 3 * 4 and {"mean", "sd"} <= set(summary.columns)
    # s_w's guide samples given z ~ q(z|s_x) spread at least as widely as the conditional posterior at the means.
    _, scale = model.posterior(rows)
    assert (samples["s_w"].std(0) > 0.8 * scale.numpy()).mean() > 0.9
