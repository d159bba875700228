"""Writing results for people: Markdown tables and figures.

Figures are `matplotlib.figure.Figure` objects drawn without pyplot, so library code never switches
a notebook user's backend or keeps figures alive in pyplot's global state.
"""

from __future__ import annotations

import math
import os

import pandas as pd
from matplotlib.figure import Figure

from . import io


def markdown_table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    """``frame`` as a Markdown table: one row per row, floats formatted with ``floats``, a missing
    value (None or NaN, e.g. a measurement that does not apply) as "–"."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v, floats) for v in row.values) + " |")
    return "\n".join(lines)


def _cell(value, floats: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return floats.format(value) if isinstance(value, float) else str(value)


def figure(rows: int = 1, columns: int = 1, size: tuple[float, float] = (5.5, 4.0), **subplots) -> tuple[Figure, object]:
    """A new figure of ``rows x columns`` panels (``size`` per panel) and its axes."""
    fig = Figure(figsize=(size[0] * columns, size[1] * rows))
    return fig, fig.subplots(rows, columns, **subplots)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120, **kwargs) -> None:
    """Lay out and write ``fig`` atomically (the file type follows the suffix of ``path``)."""
    fig.tight_layout()
    suffix = os.path.splitext(str(path))[1].lstrip(".") or "png"
    io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=suffix, **kwargs))
