"""TargetTokenNormal: the masked token Normal of Var-T-JEPA's s_y site, evaluated at the targets only."""

import math

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.kl import kl_divergence

from pyro_jepa.distributions import TargetTokenNormal

B, K, T, M, D = 3, 2, 7, 3, 5


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    target = torch.stack([torch.stack([torch.randperm(T, generator=g)[:M] for _ in range(K)]) for _ in range(B)])
    loc_w = torch.randn(B, 1, T, D, generator=g).requires_grad_()
    scale_w = (torch.rand(B, 1, T, D, generator=g) + 0.3).requires_grad_()
    loc_p = torch.randn(B, K, M, D, generator=g).requires_grad_()
    scale_p = (torch.rand(B, K, M, D, generator=g) + 0.3).requires_grad_()
    value = torch.randn(B, K, T, D, generator=g)
    return target, loc_w, scale_w, loc_p, scale_p, value


def masked_pair(target, loc_w, scale_w, loc_p, scale_p):
    """The distributions Var-T-JEPA used before: Normal over every token, masked to the targets."""
    mask = torch.zeros(B, K, T, dtype=torch.bool).scatter(2, target, True).unsqueeze(-1)
    index = target.unsqueeze(-1).expand(-1, -1, -1, D)
    full_loc = torch.zeros(B, K, T, D).scatter(2, index, loc_p)
    full_scale = torch.ones(B, K, T, D).scatter(2, index, scale_p)
    guide = dist.Normal(loc_w.expand(-1, K, -1, -1), scale_w.expand(-1, K, -1, -1)).mask(mask).to_event(3)
    return guide, dist.Normal(full_loc, full_scale).mask(mask).to_event(3)


def token_pair(target, loc_w, scale_w, loc_p, scale_p):
    guide = TargetTokenNormal(loc_w.expand(-1, K, -1, -1), scale_w.expand(-1, K, -1, -1), target, T)
    return guide, TargetTokenNormal(loc_p, scale_p, target, T, at_targets=True)


def gradients(value_of, params):
    """Gradients of the summed value for every parameter (zeros for parameters it does not use)."""
    grads = torch.autograd.grad(value_of().sum(), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def test_log_prob_kl_and_gradients_equal_the_masked_normal_bit_for_bit(case):
    target, *params, value = case
    for old, new in zip(masked_pair(target, *params), token_pair(target, *params)):
        assert new.batch_shape == old.batch_shape and new.event_shape == old.event_shape
        assert torch.equal(new.log_prob(value), old.log_prob(value))
        for a, b in zip(gradients(lambda: new.log_prob(value), params), gradients(lambda: old.log_prob(value), params)):
            assert torch.equal(a, b)
    (old_q, old_p), (new_q, new_p) = masked_pair(target, *params), token_pair(target, *params)
    assert torch.equal(kl_divergence(new_q, new_p), kl_divergence(old_q, old_p))
    new_grads = gradients(lambda: kl_divergence(*token_pair(target, *params)), params)
    for a, b in zip(new_grads, gradients(lambda: kl_divergence(*masked_pair(target, *params)), params)):
        assert torch.equal(a, b)


def test_only_target_tokens_count_and_the_density_is_the_normal_there(case):
    target, loc_w, scale_w, loc_p, scale_p, value = case
    prior = TargetTokenNormal(loc_p, scale_p, target, T, at_targets=True)
    outside = torch.ones(B, K, T, 1).scatter(2, target.unsqueeze(-1), 0.0)
    moved = value + 10.0 * outside
    assert torch.equal(prior.log_prob(moved), prior.log_prob(value))
    index = target.unsqueeze(-1).expand(-1, -1, -1, D)
    at = torch.gather(value, 2, index)
    by_hand = (-0.5 * ((at - loc_p) / scale_p) ** 2 - scale_p.log() - 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))
    torch.testing.assert_close(prior.log_prob(value), by_hand)
    # Leading sample dimensions broadcast like any distribution's.
    samples = torch.randn(4, B, K, T, D)
    assert prior.log_prob(samples).shape == (4, B)
    torch.testing.assert_close(prior.log_prob(samples)[2], prior.log_prob(samples[2]))


def test_samples_draw_every_token(case):
    target, loc_w, scale_w, loc_p, scale_p, _ = case
    guide = TargetTokenNormal(loc_w.expand(-1, K, -1, -1), scale_w.expand(-1, K, -1, -1), target, T)
    torch.manual_seed(1)
    draw = guide.rsample()
    torch.manual_seed(1)
    assert draw.shape == (B, K, T, D) and torch.equal(draw, dist.Normal(guide.loc, guide.scale).rsample())
    prior = TargetTokenNormal(loc_p, scale_p, target, T, at_targets=True)
    many = prior.sample((4000,))
    inside = torch.zeros(B, K, T, 1, dtype=torch.bool).scatter(2, target.unsqueeze(-1), True).expand(-1, -1, -1, D)
    torch.testing.assert_close(many.mean(0)[inside], prior.mean[inside], atol=0.1, rtol=0)
    torch.testing.assert_close(many.std(0)[~inside], torch.ones(int((~inside).sum())), atol=0.1, rtol=0)
    assert torch.equal(torch.gather(prior.stddev, 2, target.unsqueeze(-1).expand(-1, -1, -1, D)), scale_p)


def test_bad_shapes_and_mismatched_targets_are_refused(case):
    target, loc_w, scale_w, loc_p, scale_p, _ = case
    with pytest.raises(ValueError, match="expected loc and scale"):
        TargetTokenNormal(loc_p[0], scale_p[0], target, T, at_targets=True)
    with pytest.raises(ValueError, match="tokens"):
        TargetTokenNormal(loc_p, scale_p, target, T)
    other = (target + 1) % T
    q = TargetTokenNormal(loc_p, scale_p, target, T, at_targets=True)
    with pytest.raises(ValueError, match="same target tokens"):
        kl_divergence(q, TargetTokenNormal(loc_p, scale_p, other, T, at_targets=True))
    assert q.expand(torch.Size([B])) is q
    with pytest.raises(NotImplementedError, match="one batch dimension"):
        q.expand(torch.Size([2, B]))
