"""The Var-JEPA programs: trace structure, dependencies, the loss against a hand-written oracle."""

import math
from dataclasses import replace

import pyro
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_jepa.models import LossWeights, MLPVarJEPA, TabularJEPAConfig, VarTJEPA
from pyro_jepa.data.tabular import TabularSchema
from pyro_jepa.distributions import MixedTabular
from pyro_jepa.models.var_jepa import TERMS, elbo_terms, weighted_loss
from pyro_jepa.nn import FeatureTokenizer, TabularDecoder, scatter_tokens, token_names, token_of_feature

SMALL = TabularJEPAConfig(dim=8, depth=1, heads=2, ff=16, dropout=0.0, n_pool=2, pred_dim=8, pred_depth=1, pred_heads=2, pred_ff=16, pred_dropout=0.0)
PAPER_LIKE = LossWeights(rec=0.1, gen=1.0, kl_s_x=1e-2, kl_z=1e-3, kl_s_y=0.5, anneal_s_x=10, anneal_z=10, anneal_s_y=10)


@pytest.fixture(params=[("global", 1), ("row", 1), ("row", 2)], ids=["global", "row", "row-grouped"])
def model(schema, request):
    torch.manual_seed(0)
    scale, group_size = request.param
    return VarTJEPA(schema, replace(SMALL, decoder_scale=scale, group_size=group_size)).eval()


@pytest.fixture
def data(model, table):
    masks = model.masks(len(table), "cpu")
    return table.rows, masks.context, masks.target


def traces(model, data, weights=None):
    weights = weights or {t: 1.0 for t in TERMS}
    guide = poutine.trace(model.guide).get_trace(*data, weights=weights)
    prior = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(*data, weights=weights)
    return prior, guide


def test_sites_and_shapes(model, data):
    rows, context, target = data
    b, d, k = rows.shape[0], SMALL.dim, target.shape[1]
    # 5 numerical features in pairs take 3 tokens, each categorical 1
    assert model.n_tokens == {1: 7, 2: 5}[model.config.group_size]
    prior, guide = traces(model, data)
    expected = {"s_x": (b, context.shape[1], d), "z": (b, d), "s_y": (b, k, model.n_tokens, d)}
    for name, shape in expected.items():
        assert not prior.nodes[name]["is_observed"]
        assert guide.nodes[name]["value"].shape == shape
        assert prior.nodes[name]["fn"].batch_shape == (b,)
    assert prior.nodes["x"]["is_observed"] and prior.nodes["y"]["is_observed"]
    assert prior.nodes["x"]["value"].shape == (b, rows.shape[1])
    assert prior.nodes["y"]["value"].shape == (b, k, rows.shape[1])
    latent = {n for n in guide.stochastic_nodes if not site_is_subsample(guide.nodes[n])}
    assert latent == {"s_x", "z", "s_y"}


def _non_context_change(model, rows, context):
    """Rows whose non-context features (the targets) are altered, the context tokens' features kept."""
    changed = rows.clone()
    token = torch.tensor(token_of_feature_by_hand(model.config.group_size))
    keep = torch.zeros(rows.shape[0], int(token.max()) + 1, dtype=torch.bool).scatter(1, context, True)[:, token]
    n_num = 5
    changed[:, :n_num] = torch.where(keep[:, :n_num], rows[:, :n_num], rows[:, :n_num] + 3.0)
    return changed


def _s_y_log_prob(program, model, latents, data, value):
    conditioned = poutine.condition(getattr(model, program), data=latents)
    trace = poutine.trace(conditioned).get_trace(*data, weights={t: 1.0 for t in TERMS})
    return trace.nodes["s_y"]["fn"].log_prob(value)


def test_model_s_y_depends_on_s_x_and_z_not_on_y(model, data):
    rows, context, target = data
    prior, guide = traces(model, data)
    latents = {"s_x": guide.nodes["s_x"]["value"], "z": guide.nodes["z"]["value"]}
    value = guide.nodes["s_y"]["value"]
    base = _s_y_log_prob("model", model, latents, data, value)
    other_y = _s_y_log_prob("model", model, latents, (_non_context_change(model, rows, context), context, target), value)
    torch.testing.assert_close(base, other_y)
    other_z = _s_y_log_prob("model", model, {**latents, "z": latents["z"] + 1.0}, data, value)
    other_s_x = _s_y_log_prob("model", model, {**latents, "s_x": latents["s_x"] + 1.0}, data, value)
    assert not torch.allclose(base, other_z)
    assert not torch.allclose(base, other_s_x)


def test_guide_s_y_depends_on_y(model, data):
    rows, context, target = data
    _, guide = traces(model, data)
    latents = {"s_x": guide.nodes["s_x"]["value"], "z": guide.nodes["z"]["value"]}
    value = guide.nodes["s_y"]["value"]
    base = _s_y_log_prob("guide", model, latents, data, value)
    other_y = _s_y_log_prob("guide", model, latents, (_non_context_change(model, rows, context), context, target), value)
    assert not torch.allclose(base, other_y)


def test_model_and_guide_scale_each_latent_identically(model, data):
    weights = PAPER_LIKE.at(4)
    prior, guide = traces(model, data, weights)
    for name in ("s_x", "z", "s_y"):
        assert prior.nodes[name]["scale"] == pytest.approx(guide.nodes[name]["scale"])
    rows, context, target = data
    assert guide.nodes["s_x"]["scale"] == pytest.approx(weights["kl_s_x"] / (context.shape[1] * len(rows)))


def test_kl_weights_follow_linear_warm_up():
    w = LossWeights(rec=0.1, gen=1.0, kl_s_x=1e-4, kl_z=1e-6, kl_s_y=1e-5, anneal_s_x=10, anneal_z=20, anneal_s_y=0)
    assert w.at(0) == {"rec": 0.1, "gen": 1.0, "kl_s_x": 0.0, "kl_z": 0.0, "kl_s_y": 1e-5}
    assert w.at(5)["kl_s_x"] == pytest.approx(5e-5)
    assert w.at(5)["kl_z"] == pytest.approx(2.5e-7)
    assert w.at(10)["kl_s_x"] == pytest.approx(1e-4)
    assert w.at(1000)["kl_z"] == pytest.approx(1e-6)


# -- the hand-written oracle: Var-JEPA Eq. 10 with the normalizers of App. A.3.1 ------------------
def normal_log_density(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def gaussian_kl(loc_q, scale_q, loc_p, scale_p):
    var_q, var_p = scale_q**2, scale_p**2
    return 0.5 * (var_q / var_p + (loc_p - loc_q) ** 2 / var_p + torch.log(var_p / var_q) - 1)


def tabular_log_lik(decoder, sigma, latents, rows, n_num=5):
    loc, logits = decoder(latents)
    sigma = decoder.scale(latents) if decoder.row_scale else sigma
    lp_num = normal_log_density(rows[..., :n_num], loc, sigma)
    codes = rows[..., n_num:].long()
    lp_cat = torch.log_softmax(logits, -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    return torch.cat([lp_num, lp_cat], -1)


def token_of_feature_by_hand(group_size, n_num=5, n_cat=2):
    return [j // group_size for j in range(n_num)] + [math.ceil(n_num / group_size) + i for i in range(n_cat)]


def hand_terms(model, data, s_x, z, s_y, analytic):
    """The five terms of Eq. 10, batch-averaged, from the networks and the given samples."""
    rows, context, target = data
    b, d_feat = rows.shape
    token = torch.tensor(token_of_feature_by_hand(model.config.group_size))
    n_tokens = int(token.max()) + 1
    k, m_trg = target.shape[1:]
    m_ctx = context.shape[1]
    loc_x, scale_x = model.context_head(model.context_encoder(rows, index=context))
    pooled = model.pool(s_x)
    loc_z, scale_z = model.aux_encoder(pooled.flatten(1))
    loc_w, scale_w = model.target_params(rows, pooled, z)
    loc_p, scale_p = model.predictor_head(model.predictor(s_x, context, target, condition=z))
    idx = target.unsqueeze(-1).expand(-1, -1, -1, loc_w.shape[-1])
    loc_q = torch.gather(loc_w.unsqueeze(1).expand(-1, k, -1, -1), 2, idx)
    scale_q = torch.gather(scale_w.unsqueeze(1).expand(-1, k, -1, -1), 2, idx)
    s_y_trg = torch.gather(s_y, 2, idx)
    zero, one = torch.zeros(()), torch.ones(())
    if analytic:
        kl_sx = gaussian_kl(loc_x, scale_x, zero, one)
        kl_z = gaussian_kl(loc_z, scale_z, zero, one)
        kl_sy = gaussian_kl(loc_q, scale_q, loc_p, scale_p)
    else:
        kl_sx = normal_log_density(s_x, loc_x, scale_x) - normal_log_density(s_x, zero, one)
        kl_z = normal_log_density(z, loc_z, scale_z) - normal_log_density(z, zero, one)
        kl_sy = normal_log_density(s_y_trg, loc_q, scale_q) - normal_log_density(s_y_trg, loc_p, scale_p)
    ctx_mask = torch.zeros(b, n_tokens).scatter(1, context, 1.0)[:, token]  # the features of the context tokens
    sigma_x, sigma_y = (None, None) if model.config.decoder_scale == "row" else (model.log_sigma_x.exp(), model.log_sigma_y.exp())
    rec = tabular_log_lik(model.context_decoder, sigma_x, scatter_tokens(s_x, context, n_tokens), rows)
    gen = tabular_log_lik(model.target_decoder, sigma_y, s_y, rows.unsqueeze(1).expand(-1, k, -1))
    return {
        "rec": -(rec * ctx_mask).sum() / (m_ctx * d_feat / n_tokens * b),  # per observed feature
        "gen": -gen.sum() / (k * d_feat * b),
        "kl_s_x": kl_sx.sum() / (m_ctx * b),
        "kl_z": kl_z.sum() / b,
        "kl_s_y": kl_sy.sum() / (k * m_trg * b),
    }


@pytest.mark.parametrize("elbo_name,analytic", [("Trace_ELBO", False), ("TraceMeanField_ELBO", True)])
@pytest.mark.parametrize("step", [0, 4, 50])
def test_pyro_loss_equals_hand_written_five_term_loss(model, data, elbo_name, analytic, step):
    weights = PAPER_LIKE.at(step)
    pyro.set_rng_seed(123)
    guide = poutine.trace(model.guide).get_trace(*data, weights=weights)
    samples = [guide.nodes[n]["value"] for n in ("s_x", "z", "s_y")]
    expected = weighted_loss(hand_terms(model, data, *samples, analytic), weights)
    pyro.set_rng_seed(123)
    loss = getattr(pyro.infer, elbo_name)(max_plate_nesting=1).differentiable_loss(model.model, model.guide, *data, weights=weights)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_elbo_terms_match_hand_written_terms(model, data):
    pyro.set_rng_seed(7)
    terms = elbo_terms(model, *data, analytic_kl=True)
    pyro.set_rng_seed(7)
    guide = poutine.trace(model.guide).get_trace(*data)
    expected = hand_terms(model, data, *(guide.nodes[n]["value"] for n in ("s_x", "z", "s_y")), analytic=True)
    for term in TERMS:
        torch.testing.assert_close(terms[term], expected[term], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_trace_elbo_is_unbiased_for_the_analytic_kl(model, data):
    """Averaged over many particles, Trace_ELBO's Monte Carlo loss approaches TraceMeanField's."""
    weights = {t: 1.0 for t in TERMS}
    data = tuple(t[:16] for t in data)
    mc = pyro.infer.Trace_ELBO(num_particles=400, vectorize_particles=False, max_plate_nesting=1)
    mf = pyro.infer.TraceMeanField_ELBO(num_particles=400, vectorize_particles=False, max_plate_nesting=1)
    with torch.no_grad():
        a = mc.differentiable_loss(model.model, model.guide, *data, weights=weights)
        b = mf.differentiable_loss(model.model, model.guide, *data, weights=weights)
    assert float(a) == pytest.approx(float(b), rel=0.02)


def test_zero_weight_removes_a_term(model, data):
    """A zero weight (warm-up at step 0) must drop the term, not break Pyro's positive scale."""
    weights = {**{t: 1.0 for t in TERMS}, "kl_s_x": 0.0}
    pyro.set_rng_seed(3)
    loss = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1).differentiable_loss(model.model, model.guide, *data, weights=weights)
    pyro.set_rng_seed(3)
    terms = elbo_terms(model, *data)
    torch.testing.assert_close(loss, weighted_loss(terms, weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group_size", [1, 2])
def test_training_steps_lower_the_loss(schema, group_size):
    from tests.conftest import make_table

    torch.manual_seed(0)
    model = VarTJEPA(schema, replace(SMALL, group_size=group_size))
    train, val = make_table(schema, 256, seed=1), make_table(schema, 128, seed=2)
    before = model.eval().diagnostics(val.rows, step=0)["loss"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    with pyro.validation_enabled(False):
        for step in range(60):
            batch = train.rows[torch.randint(0, len(train), (64,))]
            loss = model.loss(batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = model.eval().diagnostics(val.rows, step=0)["loss"]
    assert after < 0.7 * before


def test_mlp_instance_loss_matches_closed_form_and_learns():
    torch.manual_seed(0)
    x = torch.randn(128, 6)
    y = x[:, :4] * 2.0 + 0.1 * torch.randn(128, 4)
    model = MLPVarJEPA(6, 4, latent_dim=4, aux_dim=2, hidden=32)
    weights = {t: 1.0 for t in TERMS}
    pyro.set_rng_seed(5)
    terms = elbo_terms(model, x, y)
    pyro.set_rng_seed(5)
    loss = pyro.infer.TraceMeanField_ELBO().differentiable_loss(model.model, model.guide, x, y, weights=weights)
    torch.testing.assert_close(loss, weighted_loss(terms, weights), rtol=1e-5, atol=1e-5)
    # KL(s_x) by hand from the encoder's outputs.
    loc, scale = model.context_encoder(x)
    torch.testing.assert_close(terms["kl_s_x"], gaussian_kl(loc, scale, torch.zeros(()), torch.ones(())).sum() / 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    elbo = pyro.infer.Trace_ELBO()
    first = float(elbo.differentiable_loss(model.model, model.guide, x, y, weights=weights).detach())
    for _ in range(150):
        loss = elbo.differentiable_loss(model.model, model.guide, x, y, weights=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < first - 2.0


def test_mlp_var_jepa_trains_on_the_sim_table_with_the_engine(tmp_path):
    """The generic program trains end to end through `fit` on a real table: its ELBO rises."""
    from pyro_jepa.data import load_dataset
    from pyro_jepa.train import TrainConfig, fit

    splits = load_dataset("sim", max_rows=900, seed=0)
    half = splits.schema.n_numerical // 2  # context: the first 14 numerical columns, target: the next 14
    torch.manual_seed(0)
    model = MLPVarJEPA(half, half, latent_dim=8, aux_dim=4, hidden=64)
    before = model.eval().diagnostics(splits.val.rows, step=10**6)
    result = fit(model, splits.train, splits.val, TrainConfig(epochs=6, batch_size=64, select="loss", progress=False), tmp_path)
    after = model.diagnostics(splits.val.rows, step=10**6)
    assert after["loss"] < before["loss"] - 1.0  # validation negative ELBO (all weights 1) falls: the ELBO rises
    assert all(math.isfinite(v) for v in after.values()) and set(after) == {*TERMS, "loss"}
    history = result.history
    assert history[-1]["val_loss"] < history[0]["val_loss"] and history[0]["alpha_kl_s_y"] == 1.0
    assert model.embed(splits.test.rows).shape == (len(splits.test), 8)
    assert (model.uncertainty(splits.test.rows) > 0).all()


def test_heteroscedastic_decoder_log_density_by_hand():
    """sigma_j = 0.001 + softplus(w_j . h_j + b_j) per row and feature, in the Gaussian log-density."""
    schema = TabularSchema(numerical=("a", "b"), categorical=("c",), cardinalities=(2,), label="y", classes=("0", "1"))
    decoder = TabularDecoder(schema, dim=2, row_scale=True)
    assert torch.allclose(decoder.scale(torch.zeros(1, 3, 2)), torch.ones(1, 2))  # starts at sigma = 1
    with torch.no_grad():
        decoder.num_weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        decoder.num_bias.copy_(torch.tensor([0.5, -1.0]))
        decoder.scale_weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.0]]))
        decoder.scale_bias.copy_(torch.tensor([0.0, -2.0]))
        decoder.cat_weight.zero_()
        decoder.cat_bias.copy_(torch.tensor([[0.0, math.log(3.0)]]))
    latents = torch.tensor([[[0.3, -0.2], [1.0, 0.4], [0.0, 0.0]]])  # one row: tokens of a, b, c
    row = torch.tensor([[1.0, 0.2, 1.0]])  # a = 1.0, b = 0.2, c = code 1
    loc, logits = decoder(latents)
    fn = MixedTabular(loc, decoder.scale(latents), logits, torch.tensor([2]))

    def softplus(x):
        return math.log1p(math.exp(x))

    mu_a, mu_b = 0.3 + 0.5, 2.0 * 0.4 - 1.0  # 0.8, -0.2
    sigma_a, sigma_b = 0.001 + softplus(0.3 + 0.2), 0.001 + softplus(0.5 * 1.0 - 2.0)
    by_hand = sum(
        -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
        for x, mu, sigma in ((1.0, mu_a, sigma_a), (0.2, mu_b, sigma_b))
    ) + math.log(3.0 / 4.0)  # softmax([0, log 3])[1]
    assert fn.log_prob(row).item() == pytest.approx(by_hand, rel=1e-6)
    assert fn.log_prob(row).dtype == torch.float32
    with pytest.raises(RuntimeError, match="row_scale"):
        TabularDecoder(schema, dim=2).scale(latents)


def test_row_scale_model_has_no_global_sigmas(schema):
    model = VarTJEPA(schema, replace(SMALL, decoder_scale="row"))
    assert not hasattr(model, "log_sigma_x") and "decoder-scale" in model.score_names
    with pytest.raises(ValueError, match="decoder_scale"):
        replace(SMALL, decoder_scale="feature")


def test_feature_groups_map_features_to_tokens(schema):
    """5 numerical features in groups of 2 take tokens 0, 0, 1, 1, 2; the categoricals 3 and 4."""
    assert token_of_feature(schema, 2).tolist() == [0, 0, 1, 1, 2, 3, 4] == token_of_feature_by_hand(2)
    assert token_of_feature(schema, 1).tolist() == list(range(7))
    assert token_names(schema.numerical, schema.categorical, 2) == ("n0..n1", "n2..n3", "n4", "c0", "c1")
    assert token_names(schema.numerical, schema.categorical, 1) == schema.feature_names
    model = VarTJEPA(schema, replace(SMALL, group_size=2))
    assert model.n_tokens == 5 and model.token_names[0] == "n0..n1"
    token_mask = torch.tensor([[True, False, False, True, False]])
    assert model.feature_mask(token_mask).tolist() == [[True, True, False, False, False, True, False]]


def test_grouped_tokenizer_is_a_patch_embedding_by_hand():
    """Token g = sum_{j in g} x_j W[g, j] + b_g + e_num + e_pos[g]; a short last group ignores its padding."""
    schema = TabularSchema(numerical=("a", "b", "c"), categorical=("k",), cardinalities=(2,), label="y", classes=("0", "1"))
    tokenizer = FeatureTokenizer(schema, dim=2, group_size=2)
    assert tokenizer.num_weight.shape == (2, 2, 2) and tokenizer.position.shape == (3, 2)
    with torch.no_grad():
        tokenizer.num_weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 1.0], [99.0, 99.0]]]))
        tokenizer.num_bias.copy_(torch.tensor([[0.5, 0.5], [0.0, -1.0]]))
        tokenizer.type_embedding.copy_(torch.tensor([[0.1, 0.0], [0.0, 0.2]]))
        tokenizer.position.zero_()
        tokenizer.cat_embedding.weight.copy_(torch.tensor([[7.0, 8.0], [9.0, 10.0]]))
    tokens = tokenizer(torch.tensor([[1.0, 2.0, 3.0, 1.0]]))  # a, b, c, k = code 1
    expected = torch.tensor([[
        [1.0 + 0.5 + 0.1, 2.0 * 2.0 + 0.5],  # a * [1, 0] + b * [0, 2] + b_0 + e_num
        [3.0 * 3.0 + 0.1, 3.0 * 1.0 - 1.0],  # c * [3, 1] + b_1 + e_num; the 99s are padding
        [9.0, 10.0 + 0.2],  # the categorical's own token
    ]])
    torch.testing.assert_close(tokens, expected)


def test_grouped_decoder_heads_read_their_group_token_by_hand():
    """Feature j's mean and scale are linear heads of the token that holds j."""
    schema = TabularSchema(numerical=("a", "b", "c"), categorical=("k",), cardinalities=(2,), label="y", classes=("0", "1"))
    decoder = TabularDecoder(schema, dim=2, row_scale=True, group_size=2)
    with torch.no_grad():
        decoder.num_weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [50.0, 50.0]]))  # last row: padding
        decoder.num_bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
        decoder.scale_weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -1.0], [50.0, 50.0]]))
        decoder.scale_bias.zero_()
        decoder.cat_weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
        decoder.cat_bias.zero_()
    latents = torch.tensor([[[0.3, -0.2], [1.0, 0.4], [2.0, 3.0]]])  # tokens (a, b), (c), (k)
    loc, logits = decoder(latents)
    torch.testing.assert_close(loc, torch.tensor([[0.3 + 0.5, -0.4 - 1.0, 1.4]]))
    softplus = torch.nn.functional.softplus
    torch.testing.assert_close(decoder.scale(latents), 0.001 + softplus(torch.tensor([[0.3, 0.0, -0.4]])))
    torch.testing.assert_close(logits, torch.tensor([[[2.0, 3.0]]]))


def test_group_size_is_checked_and_left_out_of_settings_at_one(schema):
    assert "group_size" not in VarTJEPA(schema, SMALL).settings()  # checkpoints from before grouping resume
    assert VarTJEPA(schema, replace(SMALL, group_size=2)).settings()["group_size"] == 2
    with pytest.raises(ValueError, match="group_size must be a whole number"):
        replace(SMALL, group_size=0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        VarTJEPA(TabularSchema(numerical=("a", "b"), categorical=(), cardinalities=(), label="y", classes=("0", "1")),
                 replace(SMALL, group_size=2))
