"""What the training engine needs from a self-supervised method."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

import torch
from torch import nn


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor (e.g. this step's masks) to ``device`` without stalling the host.

    A plain ``.to("cuda")`` from pageable memory waits for the copy; through pinned memory it is
    queued like any other kernel.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class SSLMethod(nn.Module):
    """A self-supervised method the engine (`pyro_jepa.train.fit`) can train and evaluate.

    The engine knows nothing else about a method; this is the whole protocol:

    * ``name`` (display name) and ``config`` (a hyperparameter dataclass; `settings` records it);
    * `loss(rows, step)` (differentiable) and `diagnostics(rows, step)` (held-out terms, incl. ``loss``);
    * `embed(rows)` (representations, for probe-based selection and downstream use);
    * optional: `uncertainty`, per-row `scores` (``score_names``, ``default_score``, `embed_with_scores`), `selectable_from`, `loss_weights` (logged, and named when a weighted term overflows),
      `on_step_end` (e.g. EMA updates), `reseed` (per-rank generators under DDP), `set_reference`
      (training rows a score compares new rows with).

    Randomness must come from torch's RNG or generators the method checkpoints through
    ``get_extra_state`` so that `--resume` reproduces an uninterrupted run. A Var-JEPA variant
    subclasses `pyro_jepa.models.VarJEPA`, which implements all of this from its Pyro program.
    """

    name: str = "method"
    config: object = None  # the method's hyperparameters (a dataclass), recorded in every checkpoint

    def settings(self) -> dict:
        """The hyperparameters a checkpoint must match to be resumed (the config dataclass as a dict)."""
        return asdict(self.config) if is_dataclass(self.config) else {}

    def loss_weights(self, step: int) -> dict[str, float]:
        """The weight of each loss term at optimizer step ``step`` (e.g. an ELBO's α with KL warm-up);
        logged per epoch and used to name the weighted term that overflowed. Empty by default."""
        return {}

    def selectable_from(self) -> int:
        """The first optimizer step whose epoch may be selected as the best (e.g. the end of a KL
        warm-up, before which neither the loss nor the uncertainty is comparable). 0 by default."""
        return 0

    def loss(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """Differentiable training objective of one batch of packed rows at optimizer step ``step``."""
        raise NotImplementedError

    def forward(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """`loss`, as ``forward`` so `DistributedDataParallel` can wrap the method and average gradients."""
        return self.loss(rows, step)

    def set_reference(self, rows: torch.Tensor, held_out: torch.Tensor | None = None) -> None:
        """Keep what a score needs from the training ``rows`` and fit what it needs from ``held_out``
        (validation) rows. The engine calls it before training without ``held_out``, so every checkpoint
        holds the rows, and with them once the best weights are back. Nothing by default."""

    def reseed(self, seed: int) -> None:
        """Re-seed the method's private generators (e.g. masks); the engine gives each DDP rank its own."""

    @torch.no_grad()
    def diagnostics(self, rows: torch.Tensor, step: int) -> dict[str, float]:
        """Loss terms on held-out rows (no gradient), e.g. the five ELBO terms; must include ``loss``."""
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step (EMA updates live here)."""

    @torch.no_grad()
    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """Representations ``(N, D, d)`` of rows for downstream models."""
        raise NotImplementedError

    @torch.no_grad()
    def uncertainty(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Posterior standard deviations ``(N, D, d)`` of the representation, if the method has any."""
        return None

    # Names of the per-row uncertainty scores `scores` computes (see `pyro_jepa.models.scores`).
    score_names: tuple[str, ...] = ()

    @property
    def default_score(self) -> str | None:
        """The score used when none is named (selective prediction, filtered checkpoint selection)."""
        return None

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, names=None, n_masks: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
        """Per-row uncertainty scores ``{name: (N,)}`` (higher = less sure); all of ``score_names`` for None.

        Mask-averaged scores use ``n_masks`` mask draws seeded by ``seed``."""
        if names:
            raise ValueError(f"{self.name} has no uncertainty scores, asked for {names}")
        return {}

    @torch.no_grad()
    def embed_with_scores(self, rows: torch.Tensor, names=None, **options) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`embed` and `scores` (``options``: its ``n_masks``, ``seed``) of the same rows; a method whose
        two share a forward pass overrides it."""
        return self.embed(rows), self.scores(rows, names, **options)
