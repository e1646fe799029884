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
  a date whose returns are all equal is skipped. Mean, std (ddof=1), ICIR = mean / std.
* uncertainty: for IC, RankIC and the long-short spread, the mean's Newey–West standard
  error, t and two-sided p-value (:func:`kronos_quant.stats.mean_test`) and the number of
  dates. The lag covers the overlap of ``horizon``-bar returns taken every ``spacing`` bars
  (median gap between rebalance dates): ``max(2·overlap, floor(4 (T/100)^(2/9)))`` with
  ``overlap = ceil(horizon / spacing) − 1``. The same test runs on the per-date difference
  between each model signal and each baseline, paired by date (``Evaluation.differences``).
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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data import validate_panel
from ..execution import DEFAULT_EXECUTION, check_execution, describe_execution, execution_returns
from ..inputs import checked_int
from ..stats import mean_test, newey_west_lag, overlap_lags, paired_difference
from .transforms import check_scores

logger = logging.getLogger(__name__)


def baseline_scores(panel: pd.DataFrame, index: pd.MultiIndex | None = None, *,
                    momentum_window: int = 20, reversal_window: int = 5) -> pd.DataFrame:
    """Random-walk, momentum and short-term reversal scores, from closes up to each date;
    ``index`` (a (datetime, instrument) MultiIndex, e.g. a score frame's) picks their rows."""
    if index is not None and not isinstance(index, pd.MultiIndex):
        raise TypeError(f"index must be a (datetime, instrument) MultiIndex (the rows to "
                        f"return), got {type(index).__name__} {list(index)[:3]!r}; the "
                        "baselines are the result's columns: select them from it")
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


STATISTICS = ("ic", "rank_ic", "long_short")
TEST_FIELDS = ("mean", "se", "t", "p", "n")


def _test_row(series: pd.Series, prefix: str, overlap: int) -> dict[str, float]:
    """``{prefix}_mean/_se/_t/_p/_n`` of the Newey–West test of a per-date series."""
    values = series.dropna().to_numpy()
    test = mean_test(values, lag=newey_west_lag(len(values), overlap=overlap))
    found = (test.mean, test.se, test.t, test.p_value, test.n)
    return {f"{prefix}_{k}": v for k, v in zip(TEST_FIELDS, found, strict=True)}


@dataclass
class Evaluation:
    """Result of :func:`evaluate`. ``summary`` has one row per signal; the per-date frames
    (dates × signals) let you plot or resample the statistics. ``differences`` holds the
    paired-by-date tests of each model signal minus each baseline (index (signal, baseline);
    columns ``<statistic>_<mean|se|t|p|n>``), also spread into ``summary`` as
    ``<statistic>_vs_<baseline>_<field>``. ``overlap`` is the number of successive rebalance
    dates whose forward returns overlap (it sets the Newey–West lag). ``execution`` is the
    convention the forward returns were measured under; ``metadata`` the scores' ``attrs``."""

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
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)
    overlap: int = 0

    TABLE_COLUMNS = {"kind": "kind", "n_dates": "dates", "ic_mean": "IC", "ic_p": "p(IC)",
                     "rank_ic_mean": "RankIC", "rank_ic_se": "se", "rank_ic_t": "t",
                     "rank_ic_p": "p(RankIC)", "long_short_mean": "L/S", "long_short_p": "p(L/S)",
                     "hit_rate": "hit", "turnover": "turnover"}
    DIFFERENCE_COLUMNS = {"rank_ic_mean": "dRankIC", "rank_ic_t": "t", "rank_ic_p": "p",
                          "long_short_mean": "dL/S", "long_short_p": "p(L/S)", "rank_ic_n": "dates"}

    def significant(self, alpha: float = 0.05, *, adjust: str | None = None) -> pd.DataFrame:
        """Which means differ from zero at level ``alpha`` (two-sided Newey–West tests).

        One row per signal; columns ``ic``, ``rank_ic``, ``long_short`` and, for model
        signals, ``<statistic>_vs_<baseline>`` (the paired difference). Read the direction
        from the means in ``summary``. ``adjust`` corrects for testing many columns at once
        with a statsmodels ``multipletests`` method (e.g. ``"holm"``, ``"fdr_bh"``) over all
        p-values of the frame; ``None`` tests each at ``alpha``."""
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        p = self.p_values()
        if adjust is not None:
            from statsmodels.stats.multitest import multipletests

            flat = p.to_numpy().ravel()
            ok = np.isfinite(flat)
            adjusted = np.full(flat.shape, np.nan)
            if ok.any():
                adjusted[ok] = multipletests(flat[ok], alpha=alpha, method=adjust)[1]
            p = pd.DataFrame(adjusted.reshape(p.shape), index=p.index, columns=p.columns)
        return p.lt(alpha)

    def verdicts(self, alpha: float = 0.05, *, statistic: str = "rank_ic") -> list[str]:
        """One sentence per model signal: its ``statistic`` mean with p-value and dates, and
        against each baseline, whether the difference is distinguishable from zero."""
        sig = self.significant(alpha)
        words = lambda ok: "significant" if ok else "not significant"  # noqa: E731
        lines = []
        for name, row in self.summary[self.summary["kind"] != "baseline"].iterrows():
            text = (f"{name}: {statistic} {row[f'{statistic}_mean']:+.4f} (p "
                    f"{row[f'{statistic}_p']:.3g}, {int(row[f'{statistic}_n'])} dates), "
                    f"{words(sig.loc[name, statistic])} at {alpha:g}")
            if len(self.differences) and name in self.differences.index.get_level_values(0):
                diffs = self.differences.loc[name]
                text += "; minus " + ", ".join(
                    f"{base} {d[f'{statistic}_mean']:+.4f} (p {d[f'{statistic}_p']:.3g}, "
                    f"{words(sig.loc[name, f'{statistic}_vs_{base}'])})"
                    for base, d in diffs.iterrows())
            lines.append(text)
        return lines

    def p_values(self) -> pd.DataFrame:
        """The p-values :meth:`significant` compares with alpha (signals × tests)."""
        cols = {s: f"{s}_p" for s in STATISTICS}
        cols |= {c[:-2]: c for c in self.summary.columns if "_vs_" in c and c.endswith("_p")}
        return self.summary[list(cols.values())].set_axis(list(cols), axis=1).astype(float)

    def table(self, *, digits: int = 4) -> str:
        """Compact text table of the main statistics, the paired differences against the
        baselines, and the notes underneath."""
        fmt = lambda v: f"{v:.{digits}f}"  # noqa: E731
        frame = self.summary[list(self.TABLE_COLUMNS)].rename(columns=self.TABLE_COLUMNS)
        lines = [f"horizon {self.horizon} bars; execution {describe_execution(self.execution)}",
                 "L/S = mean top-minus-bottom quantile forward return; se, t, p: Newey–West "
                 f"(overlap {self.overlap} dates), two-sided", frame.to_string(float_format=fmt)]
        if len(self.differences):
            diff = self.differences[list(self.DIFFERENCE_COLUMNS)]
            lines += ["model minus baseline, paired by date:",
                      diff.rename(columns=self.DIFFERENCE_COLUMNS).to_string(float_format=fmt)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __str__(self) -> str:
        return self.table()


def _signal_summary(x: pd.Series, y: pd.Series, *, quantiles: int, top_k: int,
                    min_instruments: int, overlap: int) -> tuple[dict, dict]:
    """Summary row and per-date series of one signal."""
    ic = per_date_ic(x, y, method="pearson", min_instruments=min_instruments)
    ric = per_date_ic(x, y, method="spearman", min_instruments=min_instruments)
    qret = quantile_returns(x, y, quantiles=quantiles)
    # Dates where the signal has no view hold no position: long-short 0, not missing.
    pairs = pd.DataFrame({"x": x, "y": y}).dropna().groupby(level="datetime")["x"]
    distinct = pairs.nunique()
    flat = distinct[(distinct == 1) & (pairs.size() >= quantiles)].index
    # With tied scores the extreme buckets can be empty: use the extreme non-empty ones.
    spread = qret.ffill(axis=1).iloc[:, -1] - qret.bfill(axis=1).iloc[:, 0]
    ls = pd.concat([spread, pd.Series(0.0, index=flat)]).sort_index()
    turnover = topk_turnover(x, k=top_k)
    per_date = {"ic": ic, "rank_ic": ric, "long_short": ls, "turnover": turnover}
    row = {"n_dates": len(ric)}
    for name in STATISTICS:
        row.update(_test_row(per_date[name], name, overlap))
    for name, series in (("ic", ic), ("rank_ic", ric)):
        std = float(series.std(ddof=1)) if len(series) > 1 else float("nan")
        row[f"{name}_std"] = std
        row[f"{name}ir"] = row[f"{name}_mean"] / std if std > 0 else float("nan")
    row["rank_ic_positive"] = float((ric > 0).mean()) if len(ric) else float("nan")
    row["hit_rate"] = hit_rate(x, y)
    row.update(qret.mean().to_dict())
    row["turnover"] = float(turnover.mean()) if len(turnover) else float("nan")
    return row, per_date


def _differences(series: dict[str, dict], kinds: dict[str, str], overlap: int) -> pd.DataFrame:
    """Paired-by-date tests of every model signal minus every baseline."""
    bases = [n for n, k in kinds.items() if k == "baseline"]
    rows = {}
    for name in (n for n, k in kinds.items() if k != "baseline"):
        for base in bases:
            rows[(name, base)] = {}
            for stat in STATISTICS:
                diff = paired_difference(series[name][stat], series[base][stat])
                rows[(name, base)].update(_test_row(diff, stat, overlap))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if len(frame):
        frame.index = pd.MultiIndex.from_tuples(list(rows), names=["signal", "baseline"])
    return frame


def _spread_differences(summary: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with a ``<statistic>_vs_<baseline>_<field>`` column per difference test."""
    if not len(differences):
        return summary
    wide = differences.unstack("baseline")  # columns (<statistic>_<field>, baseline)
    bases = differences.index.get_level_values("baseline").unique()
    order = [(f"{s}_{f}", b) for s in STATISTICS for b in bases for f in TEST_FIELDS]
    wide = wide[order]
    wide.columns = [f"{c.rsplit('_', 1)[0]}_vs_{b}_{c.rsplit('_', 1)[1]}" for c, b in order]
    return summary.join(wide)


def rebalance_spacing(index: pd.MultiIndex, panel: pd.DataFrame) -> float | None:
    """Median number of panel dates between successive rebalance dates (None if < 2)."""
    calendar = pd.DatetimeIndex(panel.index.get_level_values("datetime").unique()).sort_values()
    used = pd.DatetimeIndex(index.get_level_values("datetime").unique()).sort_values()
    if len(used) < 2:
        return None
    return float(np.median(np.diff(calendar.get_indexer(used))))


def _overlap_note(spacing: float | None, horizon: int) -> str | None:
    if spacing is not None and spacing < horizon:
        return (f"rebalance dates are ~{spacing:g} bars apart but the horizon is {horizon} bars: "
                f"forward returns overlap, so standard errors are Newey–West with a lag "
                f"covering {overlap_lags(horizon, spacing)} overlapping dates (they still "
                f"understate the uncertainty somewhat; see docs/statistics.md)")
    return None


def evaluate(scores: pd.Series | pd.DataFrame, panel: pd.DataFrame, *, horizon: int,
             baselines: bool = True, momentum_window: int = 20, reversal_window: int = 5,
             quantiles: int = 5, top_k: int | None = None, log: bool = False,
             min_instruments: int = 3, execution: str = DEFAULT_EXECUTION) -> Evaluation:
    """IC, RankIC, hit rate, quantile returns and turnover of each score column, each mean
    with its Newey–West standard error and p-value, and paired tests against the baselines
    (see module docs).

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
    spacing = rebalance_spacing(frame.index, panel)
    overlap = overlap_lags(int(horizon), spacing or float(horizon))
    rows, series = {}, {}
    for name in frame.columns:
        rows[name], series[name] = _signal_summary(frame[name], fwd, quantiles=int(quantiles),
                                                   top_k=k, min_instruments=min_instruments,
                                                   overlap=overlap)
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.insert(0, "kind", pd.Series(kinds))
    summary.index.name = "signal"
    differences = _differences(series, kinds, overlap)
    summary = _spread_differences(summary, differences)
    notes = _notes(frame, fwd, spacing, horizon=horizon, min_instruments=min_instruments, k=k)
    mismatch = _horizon_note(metadata, horizon)
    if mismatch:
        logger.warning("evaluate: %s", mismatch)
        notes.insert(0, mismatch)
    pick = lambda key: pd.DataFrame({n: s[key] for n, s in series.items()})  # noqa: E731
    qret = summary[[f"q{q}" for q in range(1, quantiles + 1)]]
    return Evaluation(int(horizon), summary, pick("ic"), pick("rank_ic"), qret,
                      pick("long_short"), pick("turnover"), notes, execution, metadata,
                      differences, overlap)


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


def _notes(frame: pd.DataFrame, fwd: pd.Series, spacing: float | None, *, horizon: int,
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
    overlap = _overlap_note(spacing, horizon)
    if overlap:
        notes.append(overlap)
    notes.append(f"turnover of the top-{k} set per rebalance (default: the top quantile's size; "
                 f"top_k / --top-k sets the number you hold)")
    return notes
