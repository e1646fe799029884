"""PNG charts of an evaluation and a calibration (matplotlib Agg canvas, no pyplot state)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..charts import new_figure, save_figure
from .calibration import Calibration
from .evaluation import Evaluation


def fingerprint_label(metadata: dict) -> str | None:
    """A model label from score metadata (its weights fingerprint), when nothing better is known."""
    fingerprint = metadata.get("model_fingerprint")
    return f"weights {str(fingerprint)[:12]}" if fingerprint else None


def plot_ic(evaluation: Evaluation, path: str | Path | None = None, *,
            signals: Sequence[str] | None = None, window: int = 20,
            model_label: str | None = None):
    """Cumulative RankIC of each signal (top) and the per-date RankIC of the first one with
    its rolling mean (bottom). Saved to ``path`` if given; returns the Figure.

    ``model_label`` names the model on the chart (default: the scores' weights fingerprint).
    """
    rank_ic = evaluation.rank_ic
    names = list(signals) if signals is not None else list(rank_ic.columns)
    missing = [n for n in names if n not in rank_ic.columns]
    if missing or not names:
        raise ValueError(f"unknown signals {missing}; available: {list(rank_ic.columns)}")
    fig = new_figure(10, 6.5)
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    kinds = evaluation.summary["kind"]
    for name in names:
        style = "--" if kinds.get(name) == "baseline" else "-"
        top.plot(rank_ic.index, rank_ic[name].fillna(0.0).cumsum(), style, lw=1.3, label=name)
    top.axhline(0.0, color="grey", lw=0.8)
    top.set_title(f"cumulative RankIC (horizon {evaluation.horizon} bars, "
                  f"{evaluation.execution} execution)")
    top.legend(fontsize=7, ncol=3, loc="upper left")
    first = rank_ic[names[0]].dropna()
    bottom.bar(first.index, first.to_numpy(), color=np.where(first > 0, "tab:green", "tab:red"),
               width=1.0, alpha=0.5)
    bottom.plot(first.index, first.rolling(window, min_periods=1).mean(), color="black", lw=1.3,
                label=f"{window}-date mean")
    bottom.axhline(0.0, color="grey", lw=0.8)
    bottom.set_title(f"RankIC per date: {names[0]}")
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return save_figure(fig, path, model_label or fingerprint_label(evaluation.metadata))


def plot_calibration(calibration: Calibration, path: str | Path | None = None, *,
                     model_label: str | None = None):
    """Nominal vs empirical band coverage per forecast step (left) and the PIT histogram
    pooled over steps (right). Saved to ``path`` if given; returns the Figure.

    ``model_label`` names the model that made the forecasts on the chart."""
    fig = new_figure(10, 4.2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    cov = calibration.coverage
    levels = np.asarray(cov.columns, dtype=float)
    left.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
    for step in cov.index:
        left.plot(levels, cov.loc[step].to_numpy(), marker="o", ms=3, lw=1.2, label=f"step {step}")
    left.set_xlabel("nominal central band")
    left.set_ylabel("share of outcomes inside")
    left.set_title("band coverage")
    left.legend(fontsize=7)
    weights = calibration.n.to_numpy(dtype=float)
    pooled = calibration.pit.to_numpy() @ (weights / weights.sum())
    right.bar(np.arange(len(pooled)), pooled, color="tab:blue", alpha=0.7)
    right.axhline(1.0 / len(pooled), color="black", lw=1.0, ls="--", label="uniform")
    right.set_xticks(np.arange(len(pooled)))
    right.set_xticklabels(calibration.pit.index, rotation=45, ha="right", fontsize=7)
    right.set_title("PIT histogram (all steps)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save_figure(fig, path, model_label)
