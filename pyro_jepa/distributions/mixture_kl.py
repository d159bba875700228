"""A closed-form bound on the KL from a diagonal Gaussian to an equally weighted mixture of them."""

from __future__ import annotations

import math
import warnings

import torch

# Entries of one (rows × components) block of KLs: bounds the memory of `kl_to_mixture_bound`.
BLOCK = 2**22
# What `kl_to_mixture_bound` returns: the bound, or the bound's location or scale term alone.
PARTS = ("both", "location", "scale")
# Widths of the Gaussian `fit_smoothing` may smooth a mixture by, in units of its components' median std
# (0: the mixture itself). Up to 16: with the paper's weak KL on s_y the fit chose 3, the old grid's largest,
# in 12 of 12 Figure-3 runs, and 6-8 once wider widths were offered (docs/results/uncertainty_notes.md, round 10).
SMOOTHING_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


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
    # Expanded into matrix products over d, not an (N, K, d) tensor: each component's KL is
    # 0.5 * [(loc² + scale²) · 1/v_k − 2 loc · m_k/v_k + Σ m_k²/v_k + Σ log v_k − Σ log scale² − d],
    # 10–100× faster for thousands of components. float64, as the expanded terms cancel near a component.
    loc, var = loc.double(), scale.double().pow(2)
    mix_loc, mix_var = mix_loc.double(), mix_scale.double().pow(2)
    precision = 1.0 / mix_var
    location_const = (mix_loc.pow(2) * precision).sum(-1)  # (K,)
    scale_const = mix_var.log().sum(-1) - d  # (K,)
    out = []
    chunk = max(1, BLOCK // k)
    for q_loc, q_var in zip(loc.split(chunk), var.split(chunk)):
        kl = torch.zeros(len(q_loc), k, dtype=torch.float64, device=loc.device)
        if part != "scale":
            kl += q_loc.pow(2) @ precision.T - 2 * q_loc @ (mix_loc * precision).T + location_const
        if part != "location":
            kl += q_var @ precision.T + scale_const - q_var.log().sum(-1, keepdim=True)
        out.append(math.log(k) - torch.logsumexp(-0.5 * kl, dim=-1))
    return torch.cat(out).to(scale.dtype)


def smoothed_scale(mix_scale: torch.Tensor, width: float) -> torch.Tensor:
    """Component scales of the mixture convolved with ``N(0, h² I)``, ``h = width · median(mix_scale)``:
    each component ``N(m_k, s_k²)`` becomes ``N(m_k, s_k² + h²)``."""
    if width == 0:
        return mix_scale
    return (mix_scale.pow(2) + (width * mix_scale.median()).pow(2)).sqrt()


def typical_rows(loc: torch.Tensor, scale: torch.Tensor, mix_scale: torch.Tensor, share: float, seed: int = 0) -> torch.Tensor:
    """Indices (sorted) of the ``share`` of K rows whose posteriors ``N(loc_k, scale_k²)`` ``(K, d)`` are most typical of
    the others': the rows are split in two halves by a permutation seeded by ``seed``, each row's `kl_to_mixture_bound`
    to the mixture of the *other* half's components (scales ``mix_scale``, e.g. `smoothed_scale`) is its atypicality,
    and the ``share`` with the lowest are kept. Cross-fitted, so that no row meets its own component.

    A robust (trimmed) estimate of where the bulk of the rows' posteriors sits when some rows are contaminated: an
    aggregate posterior of the kept rows has no mass where only atypical rows sit, however many there are."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if loc.shape != scale.shape or scale.shape != mix_scale.shape or loc.ndim != 2 or not len(loc):
        raise ValueError(f"expected loc, scale and mix_scale of one shape (K >= 1, d), got {tuple(loc.shape)}, "
                         f"{tuple(scale.shape)}, {tuple(mix_scale.shape)}")
    if len(loc) == 1:  # nothing to rank it against
        return torch.zeros(1, dtype=torch.long, device=loc.device)
    order = torch.randperm(len(loc), generator=torch.Generator().manual_seed(seed)).to(loc.device)
    halves = order[: len(order) // 2], order[len(order) // 2:]
    atypicality = torch.empty(len(loc), dtype=torch.float64, device=loc.device)
    for mine, other in (halves, halves[::-1]):
        atypicality[mine] = kl_to_mixture_bound(loc[mine], scale[mine], loc[other], mix_scale[other]).double()
    return atypicality.argsort()[: max(1, round(share * len(loc)))].sort().values


def fit_smoothing(
    loc: torch.Tensor, scale: torch.Tensor, mix_loc: torch.Tensor, mix_scale: torch.Tensor, grid=SMOOTHING_GRID
) -> tuple[float, dict[float, float]]:
    """The smoothing width of `grid` (see `smoothed_scale`) under which held-out posteriors ``loc, scale (N, d)``
    have the smallest mean `kl_to_mixture_bound` to the mixture, and the mean bound at every width.

    Used with a training set's posteriors as the mixture (its aggregate posterior) and validation rows as the
    held-out ones, this picks the prior of the family that gives unseen rows the best ELBO: the aggregate
    posterior is the best prior for the rows it is made of, and the smoothing keeps it from fitting only those.
    """
    if not len(grid) or any(w < 0 for w in grid):
        raise ValueError(f"grid must hold widths >= 0, got {grid}")
    curve = {float(w): float(kl_to_mixture_bound(loc, scale, mix_loc, smoothed_scale(mix_scale, w)).double().mean()) for w in grid}
    width = min(curve, key=curve.get)
    if len(curve) > 1 and width == max(curve):
        warnings.warn(f"fit_smoothing chose {width:g}, the largest width of its grid: the best width may lie beyond it; "
                      "pass a grid with larger widths", RuntimeWarning, stacklevel=2)
    return width, curve
