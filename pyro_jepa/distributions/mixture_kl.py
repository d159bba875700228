"""A closed-form bound on the KL from a diagonal Gaussian to an equally weighted mixture of them."""

from __future__ import annotations

import math

import torch

# Entries of one (rows × components × d) block: bounds the memory of `kl_to_mixture_bound`.
BLOCK = 2**24
# What `kl_to_mixture_bound` returns: the bound, or the bound's location or scale term alone.
PARTS = ("both", "location", "scale")


def kl_to_mixture_bound(
    loc: torch.Tensor, scale: torch.Tensor, mix_loc: torch.Tensor, mix_scale: torch.Tensor, part: str = "both"
) -> torch.Tensor:
    r"""Upper bound on ``KL(q_n || p)`` per row ``(N,)`` for ``q_n = N(loc_n, diag scale_n²)`` and the
    mixture ``p = (1/K) Σ_k N(mix_loc_k, diag mix_scale_k²)``:

    .. math::
        \mathrm{KL}(q \,\|\, p) \;\le\; -\log \tfrac1K \textstyle\sum_k \exp\big(-\mathrm{KL}(q \,\|\, p_k)\big),

    because ``z ↦ log Σ_k exp(v_k(z))`` is convex, so Jensen gives ``E_q[log p] ≥ log (1/K) Σ_k
    exp(E_q[log p_k])`` (Hershey & Olsen's variational approximation, 2007). Exact for ``K = 1``;
    at most ``min_k KL(q || p_k) + log K``. ``loc, scale``: ``(N, d)``; ``mix_loc, mix_scale``: ``(K, d)``.

    ``part`` splits each component's KL ``Σ_i [(loc − m_k)² / s_k² + (scale² / s_k² − 1 − log(scale² / s_k²))] / 2``
    into its location term (``"location"``) or its scale term (``"scale"``) before the log-sum-exp, to
    tell which of the two a ranking comes from; ``"both"`` is the bound itself.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if loc.shape != scale.shape or mix_loc.shape != mix_scale.shape or loc.ndim != 2 or mix_loc.ndim != 2 or loc.shape[1] != mix_loc.shape[1]:
        raise ValueError(f"expected loc/scale (N, d) and mix_loc/mix_scale (K, d), got {tuple(loc.shape)}, "
                         f"{tuple(scale.shape)}, {tuple(mix_loc.shape)}, {tuple(mix_scale.shape)}")
    k, d = mix_loc.shape
    var, mix_var = scale.pow(2), mix_scale.pow(2)
    mix_log_var = mix_var.log()
    out = []
    chunk = max(1, BLOCK // (k * d))
    for q_loc, q_var in zip(loc.unsqueeze(1).split(chunk), var.unsqueeze(1).split(chunk)):
        location = (q_loc - mix_loc).pow(2) / mix_var if part != "scale" else 0.0
        spread = mix_log_var - q_var.log() + q_var / mix_var - 1.0 if part != "location" else 0.0
        kl = 0.5 * (location + spread).sum(-1)
        out.append(math.log(k) - torch.logsumexp(-kl, dim=-1))
    return torch.cat(out)
