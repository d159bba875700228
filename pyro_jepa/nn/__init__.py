"""Plain torch building blocks (no Pyro): tokenizer, transformer stacks, pooling, Gaussian heads.

Every Pyro program in `pyro_jepa.models` is assembled from these; a user writing a new variant
reuses them as ordinary `nn.Module`s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def numerical_tokens(n_numerical: int, group_size: int) -> int:
    """How many tokens ``n_numerical`` numerical features take in groups of ``group_size``."""
    return math.ceil(n_numerical / group_size)


def token_of_feature(schema: TabularSchema, group_size: int = 1) -> torch.Tensor:
    """The token of each feature of a packed row, ``(D,)`` long.

    Numerical features share tokens in consecutive groups of ``group_size`` (the last group may be
    shorter); every categorical feature has a token of its own, after the numerical ones.
    """
    n_num = schema.n_numerical
    numerical = torch.arange(n_num) // group_size
    categorical = numerical_tokens(n_num, group_size) + torch.arange(schema.n_categorical)
    return torch.cat([numerical, categorical])


def token_names(numerical: Sequence[str], categorical: Sequence[str], group_size: int = 1) -> tuple[str, ...]:
    """A name per token of a schema with these feature names: the feature's name, or
    ``first..last`` for a group of numerical features (see `token_of_feature`)."""
    groups = [numerical[start : start + group_size] for start in range(0, len(numerical), group_size)]
    return tuple(g[0] if len(g) == 1 else f"{g[0]}..{g[-1]}" for g in groups) + tuple(categorical)


def _grouped(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(..., n)`` -> ``(..., ceil(n / group_size), group_size)``, zero-padded at the end."""
    pad = -values.shape[-1] % group_size
    return nn.functional.pad(values, (0, pad)).unflatten(-1, (-1, group_size))


class FeatureTokenizer(nn.Module):
    """One ``dim``-vector per token of a packed row (Var-JEPA Eq. 27).

    Numerical feature j: ``x_j * W_num + b_j + e_num + e_pos[j]`` with a shared ``W_num``.
    Categorical feature j: ``Embed_j[code] + e_cat + e_pos[j]`` (one table per feature, stored as
    one embedding with offsets so the lookup is a single gather).

    With ``group_size > 1``, numerical features share tokens in consecutive groups
    (`token_of_feature`), each embedded by a linear map of its group's values (a patch embedding):
    ``sum_{j in g} x_j * W_j + b_g + e_num + e_pos[g]``. A wide table then costs attention over
    ``D / group_size`` tokens instead of ``D``.
    """

    def __init__(self, schema: TabularSchema, dim: int, group_size: int = 1) -> None:
        super().__init__()
        self.n_numerical, self.group_size = schema.n_numerical, group_size
        n_num_tokens = numerical_tokens(schema.n_numerical, group_size)
        # One token per feature keeps the paper's shared W_num; a group needs a weight per feature,
        # since with a shared one the token would only see the sum of its values.
        shape = (dim,) if group_size == 1 else (n_num_tokens, group_size, dim)
        self.num_weight = nn.Parameter(torch.randn(shape) * 0.02)
        self.num_bias = nn.Parameter(torch.zeros(n_num_tokens, dim))
        self.type_embedding = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(n_num_tokens + schema.n_categorical, dim) * 0.02)
        cards = torch.tensor(schema.cardinalities, dtype=torch.long)
        self.register_buffer("cat_offsets", torch.cumsum(cards, 0) - cards, persistent=False)
        self.cat_embedding = nn.Embedding(max(int(cards.sum()), 1), dim)
        nn.init.normal_(self.cat_embedding.weight, std=0.02)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows (..., D)`` packed -> tokens ``(..., T, dim)`` (``T = D`` without groups)."""
        x_num, x_cat = split_packed(rows, self.n_numerical)
        if self.group_size == 1:
            num = x_num.unsqueeze(-1) * self.num_weight
        else:
            num = torch.einsum("...tg,tgd->...td", _grouped(x_num, self.group_size), self.num_weight)
        num = num + self.num_bias + self.type_embedding[0]
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

    With ``group_size > 1`` the latents are per token (`FeatureTokenizer`): every numerical
    feature's head reads its group's token, and categorical heads read the tokens after them.
    """

    MIN_SCALE = 1e-3

    def __init__(self, schema: TabularSchema, dim: int, row_scale: bool = False, group_size: int = 1) -> None:
        super().__init__()
        self.n_numerical, self.group_size = schema.n_numerical, group_size
        self.n_num_tokens = numerical_tokens(schema.n_numerical, group_size)
        n_cat, c_max = schema.n_categorical, max(schema.cardinalities, default=1)
        # One row per numerical feature, padded to whole groups (the padding rows decode nothing).
        n_heads = self.n_num_tokens * group_size
        self.num_weight = nn.Parameter(torch.randn(n_heads, dim) / dim**0.5)
        self.num_bias = nn.Parameter(torch.zeros(schema.n_numerical))
        self.cat_weight = nn.Parameter(torch.randn(n_cat, dim, c_max) / dim**0.5)
        self.cat_bias = nn.Parameter(torch.zeros(n_cat, c_max))
        valid = torch.arange(c_max) < torch.tensor(schema.cardinalities, dtype=torch.long).reshape(-1, 1)
        self.register_buffer("cat_valid", valid.reshape(n_cat, c_max), persistent=False)
        self.row_scale = row_scale
        if row_scale:
            self.scale_weight = nn.Parameter(torch.zeros(n_heads, dim))
            # softplus^-1(1 - MIN_SCALE): sigma starts at 1, like a global log-sigma of 0.
            start = torch.log(torch.expm1(torch.tensor(1.0 - self.MIN_SCALE)))
            self.scale_bias = nn.Parameter(torch.full((schema.n_numerical,), float(start)))

    def _numerical_heads(self, latents: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``latents (..., T, dim)`` through one linear head per numerical feature -> ``(..., D_num)``."""
        h_num = latents[..., : self.n_num_tokens, :]
        if self.group_size == 1:
            return torch.einsum("...jd,jd->...j", h_num, weight)
        grouped = torch.einsum("...td,tgd->...tg", h_num, weight.unflatten(0, (-1, self.group_size)))
        return grouped.flatten(-2)[..., : self.n_numerical]

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents (..., T, dim)`` -> numerical means ``(..., D_num)``, logits ``(..., D_cat, C_max)``."""
        h_cat = latents[..., self.n_num_tokens :, :]
        loc = self._numerical_heads(latents, self.num_weight) + self.num_bias
        logits = torch.einsum("...jd,jdc->...jc", h_cat, self.cat_weight) + self.cat_bias
        # float32 so likelihoods are computed in full precision under bf16 autocast.
        return loc.float(), logits.float().masked_fill(~self.cat_valid, -1e4)

    def scale(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-row standard deviations ``(..., D_num)`` of the numerical features (``row_scale`` only)."""
        if not self.row_scale:
            raise RuntimeError("this decoder has one global scale; build it with row_scale=True for per-row scales")
        raw = self._numerical_heads(latents, self.scale_weight) + self.scale_bias
        return self.MIN_SCALE + nn.functional.softplus(raw.float())


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick tokens along the token axis: ``tokens (B, T, d)``, ``index (B, ..., M)`` -> ``(B, ..., M, d)``."""
    batch, dim = tokens.shape[0], tokens.shape[-1]
    flat = index.reshape(batch, -1)
    picked = torch.gather(tokens, 1, flat.unsqueeze(-1).expand(-1, -1, dim))
    return picked.reshape(*index.shape, dim)


def scatter_tokens(tokens: torch.Tensor, index: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Inverse of `gather_tokens` for ``index (B, M)``: place ``(B, M, d)`` into zeros ``(B, T, d)``."""
    out = tokens.new_zeros(tokens.shape[0], n_tokens, tokens.shape[-1])
    return out.scatter(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), tokens)
