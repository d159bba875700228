"""What the tabular JEPAs (Var-T-JEPA and the T-JEPA baseline) share: config, masking base, networks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.masks import MaskCollator
from ..data.tabular import TabularSchema
from ..nn import FeatureTokenizer, gather_tokens, token_names, token_of_feature, transformer
from .base import SSLMethod, to_device
from .scores import canonical_score_name
from .var_jepa import LossWeights

EVAL_MASK_SEED = 20_260_320  # fixed masks for validation terms and mask-averaged scores, so epochs are comparable
EVAL_CHUNK = 1024  # rows per forward pass on held-out data


@dataclass
class TabularJEPAConfig:
    """Hyperparameters of Var-T-JEPA and T-JEPA (Var-JEPA Table 7/8 names in brackets).

    Fields with a counterpart in both methods are shared, as in the paper's Table 8.
    Counts the paper leaves open (CLS tokens, pooled tokens, auxiliary-MLP depth, predictor
    depth, T-JEPA auxiliary tokens) have the defaults below.
    """

    dim: int = 64  # d = D_hid = d_z
    depth: int = 8  # L
    heads: int = 4  # H
    ff: int = 256  # ff
    dropout: float = 0.001  # drop
    n_cls: int = 1
    n_pool: int = 4  # L_pool
    aux_depth: int = 2
    pred_dim: int = 16  # Lp
    pred_depth: int = 4
    pred_heads: int = 4  # Hp
    pred_ff: int = 256  # ffp
    pred_dropout: float = 0.002  # dropp
    # Numerical features per token (consecutive columns share one, embedded like an image patch);
    # masks then hide whole groups. 1 = a token per feature, the paper's. For very wide tables:
    # attention cost grows with the square of the token count.
    group_size: int = 1
    context_ratio: tuple[float, float] = (0.15, 0.5)  # ctx, ctxM
    target_ratio: tuple[float, float] = (0.15, 0.8)  # trg, trgM
    n_targets: int = 4  # K
    # Var-T-JEPA only
    weights: LossWeights = field(default_factory=LossWeights)
    elbo: str = "trace"  # "trace" (Trace_ELBO) or "meanfield" (TraceMeanField_ELBO, analytic KLs)
    # Numerical decoders' std: "global" (one learned sigma per path, the paper's) or "row" (per row and
    # feature, predicted from the latent: a heteroscedastic decoder).
    decoder_scale: str = "global"
    uncertainty: str = "posterior-mean"  # the default per-row score, a name of pyro_jepa.models.scores.ROW_SCORES
    # T-JEPA only
    ema: tuple[float, float] = (0.996, 1.0)
    n_aux: int = 1

    def __post_init__(self) -> None:
        if self.elbo not in ("trace", "meanfield"):
            raise ValueError(f"elbo must be 'trace' or 'meanfield', got {self.elbo!r}")
        if not (isinstance(self.group_size, int) and self.group_size >= 1):
            raise ValueError(f"group_size must be a whole number >= 1, got {self.group_size!r}")
        if self.decoder_scale not in ("global", "row"):
            raise ValueError(f"decoder_scale must be 'global' or 'row', got {self.decoder_scale!r}")
        self.uncertainty = canonical_score_name(self.uncertainty)
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        self.context_ratio = tuple(self.context_ratio)
        self.target_ratio = tuple(self.target_ratio)
        self.ema = tuple(self.ema)

    def mask_collator(self, n_tokens: int, seed: int) -> MaskCollator:
        """The collator over ``n_tokens`` positions for this config's mask ratios and K, seeded."""
        return MaskCollator(n_tokens, self.context_ratio, self.target_ratio, self.n_targets, seed)


class MaskedTabular(SSLMethod):
    """Base of the tabular JEPAs: one context mask and K target masks per row (`pyro_jepa.data.masks`).

    Masks select among the row's ``n_tokens`` feature tokens: one per feature, or fewer with
    ``config.group_size > 1`` (`pyro_jepa.nn.token_of_feature` maps features to tokens).

    Owns the training masks (a private, checkpointed generator, re-seeded per DDP rank), the fixed
    evaluation masks that make validation epochs comparable, and mask-averaged per-row scores.
    A subclass calls `_setup_masks` in its constructor.
    """

    # Fields of the shared TabularJEPAConfig this method never reads while training; left out of
    # `settings`, so checkpoints resume (and experiments share them) regardless of their values.
    # The default score is read only by probe-filtered selection, which records it itself.
    unread_fields: tuple[str, ...] = ("uncertainty",)

    def settings(self) -> dict:
        settings = {k: v for k, v in super().settings().items() if k not in self.unread_fields}
        if settings["group_size"] == 1:  # checkpoints from before grouping existed resume
            del settings["group_size"]
        return settings

    def _setup_masks(self, schema: TabularSchema, config: TabularJEPAConfig, seed: int) -> None:
        self.schema, self.config = schema, config
        self.n_features = schema.n_features
        self.register_buffer("token_of_feature", token_of_feature(schema, config.group_size), persistent=False)
        self.n_tokens = int(self.token_of_feature.max()) + 1
        if self.n_tokens < 2:
            raise ValueError(
                f"group_size {config.group_size} puts all {schema.n_features} features into one token; masking "
                "needs at least 2 tokens (choose a smaller group_size)"
            )
        self.masks = config.mask_collator(self.n_tokens, seed)

    @property
    def token_names(self) -> tuple[str, ...]:
        """A name per token of the representation ``(N, n_tokens, dim)`` (the feature names without groups)."""
        return token_names(self.schema.numerical, self.schema.categorical, self.config.group_size)

    def feature_mask(self, token_mask: torch.Tensor) -> torch.Tensor:
        """A mask over tokens ``(..., T)`` as a mask over the features they hold, ``(..., D)``."""
        return token_mask if self.config.group_size == 1 else token_mask[..., self.token_of_feature]

    def training_masks(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh context ``(B, M_ctx)`` and target ``(B, K, M_trg)`` indices for a training batch, on its device."""
        masks = self.masks(rows.shape[0])
        return to_device(masks.context, rows.device), to_device(masks.target, rows.device)

    def eval_masked(self, rows: torch.Tensor, seed: int = EVAL_MASK_SEED) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(chunk, context, target)`` over held-out ``rows``, with masks drawn from a fixed seed."""
        collator = self.config.mask_collator(self.n_tokens, seed)
        for chunk in rows.split(EVAL_CHUNK):
            masks = collator(chunk.shape[0], chunk.device)
            yield chunk, masks.context, masks.target

    def mask_average(
        self, rows: torch.Tensor, score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        n_masks: int, seed: int = EVAL_MASK_SEED,
    ) -> torch.Tensor:
        """``score(rows, context, target) -> (B, ...)`` averaged over ``n_masks`` seeded mask draws, ``(N, ...)``."""
        collator = self.config.mask_collator(self.n_tokens, seed)
        averages = []
        for chunk in rows.split(EVAL_CHUNK):
            masks = [collator(chunk.shape[0], chunk.device) for _ in range(n_masks)]
            averages.append(sum(score(chunk, m.context, m.target) for m in masks) / n_masks)
        return torch.cat(averages)

    def reseed(self, seed: int) -> None:
        self.masks.generator.manual_seed(seed)

    def get_extra_state(self) -> dict:
        return {"masks": self.masks.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.masks.load_state_dict(state["masks"])


class TokenEncoder(nn.Module):
    """Feature tokenizer + learned CLS tokens (+ optional prefix tokens) + transformer.

    CLS tokens and prefix tokens are never masked: masking selects among the feature tokens
    only (this fixes T-JEPA's original off-by-one, where index 0 picked the REG token).
    """

    def __init__(self, schema: TabularSchema, config: TabularJEPAConfig) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(schema, config.dim, config.group_size)
        self.cls = nn.Parameter(torch.randn(config.n_cls, config.dim) * 0.02)
        self.transformer = transformer(config.dim, config.depth, config.heads, config.ff, config.dropout)

    def forward(self, rows: torch.Tensor, index: torch.Tensor | None = None, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``rows (B, D)``; with ``index (B, M)`` only those tokens. Returns ``(B, M or T, dim)``."""
        tokens = self.tokenizer(rows)
        if index is not None:
            tokens = gather_tokens(tokens, index)
        parts = [self.cls.expand(rows.shape[0], -1, -1)]
        if prefix is not None:
            parts.append(prefix)
        hidden = self.transformer(torch.cat([*parts, tokens], dim=1))
        return hidden[:, -tokens.shape[1] :]


class MaskedPredictor(nn.Module):
    """I-JEPA-style predictor: context tokens + learned mask tokens at the target positions.

    Runs the K target masks of every row as one batch of ``B*K`` sequences. An optional
    conditioning vector (Var-T-JEPA's z) is projected and added to every token; optional learned
    auxiliary tokens (the paper's deterministic stand-in for z in T-JEPA) are inserted.
    """

    def __init__(self, n_tokens: int, config: TabularJEPAConfig, conditioned: bool, n_aux: int = 0) -> None:
        super().__init__()
        p = config.pred_dim
        self.context_proj = nn.Linear(config.dim, p)
        self.condition_proj = nn.Linear(config.dim, p) if conditioned else None
        self.context_position = nn.Parameter(torch.randn(n_tokens, p) * 0.02)
        self.target_position = nn.Parameter(torch.randn(n_tokens, p) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(p) * 0.02)
        self.aux_tokens = nn.Parameter(torch.randn(n_aux, p) * 0.02)
        self.transformer = transformer(p, config.pred_depth, config.pred_heads, config.pred_ff, config.pred_dropout)

    def forward(
        self,
        context: torch.Tensor,
        context_index: torch.Tensor,
        target_index: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``context (B, M_ctx, dim)``, indices ``(B, M_ctx)``, ``(B, K, M_trg)`` -> ``(B, K, M_trg, pred_dim)``."""
        b, k, m_trg = target_index.shape
        # F.embedding, not ``position[index]``: the backward of advanced indexing accumulates
        # repeated indices in a thread-dependent order on CPU, so runs would not be reproducible.
        ctx = self.context_proj(context) + F.embedding(context_index, self.context_position)
        trg = self.mask_token + F.embedding(target_index, self.target_position)
        if self.condition_proj is not None:
            cond = self.condition_proj(condition)
            ctx = ctx + cond[:, None]
            trg = trg + cond[:, None, None]
        ctx = ctx.unsqueeze(1).expand(-1, k, -1, -1)
        aux = self.aux_tokens.expand(b, k, -1, -1)
        seq = torch.cat([ctx, aux, trg], dim=2).flatten(0, 1)
        hidden = self.transformer(seq)[:, -m_trg:]
        return hidden.reshape(b, k, m_trg, -1)
