"""VJE: the polar Student-t subdensity, the model/guide pair and its training through `fit`."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_jepa.data.images import ImageData
from pyro_jepa.distributions import PolarStudentT, fit_smoothing, kl_to_mixture_bound, polar, smoothed_scale
from pyro_jepa.models import VJE, SimSiam, SimSiamConfig, VICReg, VICRegConfig, VJEConfig
from pyro_jepa.models.image_ssl import ImageSSL
from pyro_jepa.models import vje as vje_module
from pyro_jepa.models.vje import DIRECTION_ENTROPY_EPS, SCORES, Posterior, direction_entropy, gaussian_aggregate_kl
from pyro_jepa.train import TrainConfig, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def polar_t(d: int, batch: tuple[int, ...] = (4,), scale: float = 0.5, df: float = 3.0, seed: int = 0) -> PolarStudentT:
    g = torch.Generator().manual_seed(seed)
    return PolarStudentT(
        torch.randn(*batch, d, generator=g),
        torch.full((*batch, d), scale),
        torch.tensor(df),
        torch.zeros(batch),
        torch.tensor(0.7),
        torch.tensor(4.0),
        validate_args=True,
    )


# -- the distribution ------------------------------------------------------------------------
def test_shapes_and_broadcasting():
    p = polar_t(6, batch=(4,))
    assert p.batch_shape == (4,) and p.event_shape == (6,)
    assert p.log_prob(torch.randn(4, 6)).shape == (4,)
    assert p.log_prob(torch.randn(3, 4, 6)).shape == (3, 4)  # sample dims broadcast
    assert p.expand((2, 4)).log_prob(torch.randn(2, 4, 6)).shape == (2, 4)
    # a latent sample dim on loc broadcasts against a per-row scale and radial location
    q = PolarStudentT(torch.randn(5, 4, 6), torch.ones(4, 6), 3.0, torch.zeros(4), 1.0, 3.0)
    assert q.batch_shape == (5, 4) and q.log_prob(torch.randn(4, 6)).shape == (5, 4)


def test_support_args_and_sampling():
    p = polar_t(3)
    assert p.support.check(torch.tensor([[0.0, 0.0, 1e-3]])).all()
    assert not p.support.check(torch.zeros(1, 3)).any()
    with pytest.raises(ValueError):
        p.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError):
        PolarStudentT(torch.zeros(3), -torch.ones(3), 3.0, 0.0, 1.0, 3.0, validate_args=True)
    with pytest.raises(NotImplementedError, match="subdensity"):
        p.sample()


@pytest.mark.parametrize("d", [8, 4096])
@pytest.mark.parametrize("norm", [1e-30, 1e-8, 1.0, 1e8, 1e30])
@pytest.mark.parametrize("gaussian", [False, True])
def test_log_prob_finite_at_extreme_norms(d, norm, gaussian):
    loc = torch.randn(2, d, requires_grad=True)
    scale = torch.full((2, d), 1e-3, requires_grad=True)
    p = PolarStudentT(loc, scale, 2.0, torch.zeros(2), 0.5, 2.0, gaussian=gaussian)
    value = torch.randn(2, d)
    value = norm * value / value.norm(dim=-1, keepdim=True)
    lp = p.log_prob(value)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()
    # the radial factor sees the log-norm exactly
    assert torch.allclose(polar(value)[1], torch.full((2,), math.log(norm)), rtol=1e-5, atol=1e-4)


def test_polar_of_zero_is_finite():
    u, log_norm = polar(torch.zeros(2, 5))
    assert torch.isfinite(u).all() and torch.isfinite(log_norm).all()


@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("scale", [1e-2, 0.3, 3.0, 100.0])
@pytest.mark.parametrize("gaussian", [False, True])
def test_directional_factor_is_a_subdensity(d, scale, gaussian):
    """Monte Carlo over the uniform measure on S^{d-1}: the directional factor integrates to <= 1."""
    g = torch.Generator().manual_seed(d)
    u = torch.randn(100_000, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    # location on the √d-sphere (peak reachable) and off it
    for loc in (math.sqrt(d) * u[0], torch.randn(d, generator=g, dtype=torch.float64)):
        p = PolarStudentT(loc, torch.full((d,), scale, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64), 0.0, 1.0, 1.5, gaussian=gaussian)
        lp = p.directional_log_prob(u)
        assert (lp <= 0).all()  # the pointwise bound k_dir <= 1
        mass = lp.exp().mean()
        stderr = lp.exp().std() / math.sqrt(len(u))
        assert mass <= 1 + 3 * stderr
    # with a very wide kernel the bound is tight: the mass approaches 1
    assert mass > 0.99 if scale == 100.0 else True


def test_radial_factor_is_normalized_in_log_norm():
    p = PolarStudentT(torch.zeros(3), torch.ones(3), 3.0, torch.tensor(0.4), torch.tensor(0.3), torch.tensor(2.5))
    s = torch.linspace(-200, 200, 400_001, dtype=torch.float64)
    values = s.exp().unsqueeze(-1) * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    dens = PolarStudentT(p.loc.double(), p.scale.double(), p.df.double(), p.radial_loc.double(), p.radial_scale.double(), p.radial_df.double()).radial_log_prob(values).exp()
    assert torch.trapezoid(dens, s) == pytest.approx(1.0, abs=2e-3)


# -- the program -----------------------------------------------------------------------------
def small_vje(**overrides) -> VJE:
    return VJE(VJEConfig(width=4, image_size=8, hidden=16, **overrides))


def embeddings(d: int, batch: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, d, generator=g).abs() + 0.1, torch.randn(batch, d, generator=g).abs() + 0.1


def std_normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def mixture_log_prob(method: VJE, z: torch.Tensor) -> torch.Tensor:
    """log Σ_k π_k N(z; m_k, s_k) written out, for the learned priors."""
    if method.config.prior == "mixture":
        log_pi = torch.log_softmax(method.prior_logits, 0)
        loc, scale = method.prior_loc, method.prior_log_scale.exp()
    else:
        loc, scale = method.head(method.inference(method.pseudo_embeddings))
        log_pi = torch.full((len(loc),), -math.log(len(loc)))
    per_component = std_normal_log_prob(z.unsqueeze(-2), loc, scale) + log_pi
    return per_component.logsumexp(-1)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"kl_weight": 1.0, "particles": 1}, {"polar": False}, {"likelihood": "gaussian"}, {"shared_variance": False}, {"directional": "stereographic"},
     {"directional": "gnomonic", "prior": "mixture"}, {"prior": "vamp", "prior_components": 3},
     {"kl_weight": 0.3}, {"kl_weight": 0.05, "prior": "mixture"}, {"projector_dim": 6},
     {"particles": 3}, {"particles": 2, "prior": "vamp", "prior_components": 3},
     {"aggregate_kl": 2.0}, {"aggregate_kl": 0.5, "particles": 3},
     {"marginal_entropy": 1.0}, {"marginal_entropy": 0.3, "particles": 3, "aggregate_kl": 0.5},
     {"likelihood_scale": 0.8}, {"likelihood_scale": 1.3, "marginal_entropy": 1.0, "directional": "bounded"}],
)
def test_pyro_elbo_equals_hand_written_symmetric_elbo(overrides):
    method = small_vje(**overrides)
    h_a, h_b = embeddings(method.latent_dim)
    args = method.program_args(h_a, h_b)
    pyro.set_rng_seed(7)
    loss = method.elbo.differentiable_loss(method.model, method.guide, *args)

    pyro.set_rng_seed(7)
    post, h = args[2], (h_a, h_b)
    elbo = 0.0
    particles = method.config.particles
    for c, t in ((0, 1), (1, 0)):  # the guide samples z_ab, then z_ba (all particles at once)
        q = post[c]
        z = q.loc + q.scale * torch.randn((particles, *q.loc.shape)).squeeze(0)
        log_prior = mixture_log_prob(method, z) if method.config.prior != "standard" else std_normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
        log_q = std_normal_log_prob(z, q.loc, q.scale)
        log_lik = method.likelihood(z, q).log_prob(h[t])
        elbo = elbo + 0.5 * (log_lik + method.config.kl_weight * (log_prior - log_q)).mean()
        # the extra weight on the aggregate posterior's KL: a Gaussian with the batch's moments against N(0, I)
        d = q.loc.shape[1]
        moments = torch.distributions.MultivariateNormal(
            q.loc.mean(0), torch.cov(q.loc.T, correction=0) + torch.diag(q.scale.pow(2).mean(0)))
        standard = torch.distributions.MultivariateNormal(torch.zeros(d), torch.eye(d))
        elbo = elbo - 0.5 * method.config.aggregate_kl * torch.distributions.kl_divergence(moments, standard)
        # the marginal entropy of the online embeddings' directions: a Gaussian's entropy less (d/2) log(2πe)
        u = math.sqrt(d) * h[c] / h[c].norm(dim=1, keepdim=True)
        gaussian = torch.distributions.MultivariateNormal(torch.zeros(d), torch.cov(u.T, correction=0) + 1e-4 * torch.eye(d))
        elbo = elbo + 0.5 * method.config.marginal_entropy * (gaussian.entropy() - 0.5 * d * math.log(2 * math.pi * math.e))
    assert torch.allclose(loss, -elbo, rtol=1e-5, atol=1e-5)


def test_direction_entropy_known_answers():
    d = 4
    # the 2d directions ±e_i: mean 0, covariance of √d·u exactly I, so the entropy is (d/2) log(1 + ε), its maximum
    axes = torch.cat([torch.eye(d), -torch.eye(d)])
    assert direction_entropy(axes).item() == pytest.approx(0.5 * d * math.log(1 + DIRECTION_ENTROPY_EPS), abs=1e-6)
    # only the directions count: scaling rows by any positive amounts changes nothing
    scales = torch.tensor([0.01, 3.0, 50.0, 1.0, 2.0, 7.0, 0.5, 1e3])[:, None]
    assert direction_entropy(scales * axes).item() == pytest.approx(direction_entropy(axes).item(), abs=1e-6)
    # every row in one direction: the covariance is 0 and only the ridge is left
    same = torch.rand(1, d).expand(5, d) * torch.arange(1.0, 6.0)[:, None]
    assert direction_entropy(same).item() == pytest.approx(0.5 * d * math.log(DIRECTION_ENTROPY_EPS), rel=1e-4)
    # directions spread over 2 of the 4 axes lie in between
    assert 0.5 * d * math.log(DIRECTION_ENTROPY_EPS) < direction_entropy(axes[[0, 1, 4, 5]]).item() < 0


def test_marginal_entropy_spreads_collapsing_embeddings():
    # the term's gradient moves nearly collinear embeddings apart: the spread of their directions grows
    h = (torch.tensor([[1.0, 0.0, 0.0]]) + 0.01 * torch.randn(16, 3, generator=torch.Generator().manual_seed(0))).requires_grad_()
    before = direction_entropy(h)
    before.backward()
    assert direction_entropy(h.detach() + 1e-3 * h.grad).item() > before.item()


def test_gaussian_aggregate_kl_known_answers():
    # every posterior N(0, 4 I): the aggregate is N(0, 4 I), KL = (tr C + |m|² − d − log det C) / 2
    assert gaussian_aggregate_kl(torch.zeros(10, 3), torch.full((10, 3), 2.0)).item() == pytest.approx(0.5 * (12 - 3 - 3 * math.log(4)))
    # point posteriors at ±1 on one axis, unit variance on the others: mean 0, covariance I, so KL 0
    loc = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    scale = torch.tensor([[1e-12, 1.0], [1e-12, 1.0]])
    assert gaussian_aggregate_kl(loc, scale).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("overrides", [{"aggregate_kl": -1.0}, {"aggregate_kl": 1.0, "prior": "mixture"}])
def test_aggregate_kl_needs_a_non_negative_weight_and_the_standard_prior(overrides):
    with pytest.raises(ValueError, match="aggregate_kl must be >= 0, and needs prior='standard'"):
        VJEConfig(**overrides)


def test_marginal_entropy_needs_a_non_negative_weight():
    with pytest.raises(ValueError, match="marginal_entropy must be >= 0"):
        VJEConfig(marginal_entropy=-0.5)


@pytest.mark.parametrize("overrides", [{"target_momentum": 1.0}, {"target_momentum": -0.1}, {"target_momentum": 0.99, "stop_gradient": False}])
def test_target_momentum_needs_a_momentum_below_one_and_stop_gradient(overrides):
    with pytest.raises(ValueError, match="target_momentum must be in"):
        VJEConfig(**overrides)


def test_target_network_starts_as_the_online_network_and_observes_its_embeddings():
    torch.manual_seed(3)
    plain = small_vje(projector_dim=6)
    torch.manual_seed(3)
    ema = small_vje(projector_dim=6, target_momentum=0.9)
    # the option does not change the online network's initial weights
    for (name, a), (_, b) in zip(plain.named_parameters(), ema.named_parameters()):
        assert torch.equal(a, b), name
    # at initialization the target network is the online one, so the loss is the stop-gradient loss ...
    images = random_images(8).rows
    losses = []
    for method in (plain, ema):
        torch.manual_seed(11)
        losses.append(method.loss(images, 0))
    torch.testing.assert_close(losses[0], losses[1])
    # ... and no gradient reaches the target network
    losses[1].backward()
    assert all(p.grad is None and not p.requires_grad for p in ema.target_network.parameters())
    assert any(p.grad is not None for p in ema.backbone.parameters())


def test_target_network_follows_a_cosine_momentum_schedule():
    method = small_vje(target_momentum=0.9)
    online = method.online_network()
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)  # the online weights move one unit away from the target's
    before = [t.clone() for t in method.target_network.parameters()]
    method.on_step_end(0, 10)  # momentum 0.9 at the start: the target moves 10 % of the way
    for t, b, p in zip(method.target_network.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, b + 0.1 * (p - b))
    before = [t.clone() for t in method.target_network.parameters()]
    method.on_step_end(5, 10)  # half way: momentum 1 - 0.1 * (cos(π/2) + 1) / 2 = 0.95
    for t, b, p in zip(method.target_network.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, b + 0.05 * (p - b))
    before = [t.clone() for t in method.target_network.parameters()]
    for buffer in online.buffers():
        buffer.add_(3)  # batch-norm statistics the target has not seen yet
    method.on_step_end(10, 10)  # the end: momentum 1, the target stays
    assert all(torch.equal(t, b) for t, b in zip(method.target_network.parameters(), before))
    # batch-norm statistics are copied, not averaged
    assert list(online.buffers()), "the backbone has batch-norm statistics to copy"
    assert all(torch.equal(t, b) for t, b in zip(method.target_network.buffers(), online.buffers()))


def traces(method: VJE, h_a: torch.Tensor, h_b: torch.Tensor):
    args = method.program_args(h_a, h_b)
    guide = poutine.trace(method.guide).get_trace(*args)
    model = poutine.trace(poutine.replay(method.model, trace=guide)).get_trace(*args)
    return model, guide


def test_shared_variances_are_one_tensor():
    method = small_vje()
    model, guide = traces(method, *embeddings(method.dim))
    for name in ("ab", "ba"):
        lik_scale = model.nodes[f"h_{name}"]["fn"].scale
        q_scale = guide.nodes[f"z_{name}"]["fn"].base_dist.scale
        assert lik_scale.data_ptr() == q_scale.data_ptr() and lik_scale.shape == q_scale.shape
        assert lik_scale.requires_grad
    separate = small_vje(shared_variance=False)
    model, guide = traces(separate, *embeddings(separate.dim))
    assert model.nodes["h_ab"]["fn"].scale.data_ptr() != guide.nodes["z_ab"]["fn"].base_dist.scale.data_ptr()


def test_fixed_likelihood_scale_is_constant_and_leaves_the_posterior_free():
    method = small_vje(likelihood_scale=0.8)
    model, guide = traces(method, *embeddings(method.dim))
    lik_scale, q_scale = model.nodes["h_ab"]["fn"].scale, guide.nodes["z_ab"]["fn"].base_dist.scale
    assert torch.equal(lik_scale, torch.full_like(q_scale, 0.8)) and not lik_scale.requires_grad
    assert q_scale.requires_grad and q_scale.std() > 0
    with pytest.raises(ValueError, match="likelihood_scale"):
        VJEConfig(likelihood_scale=-1.0)
    with pytest.raises(ValueError, match="shared_variance"):
        VJEConfig(likelihood_scale=0.8, shared_variance=False)


def test_sites_scales_and_stop_gradient():
    method = small_vje()
    h_a, h_b = embeddings(method.dim)
    h_b.requires_grad_(True)
    model, guide = traces(method, h_a, h_b)
    assert model.nodes["h_ab"]["is_observed"] and not model.nodes["h_ab"]["value"].requires_grad
    assert model.nodes["z_ab"]["scale"] == pytest.approx(method.config.kl_weight * 0.5 / 5)
    model, guide = traces(small_vje(kl_weight=1.0), h_a, h_b)
    assert model.nodes["z_ab"]["scale"] == guide.nodes["z_ab"]["scale"] == pytest.approx(0.5 / 5)
    model, guide = traces(small_vje(kl_weight=0.1), h_a, h_b)
    assert model.nodes["z_ab"]["scale"] == guide.nodes["z_ab"]["scale"] == pytest.approx(0.1 * 0.5 / 5)
    assert model.nodes["h_ab"]["scale"] == pytest.approx(0.5 / 5)
    with pytest.raises(ValueError, match="kl_weight"):
        VJEConfig(kl_weight=0.0)
    model, _ = traces(small_vje(stop_gradient=False), h_a, h_b)
    assert model.nodes["h_ab"]["value"].requires_grad


def random_images(n: int, size: int = 8, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    rows = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    rows[y == 1, 0] = 255  # class 1 is red-saturated: something to probe
    return ImageData(rows, y, ("a", "b"))


@pytest.mark.parametrize(
    "method",
    [
        lambda: small_vje(),
        lambda: small_vje(projector_dim=6),
        lambda: small_vje(target_momentum=0.9),
        lambda: SimSiam(SimSiamConfig(width=4, image_size=8, proj_dim=16, pred_hidden=8)),
        lambda: VICReg(VICRegConfig(width=4, image_size=8, expander_dim=16)),
    ],
    ids=["vje", "vje-projector", "vje-target-network", "simsiam", "vicreg"],
)
def test_trains_through_the_engine(method, tmp_path):
    m = method()
    config = TrainConfig(epochs=2, batch_size=16, warmup_epochs=1, probe_rows=32, progress=False)
    result = fit(m, random_images(48), random_images(16, seed=1), config, tmp_path)
    assert len(result.history) == 2 and (tmp_path / "best.pt").is_file()
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) for row in result.history)
    assert m.embed(random_images(10).rows).shape == (10, m.dim)


def test_vje_scores_and_uncertainty_are_per_image():
    method = small_vje(score_pairs=2).eval()
    images = random_images(6).rows
    scores = method.anomaly_scores(images, reference=random_images(5, seed=2).rows, validation=random_images(4, seed=3).rows, samples=3)
    for score in scores.values():
        assert score.shape == (6,) and torch.isfinite(score).all()
    assert set(scores) == set(SCORES)
    assert torch.equal(scores["neg_elbo"], method.anomaly_scores(images, samples=3)["neg_elbo"])  # views and z are seeded
    assert not {"neg_evidence", "elbo_two_sided"} & set(method.anomaly_scores(images, samples=3))  # need reference images
    torch.testing.assert_close(scores["neg_elbo"], scores["neg_loglik"] + scores["kl"])
    sigma = method.uncertainty(images)
    assert sigma.shape == (6, method.dim) and (sigma > 0).all()


def test_posterior_mean_is_the_clean_posteriors_loc_in_chunks(monkeypatch):
    method = small_vje(projector_dim=6).eval()
    images = random_images(7).rows
    whole = method.clean_posterior(images).loc
    monkeypatch.setattr(vje_module, "EVAL_CHUNK", 3)  # 7 images: chunks of 3, 3 and 1
    mu = method.posterior_mean(images)
    assert mu.shape == (7, 6) and not mu.requires_grad
    torch.testing.assert_close(mu, whole.detach())


def test_projector_output_is_what_the_program_models():
    method = small_vje(projector_dim=6)
    assert method.latent_dim == 6 != method.dim
    images = random_images(8).rows
    e_a, e_b = method.views(images, torch.Generator().manual_seed(0))
    h_a, h_b = ImageSSL.views(method, images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(e_a, method.projector(h_a))
    torch.testing.assert_close(e_b, method.projector(h_b))
    method.loss(images, step=0).backward()
    for module in (method.backbone, method.projector, method.inference):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    method.eval()
    assert method.embed(images).shape == (8, method.dim)  # probes read the backbone
    torch.testing.assert_close(method.clean_posterior(images).loc, method.posterior(method.projector(method.embed(images))).loc)
    assert method.uncertainty(images).shape == (8, 6)
    scores = method.anomaly_scores(images, reference=random_images(5, seed=2).rows, samples=2, pairs=1)
    assert all(s.shape == (8,) and torch.isfinite(s).all() for s in scores.values())
    plain = small_vje()
    assert isinstance(plain.projector, torch.nn.Identity) and plain.latent_dim == plain.dim
    with pytest.raises(ValueError, match="projector_dim"):
        VJEConfig(projector_dim=-1)


def sphere_clusters(n: int, centers: torch.Tensor, g: torch.Generator, spread: float = 0.15) -> torch.Tensor:
    """Embeddings of norm 3 scattered around unit ``centers`` (one drawn per row)."""
    h = centers[torch.randint(0, len(centers), (n,), generator=g)] + spread * torch.randn(n, centers.shape[1], generator=g)
    return 3.0 * h / h.norm(dim=-1, keepdim=True)


def typicality_auroc(prior: str, steps: int = 300, seed: int = 1, score: str = "typicality") -> float:
    """Fit VJE's inference network and prior on two clusters of embeddings on the sphere (two noisy
    views per point), then rank 200 cluster points and 50 points of an unseen third direction by
    ``score`` ("typicality" under p_ψ, or "kl_training" / "kl_training_gaussian" against 500
    training-cluster points);
    returns the AUROC of "outlier"."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    method = VJE(VJEConfig(width=4, image_size=8, hidden=32, prior=prior, prior_components=4, directional="stereographic",
                           kl_weight=1.0, particles=1))  # the plain one-sample ELBO these known answers were measured with
    centers = torch.eye(method.dim)[:3]  # clusters along e0 and e1, the outlier direction e2
    params = [p for name, p in method.named_parameters() if not name.startswith("backbone")]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        h = sphere_clusters(128, centers[:2], g)
        loss = method.two_view_loss(h + 0.05 * torch.randn(h.shape, generator=g), h + 0.05 * torch.randn(h.shape, generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.embed = lambda rows: rows  # the toy's "images" are already embeddings
    with torch.no_grad():
        h = torch.cat([sphere_clusters(200, centers[:2], g), sphere_clusters(50, centers[2:], g)])
        if score == "typicality":
            values = method.cross_entropy(method.posterior(h), samples=16, generator=g)
        elif score == "kl_training":
            values = method.training_kl(sphere_clusters(500, centers[:2], g), h)
        else:
            values = method.training_kl_gaussian(sphere_clusters(500, centers[:2], g), h)
    return roc_auc_score(torch.arange(250) >= 200, values)


def test_learned_prior_makes_typicality_rank_an_outlier_direction():
    """Known answer: with a learned mixture prior, points of an unseen direction are less typical than
    both training clusters; with the fixed N(0, I) prior the same score is near chance."""
    assert typicality_auroc("mixture") > 0.95
    assert abs(typicality_auroc("standard") - 0.5) < 0.2


def test_kl_to_the_training_posteriors_ranks_an_outlier_direction():
    """Known answer: the KL to the aggregate posterior of the training clusters flags the unseen
    direction. (With the fixed N(0, I) prior this toy's posteriors stay close to the prior, ‖μ‖ ≈ 0.6
    against σ ≈ 1, and no posterior-based score ranks well: AUROC 0.45-0.80 over seeds 1-3.)"""
    assert typicality_auroc("mixture", score="kl_training") > 0.95


def test_kl_to_the_training_gaussian_ranks_an_outlier_direction():
    """Known answer: one Gaussian fitted to both training clusters has no variance along the unseen
    direction, so the KL to it flags that direction too."""
    assert typicality_auroc("mixture", score="kl_training_gaussian") > 0.95


def test_fit_smoothing_picks_the_width_that_suits_unseen_points():
    """Known answer: narrow components at draws from N(0, I) fit those draws best unsmoothed, while fresh
    draws from the same N(0, I) are better explained by a smoothed mixture (as a kernel density estimate)."""
    g = torch.Generator().manual_seed(0)
    mix_loc, mix_scale = torch.randn(300, 2, generator=g), torch.full((300, 2), 0.05)
    fresh_loc, narrow = torch.randn(400, 2, generator=g), torch.full((400, 2), 0.05)
    width, curve = fit_smoothing(fresh_loc, narrow, mix_loc, mix_scale)
    assert width > 0 and curve[width] == min(curve.values()) and curve[width] < curve[0.0]
    for w, mean_kl in curve.items():  # each point of the curve is the mean bound under that smoothing
        expected = kl_to_mixture_bound(fresh_loc, narrow, mix_loc, smoothed_scale(mix_scale, w)).double().mean()
        assert mean_kl == pytest.approx(float(expected))
    # points far apart, each held-out posterior one of the components: nothing is gained by smoothing
    apart = 10.0 * torch.arange(20.0).repeat(2, 1).T
    assert fit_smoothing(apart, mix_scale[:20], apart, mix_scale[:20])[0] == 0.0
    # the smoothing adds (width * median scale)^2 to every component's variance
    torch.testing.assert_close(smoothed_scale(mix_scale, 2.0), torch.full((300, 2), (0.05**2 + 0.1**2) ** 0.5))
    assert smoothed_scale(mix_scale, 0.0) is mix_scale
    with pytest.raises(ValueError, match="widths >= 0"):
        fit_smoothing(fresh_loc, narrow, mix_loc, mix_scale, grid=(-1.0,))
    # a grid that stops short of the best width says so instead of returning its edge silently
    with pytest.warns(RuntimeWarning, match="largest width of its grid"):
        assert fit_smoothing(fresh_loc, narrow, mix_loc, mix_scale, grid=(0.0, 0.25))[0] == 0.25


def test_kl_to_mixture_bound_known_answers():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(5, 3, generator=g), 0.5 + torch.rand(5, 3, generator=g)
    mix_loc, mix_scale = torch.randn(4, 3, generator=g), 0.5 + torch.rand(4, 3, generator=g)
    # one component: the exact KL between diagonal Gaussians
    exact = torch.distributions.kl_divergence(dist.Normal(loc, scale).to_event(1), dist.Normal(mix_loc[:1], mix_scale[:1]).to_event(1))
    torch.testing.assert_close(kl_to_mixture_bound(loc, scale, mix_loc[:1], mix_scale[:1]), exact)
    parts = [kl_to_mixture_bound(loc, scale, mix_loc[:1], mix_scale[:1], part=p) for p in ("location", "scale")]
    torch.testing.assert_close(parts[0] + parts[1], exact)
    torch.testing.assert_close(parts[0], 0.5 * ((loc - mix_loc[:1]) / mix_scale[:1]).pow(2).sum(-1))
    # several: above the Monte Carlo KL to VJE's aggregate prior, below min_k KL_k + log K
    bound = kl_to_mixture_bound(loc, scale, mix_loc, mix_scale)
    mixture = VJE(VJEConfig(width=4, image_size=8, hidden=8)).aggregate_prior(Posterior(mix_loc, mix_scale, mix_scale, mix_loc[:, 0]))
    q = dist.Normal(loc, scale).to_event(1)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - mixture.log_prob(z)).mean(0)  # (200000, 5) -> (5,)
    assert (bound >= monte_carlo - 0.01).all()
    per_component = torch.distributions.kl_divergence(dist.Normal(loc[:, None], scale[:, None]).to_event(1), dist.Normal(mix_loc, mix_scale).to_event(1))
    assert (bound <= per_component.min(-1).values + math.log(4) + 1e-5).all()
    # chunking does not change the answer
    import pyro_jepa.distributions.mixture_kl as mixture_kl
    full_block, mixture_kl.BLOCK = mixture_kl.BLOCK, 3 * 4
    try:
        torch.testing.assert_close(kl_to_mixture_bound(loc, scale, mix_loc, mix_scale), bound)
    finally:
        mixture_kl.BLOCK = full_block
    with pytest.raises(ValueError, match="part must be one of"):
        kl_to_mixture_bound(loc, scale, mix_loc, mix_scale, part="mean")
    with pytest.raises(ValueError, match="expected loc/scale"):
        kl_to_mixture_bound(loc, scale, mix_loc[:, :2], mix_scale[:, :2])


def test_training_gaussian_is_the_moment_matched_best_gaussian_prior():
    g = torch.Generator().manual_seed(0)
    ref = Posterior(torch.randn(6, 3, generator=g), 0.3 + torch.rand(6, 3, generator=g), None, None)
    prior = VJE.gaussian_prior(ref)
    # Its mean and covariance are the aggregate posterior's (Monte Carlo, 400k draws).
    draws = VJE(VJEConfig(width=4, image_size=8, hidden=8)).aggregate_prior(ref).sample((400_000,)).double()
    torch.testing.assert_close(prior.mean, draws.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(prior.covariance_matrix, torch.cov(draws.T), atol=0.02, rtol=0)
    # It maximizes the references' average ELBO among Gaussian priors: any change raises Σ_k KL(q_k ‖ p).
    refs = dist.MultivariateNormal(ref.loc.double(), scale_tril=torch.diag_embed(ref.scale.double()))

    def mean_kl(p):
        return torch.distributions.kl_divergence(refs, p).mean()

    cov = prior.covariance_matrix
    for other in (dist.MultivariateNormal(prior.mean + 0.1, cov), dist.MultivariateNormal(prior.mean, 1.1 * cov),
                  dist.MultivariateNormal(prior.mean, 0.9 * cov), dist.MultivariateNormal(prior.mean, torch.diag(cov.diagonal()))):
        assert mean_kl(other) > mean_kl(prior)


def test_kl_to_the_training_gaussian_known_answer():
    g = torch.Generator().manual_seed(1)
    method = VJE(VJEConfig(width=4, image_size=8, hidden=8)).eval()
    method.embed = lambda rows: rows  # score embeddings directly
    reference, rows = torch.rand(20, method.dim, generator=g), torch.rand(3, method.dim, generator=g)
    prior, post = method.gaussian_prior(method.posterior(reference)), method.posterior(rows)
    mean, cov = prior.mean, prior.covariance_matrix
    inverse, var = torch.linalg.inv(cov), post.scale.double().pow(2)
    diff = post.loc.double() - mean
    by_hand = 0.5 * ((inverse.diagonal() * var).sum(-1) + torch.einsum("ni,ij,nj->n", diff, inverse, diff)
                     - method.dim + torch.logdet(cov) - var.log().sum(-1))
    torch.testing.assert_close(method.training_kl_gaussian(reference, rows), by_hand.float(), rtol=1e-4, atol=1e-3)
