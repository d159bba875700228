"""MixedTabular: shapes, known answers, masking, support."""

import math

import pytest
import torch

from pyro_jepa.distributions import MixedTabular


def make(batch=(3,), mask=None):
    loc = torch.tensor([0.0, 1.0]).expand(*batch, 2)
    logits = torch.log(torch.tensor([[0.2, 0.8, 1e-12], [0.5, 0.25, 0.25]])).expand(*batch, 2, 3)
    return MixedTabular(loc, torch.tensor(2.0), logits, torch.tensor([2, 3]), feature_mask=mask, validate_args=True)


def test_shapes():
    d = make((4, 3))
    assert d.batch_shape == (4, 3) and d.event_shape == (4,)
    value = d.sample()
    assert value.shape == (4, 3, 4)
    assert d.log_prob(value).shape == (4, 3)
    assert d.sample((5,)).shape == (5, 4, 3, 4)
    assert d.expand((2, 4, 3)).batch_shape == (2, 4, 3)
    assert d.to_event(1).log_prob(value).shape == (4,)


def test_known_answer():
    d = make()
    value = torch.tensor([[0.5, 3.0, 1.0, 2.0]] * 3)
    normal = lambda x, mu: -0.5 * ((x - mu) / 2.0) ** 2 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    expected = normal(0.5, 0.0) + normal(3.0, 1.0) + math.log(0.8) + math.log(0.25)
    torch.testing.assert_close(d.log_prob(value), torch.full((3,), expected))


def test_feature_mask_drops_features():
    mask = torch.tensor([True, False, False, True])
    value = torch.tensor([[0.5, 3.0, 1.0, 2.0]] * 3)
    full = make().feature_log_prob(value)
    torch.testing.assert_close(make(mask=mask).log_prob(value), full[:, 0] + full[:, 3])


def test_support_rejects_bad_codes_and_non_finite_values():
    d = make()
    for bad in ([0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.5, 0.0], [float("nan"), 0.0, 0.0, 0.0]):
        with pytest.raises(ValueError):
            d.log_prob(torch.tensor([bad] * 3))


def test_samples_follow_the_parameters():
    torch.manual_seed(0)
    d = make((1,))
    s = d.sample((20000,))[:, 0]
    assert s[:, 1].mean().item() == pytest.approx(1.0, abs=0.05)
    assert s[:, 0].std().item() == pytest.approx(2.0, abs=0.05)
    assert (s[:, 2] == 1).float().mean().item() == pytest.approx(0.8, abs=0.02)
