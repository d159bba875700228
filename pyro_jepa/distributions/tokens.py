"""A diagonal Normal over a row's token latents whose density counts only the target tokens."""

from __future__ import annotations

import torch
from pyro.distributions import Normal, TorchDistribution
from torch.distributions import constraints
from torch.distributions.kl import kl_divergence, register_kl


class TargetTokenNormal(TorchDistribution):
    """``Normal(loc, scale)`` over token latents ``(K, T, d)`` per row whose log-density sums over the
    target tokens ``target (B, K, M)`` only: the value of ``Normal(...).mask(target_mask).to_event(3)``
    (`log_prob` and the KL between two of them equal it bit for bit), evaluated at the K·M target
    tokens instead of all K·T, so a training step does less elementwise work and saves less for
    backward.

    ``loc``/``scale``: either every token's parameters ``(B, K, T, d)`` (expanded views are fine; a
    sample draws every token, as the target posterior must), or, with ``at_targets=True``, the target
    tokens' only ``(B, K, M, d)`` (the conditional prior); sampling then draws the other tokens from
    N(0, 1), where their density is not counted. Each row of ``target`` must hold distinct tokens.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True

    def __init__(
        self, loc: torch.Tensor, scale: torch.Tensor, target: torch.Tensor, n_tokens: int, at_targets: bool = False, validate_args=None
    ) -> None:
        if loc.dim() != 4 or loc.shape != scale.shape or target.dim() != 3 or loc.shape[:2] != target.shape[:2]:
            raise ValueError(f"expected loc and scale (B, K, T or M, d) and target (B, K, M); got {tuple(loc.shape)}, "
                             f"{tuple(scale.shape)}, {tuple(target.shape)}")
        width = target.shape[2] if at_targets else n_tokens
        if loc.shape[2] != width:
            raise ValueError(f"loc has {loc.shape[2]} tokens; expected {width} ({'the targets' if at_targets else 'n_tokens'})")
        self.loc, self.scale, self.target, self.n_tokens, self.at_targets = loc, scale, target, n_tokens, at_targets
        b, k, _, d = loc.shape
        super().__init__(torch.Size([b]), torch.Size([k, n_tokens, d]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> TargetTokenNormal:
        """The same distribution over a batch of ``batch_shape`` rows (rows can only be broadcast from 1)."""
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        if len(batch_shape) != 1:
            raise NotImplementedError(f"TargetTokenNormal has one batch dimension (rows), cannot expand to {tuple(batch_shape)}")
        n = batch_shape[0]
        return type(self)(self.loc.expand(n, *self.loc.shape[1:]), self.scale.expand(n, *self.scale.shape[1:]),
                          self.target.expand(n, *self.target.shape[1:]), self.n_tokens, self.at_targets, self._validate_args)

    def _index(self, shape: torch.Size) -> torch.Tensor:
        """The target index broadcast to ``(..., B, K, M, d)`` for `torch.gather` along the tokens."""
        m, d = self.target.shape[-1], self.event_shape[-1]
        return self.target.unsqueeze(-1).expand(*shape[:-2], m, d)

    def at_target_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale ``(B, K, M, d)`` at the target tokens."""
        if self.at_targets:
            return self.loc, self.scale
        index = self._index(self.loc.shape)
        return torch.gather(self.loc, 2, index), torch.gather(self.scale, 2, index)

    def _full(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.at_targets:
            return self.loc, self.scale
        b, k, _, d = self.loc.shape
        index = self._index(self.loc.shape)
        loc = self.loc.new_zeros(b, k, self.n_tokens, d).scatter(2, index, self.loc)
        return loc, self.scale.new_ones(b, k, self.n_tokens, d).scatter(2, index, self.scale)

    @property
    def mean(self) -> torch.Tensor:
        return self._full()[0]

    @property
    def variance(self) -> torch.Tensor:
        return self._full()[1] ** 2

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return Normal(*self._full()).rsample(sample_shape)

    def _sum_over_tokens(self, at_targets: torch.Tensor) -> torch.Tensor:
        """Per-token values at the targets, put back in place among zeros and summed like ``.to_event(3)``
        sums the masked full tensor (the same layout, so the same float sum)."""
        full = at_targets.new_zeros(at_targets.shape[:-2] + self.event_shape[-2:])
        full = full.scatter(-2, self._index(at_targets.shape), at_targets)
        return full.reshape(full.shape[:-3] + (-1,)).sum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        loc, scale = self.at_target_tokens()
        shape = torch.broadcast_shapes(value.shape[:-3], self.batch_shape) + (self.target.shape[1], self.target.shape[2], value.shape[-1])
        return self._sum_over_tokens(Normal(loc, scale).log_prob(torch.gather(value, -2, self._index(shape))))


@register_kl(TargetTokenNormal, TargetTokenNormal)
def _kl_target_token_normals(p: TargetTokenNormal, q: TargetTokenNormal) -> torch.Tensor:
    if p.target is not q.target and not torch.equal(p.target, q.target):
        raise ValueError("KL between TargetTokenNormals needs the same target tokens")
    return p._sum_over_tokens(kl_divergence(Normal(*p.at_target_tokens()), Normal(*q.at_target_tokens())))
