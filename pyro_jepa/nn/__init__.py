"""Plain torch building blocks (no Pyro): tokenizer, transformer stacks, pooling, Gaussian heads.

Every Pyro program in `pyro_jepa.models` is assembled from these; a user writing a new variant
reuses them as ordinary `nn.Module`s.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.tabular import TabularSchema, split_packed


def mlp(sizes: list[int], dropout: float = 0.0, norm: bool = True) -> nn.Sequential:
    """Linear -> (LayerNorm) -> GELU -> Dropout blocks, with a plain Linear as the last layer."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(n_out) if norm else nn.Identity(), nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def transformer(dim: int, depth: int, heads: int, ff: int, dropout: float) -> nn.TransformerEncoder:
    """A pre-norm transformer encoder over ``(batch, tokens, dim)``."""
    layer = nn.TransformerEncoderLayer(
        dim, heads, ff, dropout, activation="gelu", batch_first=True, norm_first=True
    )
    # Nested tensors only help with padding masks, which we never use; they also warn with norm_first.
    return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)


class GaussianHead(nn.Module):
    """Linear map to the mean and log-variance of a diagonal Gaussian.

    The log-variance is clamped to [-12, 8] so exp() can neither underflow to a zero scale nor
    overflow in early, unstable steps. Outputs are float32 even under bf16 autocast, so every
    distribution built from them computes its log-density and KL in float32.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.loc = nn.Linear(dim_in, dim_out)
        self.logvar = nn.Linear(dim_in, dim_out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loc, scale)``."""
        return self.loc(h).float(), torch.exp(0.5 * self.logvar(h).float().clamp(-12.0, 8.0))


class FeatureTokenizer(nn.Module):
    """One ``dim``-vector per feature of a packed row (Var-JEPA Eq. 27).

    Numerical feature j: ``x_j * W_num + b_j + e_num + e_pos[j]`` with a shared ``W_num``.
    Categorical feature j: ``Embed_j[code] + e_cat + e_pos[j]`` (one table per feature, stored as
    one embedding with offsets so the lookup is a single gather).
    """

    def __init__(self, schema: TabularSchema, dim: int) -> None:
        super().__init__()
        self.n_numerical = schema.n_numerical
        self.num_weight = nn.Parameter(torch.randn(dim) * 0.02)
        self.num_bias = nn.Parameter(torch.zeros(schema.n_numerical, dim))
        self.type_embedding = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(schema.n_features, dim) * 0.02)
        cards = torch.tensor(schema.cardinalities, dtype=torch.long)
        self.register_buffer("cat_offsets", torch.cumsum(cards, 0) - cards, persistent=False)
        self.cat_embedding = nn.Embedding(max(int(cards.sum()), 1), dim)
        nn.init.normal_(self.cat_embedding.weight, std=0.02)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows (..., D)`` packed -> tokens ``(..., D, dim)``."""
        x_num, x_cat = split_packed(rows, self.n_numerical)
        num = x_num.unsqueeze(-1) * self.num_weight + self.num_bias + self.type_embedding[0]
        cat = self.cat_embedding(x_cat + self.cat_offsets) + self.type_embedding[1]
        return torch.cat([num, cat], dim=-2) + self.position


class AttentionPooling(nn.Module):
    """Order-invariant pooling of a variable number of tokens into ``n_queries`` tokens."""

    def __init__(self, dim: int, n_queries: int, heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (B, M, dim)`` -> ``(B, n_queries, dim)``."""
        queries = self.queries.expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attention(queries, tokens, tokens, need_weights=False)
        return self.norm(pooled + queries)


class TabularDecoder(nn.Module):
    """Per-feature linear heads: a mean for each numerical feature, logits for each categorical one.

    Heads are stored as stacked weights so all features decode in one einsum. Categorical
    logits are padded to the largest cardinality; padded classes get a very negative logit.

    With ``row_scale=True`` every numerical feature also gets a linear head for its standard
    deviation, so the scale varies per row and feature (a heteroscedastic decoder; `scale`):
    ``sigma = MIN_SCALE + softplus(w_j . h_j + b_j)``, initialised at ``sigma = 1``. The floor keeps
    log-densities finite; softplus keeps a gradient everywhere (a clamp would not).
    """

    MIN_SCALE = 1e-3

    def __init__(self, schema: TabularSchema, dim: int, row_scale: bool = False) -> None:
        super().__init__()
        self.n_numerical = schema.n_numerical
        n_cat, c_max = schema.n_categorical, max(schema.cardinalities, default=1)
        self.num_weight = nn.Parameter(torch.randn(schema.n_numerical, dim) / dim**0.5)
        self.num_bias = nn.Parameter(torch.zeros(schema.n_numerical))
        self.cat_weight = nn.Parameter(torch.randn(n_cat, dim, c_max) / dim**0.5)
        self.cat_bias = nn.Parameter(torch.zeros(n_cat, c_max))
        valid = torch.arange(c_max) < torch.tensor(schema.cardinalities, dtype=torch.long).reshape(-1, 1)
        self.register_buffer("cat_valid", valid.reshape(n_cat, c_max), persistent=False)
        self.row_scale = row_scale
        if row_scale:
            self.scale_weight = nn.Parameter(torch.zeros(schema.n_numerical, dim))
            # softplus^-1(1 - MIN_SCALE): sigma starts at 1, like a global log-sigma of 0.
            start = torch.log(torch.expm1(torch.tensor(1.0 - self.MIN_SCALE)))
            self.scale_bias = nn.Parameter(torch.full((schema.n_numerical,), float(start)))

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents (..., D, dim)`` -> numerical means ``(..., D_num)``, logits ``(..., D_cat, C_max)``."""
        h_num, h_cat = latents[..., : self.n_numerical, :], latents[..., self.n_numerical :, :]
        loc = torch.einsum("...jd,jd->...j", h_num, self.num_weight) + self.num_bias
        logits = torch.einsum("...jd,jdc->...jc", h_cat, self.cat_weight) + self.cat_bias
        # float32 so likelihoods are computed in full precision under bf16 autocast.
        return loc.float(), logits.float().masked_fill(~self.cat_valid, -1e4)

    def scale(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-row standard deviations ``(..., D_num)`` of the numerical features (``row_scale`` only)."""
        if not self.row_scale:
            raise RuntimeError("this decoder has one global scale; build it with row_scale=True for per-row scales")
        raw = torch.einsum("...jd,jd->...j", latents[..., : self.n_numerical, :], self.scale_weight) + self.scale_bias
        return self.MIN_SCALE + nn.functional.softplus(raw.float())


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick tokens along the feature axis: ``tokens (B, D, d)``, ``index (B, ..., M)`` -> ``(B, ..., M, d)``."""
    batch, dim = tokens.shape[0], tokens.shape[-1]
    flat = index.reshape(batch, -1)
    picked = torch.gather(tokens, 1, flat.unsqueeze(-1).expand(-1, -1, dim))
    return picked.reshape(*index.shape, dim)


def scatter_tokens(tokens: torch.Tensor, index: torch.Tensor, n_features: int) -> torch.Tensor:
    """Inverse of `gather_tokens` for ``index (B, M)``: place ``(B, M, d)`` into zeros ``(B, D, d)``."""
    out = tokens.new_zeros(tokens.shape[0], n_features, tokens.shape[-1])
    return out.scatter(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), tokens)
