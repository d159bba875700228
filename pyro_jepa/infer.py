"""ELBO estimators the training engine uses: Pyro's, without host synchronisation.

Pyro's `Trace_ELBO` calls ``.item()`` on every site's log-density and checks the loss for NaN,
about ten device-to-host syncs per step that stall a GPU. For a guide whose latents are all
reparameterized, the differentiable loss equals the surrogate loss, which these estimators return
directly: the same value and the same gradients (pinned to Pyro's estimators by
``tests/test_infer.py``). They read Pyro's traces through ``_get_traces`` and ``score_parts``,
which are private, so ``pyproject.toml`` bounds ``pyro-ppl`` to the versions tested.
With Pyro's validation on (the tests) they defer to Pyro's own estimators.
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.util import is_validation_enabled


class SyncFreeTrace_ELBO(pyro.infer.Trace_ELBO):
    """`Trace_ELBO` without host syncs, for guides whose latents are all reparameterized."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        if is_validation_enabled():
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._particle_loss(model_trace, guide_trace) / self.num_particles
        return loss

    def _particle_loss(self, model_trace, guide_trace) -> torch.Tensor:
        elbo = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                parts = site["score_parts"]
                if not is_identically_zero(parts.score_function):
                    raise NotImplementedError(f"{type(self).__name__} needs reparameterized guide sites; {site['name']!r} is not")
                elbo = elbo - parts.entropy_term.sum()
        return -elbo


class SyncFreeTraceMeanField_ELBO(SyncFreeTrace_ELBO, pyro.infer.TraceMeanField_ELBO):
    """`TraceMeanField_ELBO` (analytic KLs where registered) without host syncs; see `SyncFreeTrace_ELBO`."""

    def _particle_loss(self, model_trace, guide_trace) -> torch.Tensor:
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:
                elbo = elbo + site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
                continue
            elbo = elbo - scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"]).sum()
        return -elbo


ESTIMATORS = {"trace": SyncFreeTrace_ELBO, "meanfield": SyncFreeTraceMeanField_ELBO}


def make_elbo(name: str, max_plate_nesting: int = 1) -> pyro.infer.ELBO:
    """The sync-free estimator called ``name``: "trace" (Monte Carlo KLs) or "meanfield" (analytic KLs)."""
    if name not in ESTIMATORS:
        raise ValueError(f"elbo must be one of {sorted(ESTIMATORS)}, got {name!r}")
    return ESTIMATORS[name](max_plate_nesting=max_plate_nesting)
