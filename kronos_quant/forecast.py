"""Forecast: every sampled path of one series, with summaries and a fan chart.

:func:`forecast_summary` is the one summary of a forecast (``kronos-quant forecast``, the demo
and the live loop's ledger all keep it); :func:`write_forecast` writes a forecast's files.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .charts import new_figure, save_figure, stamp_labels
from .inputs import BAR_COLUMNS
from .io import atomic_path, write_atomic

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class Forecast:
    """Monte Carlo forecast of one series.

    Attributes
    ----------
    paths
        (sample_count, pred_len, 6) float64 array in price units, columns ``BAR_COLUMNS``.
    index
        Timestamps of the forecast bars.
    history
        The context the forecast was made from (price units, ``BAR_COLUMNS``), indexed by its
        timestamps; its last row is the last observed bar.
    name
        Series label (symbol), if any.
    model_label
        Which model made the forecast (shown on charts), if known.
    """

    paths: np.ndarray
    index: pd.Index
    history: pd.DataFrame
    name: str | None = None
    model_label: str | None = None

    columns = BAR_COLUMNS

    def __post_init__(self) -> None:
        self.paths = np.asarray(self.paths, dtype=np.float64)
        if self.paths.ndim != 3 or self.paths.shape[1:] != (len(self.index), len(BAR_COLUMNS)):
            raise ValueError(f"paths must be (samples, {len(self.index)}, {len(BAR_COLUMNS)}), "
                             f"got {self.paths.shape}")

    @property
    def sample_count(self) -> int:
        return self.paths.shape[0]

    @property
    def pred_len(self) -> int:
        return self.paths.shape[1]

    @property
    def last(self) -> pd.Series:
        """The last observed bar."""
        return self.history.iloc[-1]

    def column_paths(self, column: str = "close") -> np.ndarray:
        """(sample_count, pred_len) paths of one column."""
        if column not in BAR_COLUMNS:
            raise ValueError(f"unknown column {column!r}; choose from {list(BAR_COLUMNS)}")
        return self.paths[:, :, BAR_COLUMNS.index(column)]

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=self.index, columns=list(BAR_COLUMNS))

    def mean(self) -> pd.DataFrame:
        """Mean over paths, per bar and column."""
        return self._frame(self.paths.mean(axis=0))

    def median(self) -> pd.DataFrame:
        """Median over paths, per bar and column."""
        return self._frame(np.median(self.paths, axis=0))

    def quantile(self, q: float | Sequence[float]) -> pd.DataFrame:
        """Quantile(s) over paths. A float gives bars × columns; a list gives columns
        (q, column)."""
        qs = np.atleast_1d(np.asarray(q, dtype=float))
        if ((qs < 0) | (qs > 1)).any():
            raise ValueError(f"quantiles must lie in [0, 1], got {q!r}")
        values = np.quantile(self.paths, qs, axis=0)  # (nq, P, 6)
        if np.ndim(q) == 0:
            return self._frame(values[0])
        frames = {float(qi): self._frame(v) for qi, v in zip(qs, values, strict=True)}
        return pd.concat(frames, axis=1, names=["quantile", "column"])

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per (sample, timestamp), columns sample, timestamp, bars."""
        s, p, _ = self.paths.shape
        frame = pd.DataFrame(self.paths.reshape(s * p, -1), columns=list(BAR_COLUMNS))
        frame.insert(0, "timestamp", np.tile(np.asarray(self.index), s))
        frame.insert(0, "sample", np.repeat(np.arange(s), p))
        return frame

    def plot(self, path: str | Path | None = None, *, column: str = "close",
             history: int = 120, title: str | None = None, model_label: str | None = None):
        """Fan chart: history, median, 10–90% and 25–75% bands; saved to ``path`` if given.

        ``model_label`` (default: :attr:`model_label`) is printed in the bottom-right corner, so
        the chart says which model made it. Uses matplotlib's Agg canvas directly, so it never
        touches pyplot's global backend. Returns the matplotlib Figure.
        """
        values = self.column_paths(column)
        q10, q25, q50, q75, q90 = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0)
        past = self.history[column].iloc[-history:]
        # Bars on a positional axis: overnight and weekend gaps would otherwise dominate.
        n = len(past)
        x_past, x_fut = np.arange(n), np.arange(n, n + self.pred_len)
        stamps = list(past.index) + list(self.index)
        fig = new_figure(10, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(x_past, past.to_numpy(), color="black", lw=1.2, label="history")
        ax.fill_between(x_fut, q10, q90, color="tab:blue", alpha=0.18, label="10–90%")
        ax.fill_between(x_fut, q25, q75, color="tab:blue", alpha=0.35, label="25–75%")
        ax.plot(x_fut, q50, color="tab:blue", lw=1.6, label="median")
        ax.axvline(n - 0.5, color="grey", lw=0.8, ls="--")
        ticks = np.linspace(0, len(stamps) - 1, num=min(8, len(stamps))).round().astype(int)
        ax.set_xticks(ticks)
        ax.set_xticklabels(stamp_labels([stamps[i] for i in ticks]), rotation=25, ha="right",
                           fontsize=8)
        ax.set_title(title or f"{self.name or 'series'}: {column}, "
                              f"{self.sample_count} paths × {self.pred_len} bars")
        ax.set_ylabel(column)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        return save_figure(fig, path, model_label or self.model_label)

    def __repr__(self) -> str:
        span = f"{self.index[0]} … {self.index[-1]}" if len(self.index) else "empty"
        return (f"Forecast(name={self.name!r}, samples={self.sample_count}, "
                f"pred_len={self.pred_len}, {span})")


def forecast_summary(fc: Forecast, *, model_label: str | None = None, column: str = "close",
                     per_step: bool = False,
                     scores: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Headline numbers of a forecast (JSON-serialisable): the last bar, then the median,
    10%/90% quantiles, mean, expected return and P(up) of ``column`` at the horizon.

    ``per_step`` adds ``path``: the stamps and the mean, q10, q50 and q90 at every step;
    ``scores`` (e.g. :func:`kronos_quant.signals.score_forecast`) are added as ``scores``.
    """
    values = fc.column_paths(column)  # (S, P)
    last, end = float(fc.last[column]), values[:, -1]
    q10, q50, q90 = np.quantile(end, [0.1, 0.5, 0.9])
    out: dict[str, Any] = {
        "series": fc.name, "model": model_label or fc.model_label, "samples": fc.sample_count,
        "pred_len": fc.pred_len, "last_timestamp": str(fc.history.index[-1]),
        "last_close": last, "horizon_timestamp": str(fc.index[-1]), "column": column,
        "median": float(q50), "q10": float(q10), "q90": float(q90), "mean": float(end.mean()),
        "expected_return": float(end.mean() / last - 1.0), "prob_up": float((end > last).mean())}
    if per_step:
        steps = np.quantile(values, [0.1, 0.5, 0.9], axis=0)  # (3, P)
        out["path"] = {"stamps": [str(t) for t in fc.index],
                       "mean": values.mean(axis=0).round(8).tolist(),
                       **{k: v.round(8).tolist() for k, v in zip(("q10", "q50", "q90"), steps,
                                                                   strict=True)}}
    if scores is not None:
        out["scores"] = {k: float(v) for k, v in scores.items()}
    return out


def quantile_table(fc: Forecast, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> pd.DataFrame:
    """Per future bar: the mean and each quantile of every column (``close_q10``, ...)."""
    table = fc.quantile(list(quantiles))
    table.columns = [f"{col}_q{round(q * 100):02d}" for q, col in table.columns]
    mean = fc.mean().add_suffix("_mean")
    frame = pd.concat([mean, table], axis=1)
    order = [c for name in fc.columns for c in frame.columns if c.startswith(f"{name}_")]
    frame = frame[order]
    frame.index.name = "timestamp"
    return frame


def write_forecast(fc: Forecast, out: str | Path, *, model_label: str | None = None,
                   quantiles: Sequence[float] = DEFAULT_QUANTILES, title: str | None = None,
                   scores: Mapping[str, float] | None = None) -> tuple[dict[str, Path], dict]:
    """Write ``fan.png``, ``paths.csv``, ``quantiles.csv`` and ``summary.json`` into ``out``
    (each atomically); ``scores`` go into the summary (:func:`forecast_summary`).

    Returns the files written (by kind) and the summary dict.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"fan_chart": out / "fan.png", "paths": out / "paths.csv",
             "quantiles": out / "quantiles.csv", "summary": out / "summary.json"}
    fc.plot(files["fan_chart"], title=title, model_label=model_label)
    with atomic_path(files["paths"]) as tmp:
        fc.to_frame().to_csv(tmp, index=False)
    with atomic_path(files["quantiles"]) as tmp:
        quantile_table(fc, quantiles).to_csv(tmp)
    summary = forecast_summary(fc, model_label=model_label, scores=scores)
    write_atomic(files["summary"], json.dumps(summary, indent=2) + "\n")
    return files, summary
