"""The mixed-type likelihood of a tabular row (Var-T-JEPA decoders, Eq. 49-51)."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all

from ..data.tabular import split_packed


class _MixedTabularSupport(constraints.Constraint):
    """Packed rows: any real numerical values, then integer codes in ``[0, cardinality)``."""

    event_dim = 1

    def __init__(self, n_numerical: int, cardinalities: torch.Tensor) -> None:
        self.n_numerical = n_numerical
        self.cardinalities = cardinalities
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        num, cat = value[..., : self.n_numerical], value[..., self.n_numerical :]
        ok_num = torch.isfinite(num).all(-1)
        card = self.cardinalities.to(value.device)
        ok_cat = ((cat == cat.round()) & (cat >= 0) & (cat < card)).all(-1)
        return ok_num & ok_cat


def mixed_tabular_support(n_numerical: int, cardinalities: torch.Tensor) -> constraints.Constraint:
    """The support of `MixedTabular` with these feature types."""
    return _MixedTabularSupport(n_numerical, cardinalities)


class MixedTabular(TorchDistribution):
    r"""Independent per-feature likelihood of a packed row (numerical features, then categorical codes).

    .. math::
        \log p(w) = \sum_{j \in \text{num}} m_j \log \mathcal N(w_j; \mu_j, \sigma^2)
                  + \sum_{j \in \text{cat}} m_j \log \mathrm{softmax}(\ell_j)_{w_j}

    Args:
        num_loc: means of the numerical features ``(..., D_num)``.
        num_scale: standard deviation, broadcastable to ``num_loc`` (a learned global scalar in
            Var-T-JEPA).
        cat_logits: logits ``(..., D_cat, C_max)``; classes beyond a feature's cardinality
            should carry a very negative logit.
        cardinalities: ``(D_cat,)`` number of codes per categorical feature (for the support).
        feature_mask: optional ``(..., D)`` weights (0/1 or bool); features with weight 0 do not
            enter the log-density. Unlike ``.mask()``, this masks inside the event.

    The event is one row: ``event_shape == (D,)``; ``log_prob`` returns ``batch_shape``.
    Sampling draws numerical values from the Normal and codes from the Categorical.
    """

    arg_constraints = {"num_loc": constraints.real, "num_scale": constraints.positive}

    def __init__(
        self,
        num_loc: torch.Tensor,
        num_scale: torch.Tensor | float,
        cat_logits: torch.Tensor,
        cardinalities: torch.Tensor,
        feature_mask: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        num_loc, num_scale = broadcast_all(num_loc, num_scale)
        batch_shape = torch.broadcast_shapes(num_loc.shape[:-1], cat_logits.shape[:-2])
        self.n_numerical = num_loc.shape[-1]
        n_features = self.n_numerical + cat_logits.shape[-2]
        self.num_loc = num_loc.expand(*batch_shape, self.n_numerical)
        self.num_scale = num_scale.expand(*batch_shape, self.n_numerical)
        self.cat_logits = cat_logits.expand(*batch_shape, *cat_logits.shape[-2:])
        self.cardinalities = torch.as_tensor(cardinalities, dtype=torch.long)
        if feature_mask is not None:
            feature_mask = feature_mask.to(num_loc.dtype).expand(*batch_shape, n_features)
        self.feature_mask = feature_mask
        super().__init__(batch_shape, torch.Size([n_features]), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return mixed_tabular_support(self.n_numerical, self.cardinalities)

    def feature_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Per-feature log-densities ``(..., D)`` before masking."""
        num, codes = split_packed(value, self.n_numerical)
        z = (num - self.num_loc) / self.num_scale
        lp_num = -0.5 * z**2 - torch.log(self.num_scale) - 0.5 * torch.log(torch.tensor(2 * torch.pi))
        logp_cat = torch.log_softmax(self.cat_logits, dim=-1)
        codes = codes.expand(*logp_cat.shape[:-1])
        lp_cat = torch.gather(logp_cat, -1, codes.unsqueeze(-1)).squeeze(-1)
        return torch.cat([lp_num, lp_cat], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        lp = self.feature_log_prob(value)
        if self.feature_mask is not None:
            lp = lp * self.feature_mask
        return lp.sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            num = torch.normal(self.num_loc.expand(*shape, -1), self.num_scale.expand(*shape, -1))
            cat = torch.distributions.Categorical(logits=self.cat_logits).sample(sample_shape)
            return torch.cat([num, cat.to(num.dtype)], dim=-1)

    def expand(self, batch_shape: torch.Size, _instance: MixedTabular | None = None) -> MixedTabular:
        batch_shape = torch.Size(batch_shape)
        mask = None
        if self.feature_mask is not None:
            mask = self.feature_mask.expand(*batch_shape, self.event_shape[0])
        return MixedTabular(
            self.num_loc.expand(*batch_shape, self.n_numerical),
            self.num_scale.expand(*batch_shape, self.n_numerical),
            self.cat_logits.expand(*batch_shape, *self.cat_logits.shape[-2:]),
            self.cardinalities,
            mask,
            validate_args=False,
        )
