"""Mask collator invariants."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_jepa.data.masks import MaskCollator


def check_invariants(collator: MaskCollator, batch: int):
    masks = collator(batch)
    d = collator.n_features
    b, m_ctx = masks.context.shape
    _, k, m_trg = masks.target.shape
    assert b == batch and k == collator.n_targets
    assert collator.context_range[0] <= m_ctx <= collator.context_range[1]
    assert 1 <= m_trg <= collator.target_range[1] and m_ctx + m_trg <= d
    assert masks.context.min() >= 0 and masks.target.max() < d
    ctx = masks.context_mask(d)
    trg = masks.target_mask(d)
    assert (ctx.sum(1) == m_ctx).all(), "context indices repeat within a row"
    assert (trg.sum(2) == m_trg).all(), "target indices repeat within a mask"
    assert not (ctx.unsqueeze(1) & trg).any(), "context and target overlap"
    return masks


def test_shapes_disjointness_and_sizes():
    collator = MaskCollator(32, (0.15, 0.5), (0.15, 0.8), n_targets=4, seed=0)
    for _ in range(50):
        check_invariants(collator, 64)


def test_every_feature_can_be_context_and_target():
    """No feature is excluded (T-JEPA's original indexing never used the last feature)."""
    collator = MaskCollator(10, (0.1, 0.3), (0.1, 0.6), n_targets=4, seed=1)
    seen_ctx, seen_trg = torch.zeros(10, dtype=torch.bool), torch.zeros(10, dtype=torch.bool)
    counts = torch.zeros(10)
    for _ in range(200):
        masks = collator(32)
        seen_ctx |= masks.context_mask(10).any(0)
        seen_trg |= masks.target_mask(10).any(0).any(0)
        counts += masks.context_mask(10).sum(0)
    assert seen_ctx.all() and seen_trg.all()
    freq = counts / counts.sum()
    assert (freq - 0.1).abs().max() < 0.02, "context features are not drawn uniformly"


def test_sizes_are_clipped_when_ratio_ranges_overlap():
    # The paper's EL setting: up to 60 % context and 90 % target.
    collator = MaskCollator(8, (0.15, 0.6), (0.15, 0.9), n_targets=4, seed=2)
    for _ in range(100):
        check_invariants(collator, 16)


def test_seeded_and_resumable():
    a, b = MaskCollator(20, seed=5), MaskCollator(20, seed=5)
    for _ in range(3):
        ma, mb = a(8), b(8)
        assert torch.equal(ma.context, mb.context) and torch.equal(ma.target, mb.target)
    state = a.state_dict()
    first = a(8)
    c = MaskCollator(20, seed=99)
    c.load_state_dict(state)
    again = c(8)
    assert torch.equal(first.context, again.context) and torch.equal(first.target, again.target)
    assert not torch.equal(MaskCollator(20, seed=6)(8).context, MaskCollator(20, seed=5)(8).context)


@pytest.mark.parametrize("kwargs", [{"n_features": 1}, {"n_features": 5, "context_ratio": (0.6, 0.2)}, {"n_features": 5, "n_targets": 0}])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        MaskCollator(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(2, 60),
    batch=st.integers(1, 20),
    k=st.integers(1, 5),
    ctx=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted),
    trg=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted),
    seed=st.integers(0, 2**31 - 1),
)
def test_invariants_hold_for_random_shapes(d, batch, k, ctx, trg, seed):
    check_invariants(MaskCollator(d, tuple(ctx), tuple(trg), n_targets=k, seed=seed), batch)
