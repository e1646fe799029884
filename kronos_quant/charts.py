"""The figure plumbing every chart of the package shares (matplotlib Agg, no pyplot state).

:func:`new_figure` draws on matplotlib's Agg canvas directly, so no chart ever touches
pyplot's global backend; :func:`save_figure` lays it out, names the model that made it in the
bottom-right corner and writes it (atomically); :func:`stamp_labels` formats bar stamps for
tick labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_path


def new_figure(width: float, height: float) -> Any:
    """An empty matplotlib Figure on an Agg canvas (``width`` × ``height`` inches, 110 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path | None, model_label: str | None = None) -> Any:
    """Tight layout with ``model: <model_label>`` in the bottom-right corner (when given), so
    every chart says which model made it; written to ``path`` if given. Returns ``fig``."""
    if model_label:
        fig.text(0.995, 0.005, f"model: {model_label}", ha="right", va="bottom", fontsize=7,
                 color="dimgrey")
    fig.tight_layout(rect=(0, 0.03 if model_label else 0, 1, 1))
    if path is not None:
        with atomic_path(path) as tmp:  # the format follows the suffix, which tmp keeps
            fig.savefig(tmp)
    return fig


def stamp_labels(stamps: Sequence[object]) -> list[str]:
    """Tick labels for bar stamps: dates only when every stamp is at midnight (daily bars),
    else date and minute."""
    index = pd.DatetimeIndex(stamps)
    daily = bool(len(index)) and bool((index == index.normalize()).all())
    return list(index.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"))
