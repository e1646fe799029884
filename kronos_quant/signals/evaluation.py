"""Honest evaluation of scores against realised forward returns, next to simple baselines.

The score at rebalance date t is known after bar t closes. It is compared with the return a
trade on it earns under the execution convention (:mod:`kronos_quant.execution`), over
``horizon`` of the instrument's own bars: ``next_open`` (default) open[t+1] → open[t+1+h],
``next_close`` close[t+1] → close[t+1+h], ``same_close`` close[t] → close[t+h] (optimistic:
it needs market-on-close orders). Every statistic is computed per date across instruments,
then summarised over dates:

* IC: Pearson correlation of score and forward return; RankIC: Spearman (Pearson of the
  per-date average ranks). A date needs ``min_instruments`` (default 3) finite pairs;
  a date whose scores are all equal scores IC = RankIC = 0 (the signal takes no view),
  a date whose returns are all equal is skipped. Mean, std (ddof=1), ICIR = mean / std and
  t = mean / (std / sqrt(n_dates)) are reported. With rebalancing more often than every
  ``horizon`` bars the forward returns overlap, successive ICs are correlated, and the
  t-stat overstates significance (a note says so).
* hit rate: share of (date, instrument) pairs where the score and the return are on the same
  side of their date's medians (pairs on a median are left out).
* quantile portfolios: per date, instruments are bucketed by score percentile rank (ties
  share their average rank, so they land in one bucket) into ``quantiles`` groups (q1
  lowest); the equal-weight forward return of each bucket, averaged over dates, and the
  long-short spread top − bottom bucket (the highest and lowest non-empty buckets when ties
  leave an end empty; 0 on dates where every score is equal).
* turnover: share of the top-k set (highest scores) replaced from one rebalance date to the
  next, averaged over dates.

Baselines are scored on exactly the score rows and against the same forward returns:
``random_walk`` (score 0: predicts no change), ``momentum_<w>`` (past return over w bars) and
``reversal_<k>`` (minus the past return over k bars, short-term reversal), from closes up to t.

Scores written by ``score_panel`` carry their settings in ``attrs`` (lookback, pred_len,
sample_count, ...); :func:`evaluate` keeps them in ``Evaluation.metadata`` and warns when the
horizon differs from the forecast length ``pred_len``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data import validate_panel
from ..execution import DEFAULT_EXECUTION, check_execution, describe_execution, execution_returns
from ..inputs import checked_int
from .transforms import check_scores

logger = logging.getLogger(__name__)


def baseline_scores(panel: pd.DataFrame, index: pd.MultiIndex | None = None, *,
                    momentum_window: int = 20, reversal_window: int = 5) -> pd.DataFrame:
    """Random-walk, momentum and short-term reversal scores, from closes up to each date."""
    return _baselines(validate_panel(panel)["close"], index, momentum_window, reversal_window)


def _baselines(close: pd.Series, index: pd.MultiIndex | None, momentum_window: int,
               reversal_window: int) -> pd.DataFrame:
    """:func:`baseline_scores` from a validated panel's closes."""
    checked_int(momentum_window, name="momentum_window")
    checked_int(reversal_window, name="reversal_window")
    by_inst = close.groupby(level="instrument")
    out = pd.DataFrame({
        "random_walk": 0.0 * close,
        f"momentum_{momentum_window}": close / by_inst.shift(int(momentum_window)) - 1.0,
        f"reversal_{reversal_window}": -(close / by_inst.shift(int(reversal_window)) - 1.0),
    })
    return out if index is None else out.reindex(index)


def per_date_ic(scores: pd.Series, returns: pd.Series, *, method: str = "pearson",
                min_instruments: int = 3) -> pd.Series:
    """Cross-sectional correlation per date (``"pearson"`` IC or ``"spearman"`` RankIC)."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    frame = pd.DataFrame({"x": scores, "y": returns}).dropna()
    frame = frame[frame.groupby(level="datetime")["x"].transform("size") >= min_instruments]
    if method == "spearman":
        frame = frame.groupby(level="datetime").rank(method="average")
    grouped = frame.groupby(level="datetime")
    centred = frame - grouped.transform("mean")
    sums = pd.DataFrame({"xy": centred["x"] * centred["y"], "xx": centred["x"] ** 2,
                         "yy": centred["y"] ** 2}).groupby(level="datetime").sum()
    # Sums of squares of constants are rounding noise: compare with the data's own scale.
    scale = frame.abs().groupby(level="datetime").max() ** 2 * 1e-20
    flat_x, flat_y = sums["xx"] <= scale["x"], sums["yy"] <= scale["y"]
    ic = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"]).where(~flat_x & ~flat_y)
    ic[flat_x & ~flat_y] = 0.0
    return ic[~flat_y].rename(method)


def hit_rate(scores: pd.Series, returns: pd.Series) -> float:
    """Share of pairs on the same side of their date's median (ties left out)."""
    frame = pd.DataFrame({"x": scores, "y": returns}).dropna()
    side = np.sign(frame - frame.groupby(level="datetime").transform("median"))
    decided = (side["x"] != 0) & (side["y"] != 0)
    return float((side["x"] == side["y"])[decided].mean()) if decided.any() else float("nan")


def quantile_returns(scores: pd.Series, returns: pd.Series, *, quantiles: int = 5) -> pd.DataFrame:
    """Mean forward return of each score-quantile bucket per date (dates × q1..qQ).

    Dates with fewer than ``quantiles`` pairs or with all scores equal are left out."""
    frame = pd.DataFrame({"x": scores, "y": returns}).dropna()
    grouped = frame.groupby(level="datetime")["x"]
    usable = (grouped.transform("size") >= quantiles) & (grouped.transform("nunique") > 1)
    frame = frame[usable]
    pct = frame.groupby(level="datetime")["x"].rank(method="average", pct=True)
    bucket = np.clip(np.ceil(pct * quantiles - 1e-9), 1, quantiles).astype(int)
    dates = frame.index.get_level_values("datetime")
    table = frame["y"].groupby([dates, bucket.to_numpy()]).mean().unstack()
    table = table.reindex(columns=range(1, quantiles + 1))
    table.columns = [f"q{q}" for q in table.columns]
    table.index.name = "datetime"
    return table


def topk_turnover(scores: pd.Series, *, k: int) -> pd.Series:
    """Per date, the share of the top-``k`` set that was not in the previous date's top-k."""
    x = scores.dropna()
    grouped = x.groupby(level="datetime")
    usable = (grouped.transform("size") >= k) & (grouped.transform("nunique") > 1)
    x = x[usable]
    top = x.groupby(level="datetime").rank(method="first", ascending=False) <= k
    held = top.unstack("instrument", fill_value=False).astype(bool)
    kept = (held & held.shift(1, fill_value=False)).sum(axis=1)
    turnover = 1.0 - kept / k
    return turnover.iloc[1:].rename("turnover")


def _t_stat(series: pd.Series) -> tuple[float, float, float, float]:
    """mean, std, mean/std, t of a per-date series."""
    s = series.dropna()
    if len(s) < 2:
        return (float(s.mean()) if len(s) else float("nan"),) + (float("nan"),) * 3
    mean, std = float(s.mean()), float(s.std(ddof=1))
    ratio = mean / std if std > 0 else float("nan")
    return mean, std, ratio, ratio * math.sqrt(len(s)) if std > 0 else float("nan")


@dataclass
class Evaluation:
    """Result of :func:`evaluate`. ``summary`` has one row per signal; the per-date frames
    (dates × signals) let you plot or resample the statistics. ``execution`` is the convention
    the forward returns were measured under; ``metadata`` the scores' ``attrs`` (may be empty)."""

    horizon: int
    summary: pd.DataFrame
    ic: pd.DataFrame
    rank_ic: pd.DataFrame
    quantile_returns: pd.DataFrame
    long_short: pd.DataFrame
    turnover: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    execution: str = DEFAULT_EXECUTION
    metadata: dict = field(default_factory=dict)

    TABLE_COLUMNS = {"kind": "kind", "n_dates": "dates", "ic_mean": "IC", "rank_ic_mean": "RankIC",
                     "rank_icir": "RankICIR", "rank_ic_t": "t(RankIC)", "hit_rate": "hit",
                     "long_short": "L/S", "turnover": "turnover"}

    def table(self, *, digits: int = 4) -> str:
        """Compact text table of the main statistics, with the notes underneath."""
        frame = self.summary[list(self.TABLE_COLUMNS)].rename(columns=self.TABLE_COLUMNS)
        text = frame.to_string(float_format=lambda v: f"{v:.{digits}f}")
        lines = [f"horizon {self.horizon} bars; execution {describe_execution(self.execution)}",
                 "L/S = mean top-minus-bottom quantile forward return", text]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __str__(self) -> str:
        return self.table()


def _signal_summary(x: pd.Series, y: pd.Series, *, quantiles: int, top_k: int,
                    min_instruments: int) -> tuple[dict, dict]:
    """Summary row and per-date series of one signal."""
    ic = per_date_ic(x, y, method="pearson", min_instruments=min_instruments)
    ric = per_date_ic(x, y, method="spearman", min_instruments=min_instruments)
    qret = quantile_returns(x, y, quantiles=quantiles)
    # Dates where the signal has no view hold no position: long-short 0, not missing.
    pairs = pd.DataFrame({"x": x, "y": y}).dropna().groupby(level="datetime")["x"]
    flat = pairs.nunique()[(pairs.nunique() == 1) & (pairs.size() >= quantiles)].index
    # With tied scores the extreme buckets can be empty: use the extreme non-empty ones.
    spread = qret.ffill(axis=1).iloc[:, -1] - qret.bfill(axis=1).iloc[:, 0]
    ls = pd.concat([spread, pd.Series(0.0, index=flat)]).sort_index()
    turnover = topk_turnover(x, k=top_k)
    row = {"n_dates": len(ric)}
    for name, series in (("ic", ic), ("rank_ic", ric)):
        row.update(zip([f"{name}_mean", f"{name}_std", f"{name}ir", f"{name}_t"],
                       _t_stat(series), strict=True))
    row["rank_ic_positive"] = float((ric > 0).mean()) if len(ric) else float("nan")
    row["hit_rate"] = hit_rate(x, y)
    row.update(qret.mean().to_dict())
    row["long_short"], _, _, row["long_short_t"] = _t_stat(ls)
    row["turnover"] = float(turnover.mean()) if len(turnover) else float("nan")
    per_date = {"ic": ic, "rank_ic": ric, "long_short": ls, "turnover": turnover}
    return row, per_date


def _overlap_note(index: pd.MultiIndex, panel: pd.DataFrame, horizon: int) -> str | None:
    calendar = pd.DatetimeIndex(panel.index.get_level_values("datetime").unique()).sort_values()
    used = pd.DatetimeIndex(index.get_level_values("datetime").unique()).sort_values()
    if len(used) < 2:
        return None
    spacing = float(np.median(np.diff(calendar.get_indexer(used))))
    if spacing < horizon:
        return (f"rebalance dates are ~{spacing:g} bars apart but the horizon is {horizon} bars: "
                f"forward returns overlap, so t-stats overstate significance")
    return None


def evaluate(scores: pd.Series | pd.DataFrame, panel: pd.DataFrame, *, horizon: int,
             baselines: bool = True, momentum_window: int = 20, reversal_window: int = 5,
             quantiles: int = 5, top_k: int | None = None, log: bool = False,
             min_instruments: int = 3, execution: str = DEFAULT_EXECUTION) -> Evaluation:
    """IC, RankIC, hit rate, quantile returns and turnover of each score column (see module docs).

    ``execution`` (``"next_open"``, ``"next_close"`` or ``"same_close"``) sets the price the
    forward returns start from. ``top_k`` defaults to the median number of instruments per
    date / ``quantiles``. ``log=True`` evaluates against log forward returns.
    """
    check_scores(scores)
    check_execution(execution)
    metadata = dict(scores.attrs)
    frame = scores.to_frame() if isinstance(scores, pd.Series) else scores
    frame = frame.rename(columns=str).astype("float64")
    panel = validate_panel(panel)
    outside = ~frame.index.isin(panel.index)
    if outside.any():
        raise ValueError(f"scores have rows that are not in the panel, first "
                         f"{frame.index[int(np.argmax(outside))]}; evaluate on the panel they "
                         f"were computed from")
    checked_int(quantiles, name="quantiles", minimum=2)
    kinds = dict.fromkeys(frame.columns, "model")
    if baselines:
        base = _baselines(panel["close"], frame.index, momentum_window, reversal_window)
        clash = set(base.columns) & set(frame.columns)
        if clash:
            raise ValueError(f"score columns {sorted(clash)} clash with baseline names")
        frame = frame.join(base)
        kinds.update(dict.fromkeys(base.columns, "baseline"))
    fwd = execution_returns(panel, horizon=horizon, execution=execution, log=log)
    fwd = fwd.reindex(frame.index)
    per_date_n = frame.notna().groupby(level="datetime").sum().max(axis=1)
    k = top_k or max(1, int(round(float(per_date_n.median()) / quantiles)))
    rows, series = {}, {}
    for name in frame.columns:
        rows[name], series[name] = _signal_summary(frame[name], fwd, quantiles=int(quantiles),
                                                   top_k=k, min_instruments=min_instruments)
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.insert(0, "kind", pd.Series(kinds))
    summary.index.name = "signal"
    notes = _notes(frame, fwd, panel, horizon=horizon, min_instruments=min_instruments, k=k)
    mismatch = _horizon_note(metadata, horizon)
    if mismatch:
        logger.warning("evaluate: %s", mismatch)
        notes.insert(0, mismatch)
    pick = lambda key: pd.DataFrame({n: s[key] for n, s in series.items()})  # noqa: E731
    qret = summary[[f"q{q}" for q in range(1, quantiles + 1)]]
    return Evaluation(int(horizon), summary, pick("ic"), pick("rank_ic"), qret,
                      pick("long_short"), pick("turnover"), notes, execution, metadata)


def _horizon_note(metadata: dict, horizon: int) -> str | None:
    """A warning when the scores forecast ``pred_len`` bars but are judged over another horizon."""
    pred_len = metadata.get("pred_len")
    try:
        pred_len = int(pred_len)
    except (TypeError, ValueError):
        return None
    if pred_len == int(horizon):
        return None
    return (f"horizon {horizon} bars differs from the scores' forecast length pred_len={pred_len}: "
            f"the scores are judged on a horizon they did not forecast")


def _notes(frame: pd.DataFrame, fwd: pd.Series, panel: pd.DataFrame, *, horizon: int,
           min_instruments: int, k: int) -> list[str]:
    notes = []
    dates = frame.index.get_level_values("datetime")
    no_future = fwd.isna().groupby(dates).all()
    if no_future.any():
        notes.append(f"{int(no_future.sum())} date(s) have no forward {horizon}-bar return yet "
                     f"(the panel ends) and are left out")
    counts = fwd.notna().groupby(dates).sum()
    thin = int(((counts > 0) & (counts < min_instruments)).sum())
    if thin:
        notes.append(f"{thin} date(s) have fewer than {min_instruments} instruments with a "
                     f"forward return and are skipped")
    overlap = _overlap_note(frame.index, panel, horizon)
    if overlap:
        notes.append(overlap)
    notes.append(f"turnover of the top-{k} set per rebalance (default: the top quantile's size; "
                 f"top_k / --top-k sets the number you hold)")
    return notes
