"""T-JEPA baseline (Thimonier et al., ICLR 2025; as re-run in Var-JEPA App. D.4), plain torch.

Deterministic context encoder, EMA target encoder (momentum rising linearly 0.996 -> 1.0 over
training), transformer predictor with mask tokens (plus the Var-JEPA paper's learned auxiliary
tokens), and the MSE between predicted and target representations at the target features.
The representation used downstream is the target encoder applied to the unmasked row.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.tabular import TabularSchema
from ..nn import gather_tokens
from .tabular import EVAL_CHUNK, EVAL_MASK_SEED, MaskedPredictor, MaskedTabular, TabularJEPAConfig, TokenEncoder
from .scores import check_score_names


class TJEPA(MaskedTabular):
    """T-JEPA with EMA target encoder (see the module docstring)."""

    name = "T-JEPA"
    unread_fields = ("weights", "elbo", "decoder_scale", "uncertainty")

    def __init__(self, schema: TabularSchema, config: TabularJEPAConfig, seed: int = 0) -> None:
        super().__init__()
        self._setup_masks(schema, config, seed)
        self.context_encoder = TokenEncoder(schema, config)
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        self.predictor = MaskedPredictor(self.n_tokens, config, conditioned=False, n_aux=config.n_aux)
        self.predictor_head = nn.Linear(config.pred_dim, config.dim)

    def _squared_errors(self, rows: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, K, M_trg, dim)`` squared errors of the predictions against the target encoder."""
        with torch.no_grad():
            goal = gather_tokens(self.target_encoder(rows), target)
        prediction = self.predictor_head(self.predictor(self.context_encoder(rows, index=context), context, target))
        return (prediction - goal) ** 2

    def _mse(self, rows: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._squared_errors(rows, context, target).mean()

    @torch.no_grad()
    def prediction_error(self, rows: torch.Tensor, n_masks: int = 8, seed: int = EVAL_MASK_SEED) -> torch.Tensor:
        """Per-row mean squared prediction error over ``n_masks`` seeded mask draws, ``(N,)``.

        T-JEPA has no posterior; how badly its predictor guesses a row's hidden features is the
        natural uncertainty score to compare Var-T-JEPA's latent uncertainty with.
        """
        def row_errors(chunk, context, target):
            return self._squared_errors(chunk, context, target).mean((1, 2, 3))

        return self.mask_average(rows, row_errors, n_masks, seed)

    def loss(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        return self._mse(rows, *self.training_masks(rows))

    @torch.no_grad()
    def diagnostics(self, rows: torch.Tensor, step: int) -> dict[str, float]:
        total = 0.0
        for chunk, context, target in self.eval_masked(rows):
            total += float(self._mse(chunk, context, target)) * chunk.shape[0] / rows.shape[0]
        return {"loss": total}

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        start, end = self.config.ema
        momentum = start + (end - start) * min(step / max(total_steps, 1), 1.0)
        for target, online in zip(self.target_encoder.parameters(), self.context_encoder.parameters()):
            target.lerp_(online, 1.0 - momentum)

    @torch.no_grad()
    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.target_encoder(chunk) for chunk in rows.split(EVAL_CHUNK)])

    score_names = ("prediction-error",)

    @property
    def default_score(self) -> str:
        return "prediction-error"

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, names=None, n_masks: int = 8, seed: int = EVAL_MASK_SEED) -> dict[str, torch.Tensor]:
        """``{"prediction-error": (N,)}``, see `prediction_error`."""
        check_score_names(names, self.score_names, self.name)
        return {"prediction-error": self.prediction_error(rows, n_masks, seed)}
