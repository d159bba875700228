"""The downstream networks of Var-JEPA App. D.6.4 (and T-JEPA's benchmark), on ``(N, F)`` inputs.

The linear probe and the MLP are written here; ResNet and FT-Transformer come from `rtdl_revisiting_models` (Gorishniy et
al. 2021, the implementations T-JEPA uses); DCNv2 and AutoInt are short modules below. Every
builder has the signature ``(n_in, n_classes, config) -> nn.Module`` mapping inputs to logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .downstream import DownstreamConfig


def linear(n_in: int, n_classes: int, config: DownstreamConfig) -> nn.Module:
    """A linear probe (multinomial logistic regression on standardized inputs)."""
    return nn.Linear(n_in, n_classes)


def mlp(n_in: int, n_classes: int, config: DownstreamConfig) -> nn.Module:
    """``depth`` hidden layers of width ``hidden`` with ReLU and dropout (paper: 2 x 128, 0.1)."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(config.depth):
        layers += [nn.Linear(width, config.hidden), nn.ReLU(), nn.Dropout(config.dropout)]
        width = config.hidden
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def resnet(n_in: int, n_classes: int, config: DownstreamConfig) -> nn.Module:
    """Paper: 3 blocks, block dim 128, hidden dim 256, dropout 0.1."""
    from rtdl_revisiting_models import ResNet

    return ResNet(d_in=n_in, d_out=n_classes, n_blocks=3, d_block=128, d_hidden=256, d_hidden_multiplier=None, dropout1=0.1, dropout2=0.0)


class CrossLayer(nn.Module):
    """DCNv2 cross layer ``x0 * (U V^T x + b) + x`` with a low-rank weight (DCN-M), so wide
    flattened embeddings (thousands of inputs) stay affordable."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.up(self.down(x)) + x


class DCNv2(nn.Module):
    """Deep & Cross Network v2 (Wang et al. 2021), stacked: cross layers, then an MLP, then logits."""

    def __init__(self, n_in: int, n_classes: int, n_cross: int = 2, rank: int = 64, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.cross = nn.ModuleList(CrossLayer(n_in, min(rank, n_in)) for _ in range(n_cross))
        self.deep = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout)
        )
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.cross:
            h = layer(x, h)
        return self.head(self.deep(h))


def dcnv2(n_in: int, n_classes: int, config: DownstreamConfig) -> nn.Module:
    """Paper: 2 cross layers."""
    return DCNv2(n_in, n_classes, n_cross=2, hidden=config.hidden, dropout=config.dropout)


class FeatureTokens(nn.Module):
    """One token per feature from ``(B, n_in)`` inputs whose columns come in groups of
    ``token_sizes`` (default: one column each): a linear map of each group plus a per-token bias,
    giving ``(B, len(token_sizes), d_token)``. A scalar group is the usual numerical tokenizer, a
    one-hot group is a categorical embedding, a d-dim group a JEPA's per-feature embedding."""

    def __init__(self, n_in: int, token_sizes: tuple[int, ...] | None, d_token: int) -> None:
        super().__init__()
        sizes = tuple(token_sizes) if token_sizes is not None else (1,) * n_in
        if sum(sizes) != n_in or min(sizes) < 1:
            raise ValueError(f"token sizes {sizes} do not partition {n_in} inputs")
        self.n_tokens = len(sizes)
        # Equal groups (embeddings) take a batched matmul; mixed groups a scatter-add.
        self.width = sizes[0] if len(set(sizes)) == 1 else None
        self.register_buffer("group", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)), persistent=False)
        self.weight = nn.Parameter(torch.randn(n_in, d_token) * d_token**-0.5)
        self.bias = nn.Parameter(torch.zeros(self.n_tokens, d_token))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.width is not None:
            weight = self.weight.reshape(self.n_tokens, self.width, -1)
            return torch.einsum("btk,tkd->btd", x.reshape(x.shape[0], self.n_tokens, self.width), weight) + self.bias
        tokens = x.new_zeros(x.shape[0], self.n_tokens, self.weight.shape[1])
        return tokens.index_add(1, self.group, x.unsqueeze(-1) * self.weight) + self.bias


class AutoInt(nn.Module):
    """AutoInt (Song et al. 2019): one token per input feature, self-attention interaction layers
    with residual projections, pooled into a linear head."""

    def __init__(self, n_in: int, n_classes: int, d_token: int = 128, heads: int = 2, layers: int = 3,
                 token_sizes: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.tokens = FeatureTokens(n_in, token_sizes, d_token)
        self.attention = nn.ModuleList(nn.MultiheadAttention(d_token, heads, batch_first=True) for _ in range(layers))
        self.residual = nn.ModuleList(nn.Linear(d_token, d_token, bias=False) for _ in range(layers))
        # Mean over tokens instead of flattening keeps the head small for thousands of inputs.
        self.head = nn.Linear(d_token, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x)
        for attention, residual in zip(self.attention, self.residual):
            h = torch.relu(attention(h, h, h, need_weights=False)[0] + residual(h))
        return self.head(h.mean(1))


def autoint(n_in: int, n_classes: int, config: DownstreamConfig) -> nn.Module:
    """Paper: token dim 128, 2 heads, 3 layers."""
    return AutoInt(n_in, n_classes, d_token=128, heads=2, layers=3, token_sizes=config.token_sizes)


class ContinuousOnly(nn.Module):
    """Adapts rtdl's ``forward(x_cont, x_cat)`` to ``forward(x)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, None)


def ft_transformer(n_in: int, n_classes: int, config: DownstreamConfig) -> nn.Module:
    """FT-Transformer with rtdl's default ("standard") architecture, all inputs continuous, one token per feature."""
    from rtdl_revisiting_models import FTTransformer

    kwargs = FTTransformer.get_default_kwargs()
    tokens = FeatureTokens(n_in, config.token_sizes, kwargs["d_block"])
    model = FTTransformer(n_cont_features=tokens.n_tokens, cat_cardinalities=[], d_out=n_classes, **kwargs)
    if config.token_sizes is not None:  # rtdl embeds scalars; grouped columns get one token per group instead
        model.cont_embeddings = tokens
    return ContinuousOnly(model)


NETWORKS = {
    "linear": linear,
    "mlp": mlp,
    "resnet": resnet,
    "dcnv2": dcnv2,
    "autoint": autoint,
    "ft-transformer": ft_transformer,
}
