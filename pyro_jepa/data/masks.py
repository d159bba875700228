"""Context/target feature masks for tabular JEPAs (Var-JEPA App. A.2, T-JEPA's MaskCollator)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Masks:
    """Feature indices of one batch.

    Attributes:
        context: ``(B, M_ctx)`` indices of the context features of each row.
        target: ``(B, K, M_trg)`` indices of the K target masks of each row; each target mask is
            disjoint from the row's context (target masks may overlap each other).
    """

    context: torch.Tensor
    target: torch.Tensor

    def context_mask(self, n_features: int) -> torch.Tensor:
        """Boolean ``(B, D)``: True at context features."""
        out = torch.zeros(self.context.shape[0], n_features, dtype=torch.bool, device=self.context.device)
        return out.scatter(1, self.context, True)

    def target_mask(self, n_features: int) -> torch.Tensor:
        """Boolean ``(B, K, D)``: True at the features of target mask k."""
        b, k, _ = self.target.shape
        out = torch.zeros(b, k, n_features, dtype=torch.bool, device=self.target.device)
        return out.scatter(2, self.target, True)


class MaskCollator:
    """Draws one context mask and K target masks per row, vectorized over the batch.

    Per batch, the context size ``M_ctx`` and target size ``M_trg`` are drawn uniformly from
    ``[floor(D * ratio_min), floor(D * ratio_max)]`` (at least 1). When ``M_ctx + M_trg > D``
    (possible when the ratio ranges sum above 1, e.g. the paper's EL setting), ``M_trg`` is
    clipped to ``D - M_ctx``, so context and targets never overlap. Per row, features are drawn
    uniformly without replacement. All randomness comes from a private generator seeded by
    ``seed``, so the masks of a run are reproducible and resumable (`state_dict`).
    """

    def __init__(
        self,
        n_features: int,
        context_ratio: tuple[float, float] = (0.15, 0.5),
        target_ratio: tuple[float, float] = (0.15, 0.8),
        n_targets: int = 4,
        seed: int = 0,
    ) -> None:
        if n_features < 2:
            raise ValueError(f"masking needs at least 2 features, got {n_features}")
        for name, (lo, hi) in {"context_ratio": context_ratio, "target_ratio": target_ratio}.items():
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        if n_targets < 1:
            raise ValueError(f"n_targets must be >= 1, got {n_targets}")
        self.n_features = n_features
        self.n_targets = n_targets
        self.context_range = self._size_range(context_ratio, n_features - 1)
        self.target_range = self._size_range(target_ratio, n_features - 1)
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def _size_range(ratio: tuple[float, float], upper: int) -> tuple[int, int]:
        lo = min(max(int(ratio[0] * (upper + 1)), 1), upper)
        hi = min(max(int(ratio[1] * (upper + 1)), lo), upper)
        return lo, hi

    def _randint(self, low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=self.generator))

    def __call__(self, batch_size: int, device: torch.device | str = "cpu") -> Masks:
        """Masks for a batch of ``batch_size`` rows."""
        d = self.n_features
        n_ctx = self._randint(*self.context_range)
        n_trg = min(self._randint(*self.target_range), d - n_ctx)
        # A random permutation per row: argsort of iid uniforms, all rows at once.
        perm = torch.rand(batch_size, d, generator=self.generator).argsort(dim=1)
        context, rest = perm[:, :n_ctx], perm[:, n_ctx:]
        pick = torch.rand(batch_size, self.n_targets, d - n_ctx, generator=self.generator).argsort(dim=2)
        target = torch.gather(rest.unsqueeze(1).expand(-1, self.n_targets, -1), 2, pick[:, :, :n_trg])
        return Masks(context.sort(dim=1).values.to(device), target.sort(dim=2).values.to(device))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
