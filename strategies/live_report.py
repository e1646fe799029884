"""What a live (or paper) run did, read back from its ledger: equity, PnL, hit rate, tear sheet."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import periods_per_year
from ..execution import execution_returns
from ..metrics import Metrics, backtest_metrics
from .ledger import Ledger, from_ms


@dataclass
class LiveReport:
    equity: pd.Series  # per decided candle time (naive UTC)
    initial_cash: float
    decisions: int
    orders: int
    fills: int
    fees: float
    hits: int
    calls: int  # decisions with a non-zero target whose next-bar return is known

    @property
    def pnl(self) -> float:
        return float(self.equity.iloc[-1] - self.initial_cash) if len(self.equity) else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.calls if self.calls else float("nan")

    def metrics(self, periods_per_year: float) -> Metrics:
        """:func:`kronos_quant.metrics.backtest_metrics` of the equity marks against the
        starting cash (annualised figures withheld for a short run)."""
        if not len(self.equity):
            raise ValueError("the ledger has no equity mark yet")
        initial = self.initial_cash if self.initial_cash > 0 else None  # unknown: first mark
        return backtest_metrics(self.equity, initial=initial, periods_per_year=periods_per_year)

    def lines(self, *, periods_per_year: float | None = None) -> list[str]:
        """The report as text; with ``periods_per_year``, also the result metrics."""
        last = float(self.equity.iloc[-1]) if len(self.equity) else self.initial_cash
        span = (f"{self.equity.index[0]} … {self.equity.index[-1]}" if len(self.equity) else "-")
        rate = hit_rate_text(self.hits, self.calls)
        out = [f"decisions: {self.decisions} on {len(self.equity)} candle times ({span})",
               f"equity: {last:,.2f} (start {self.initial_cash:,.2f})",
               f"PnL: {self.pnl:+,.2f} ({self.pnl / self.initial_cash:+.2%}), "
               f"fees {self.fees:,.2f}",
               f"orders: {self.orders}, fills: {self.fills}",
               f"hit rate (held direction vs next-open → open return): {rate}"]
        if periods_per_year is not None and len(self.equity):
            out += self.metrics(periods_per_year).lines()[1:]  # the span is said above
        return out


def hit_rate_text(hits: int, calls: int) -> str:
    """The hit rate with its uncertainty: a 95% Wilson interval and the two-sided binomial
    p-value against a coin (50%), which assume independent calls."""
    if not calls:
        return "n/a"
    from scipy import stats

    test = stats.binomtest(hits, calls, 0.5)
    ci = test.proportion_ci(0.95, method="wilson")
    return (f"{hits / calls:.1%} ({hits}/{calls}; 95% CI {ci.low:.1%}–{ci.high:.1%}, "
            f"p = {test.pvalue:.2g} against 50%)")


def hit_counts(decisions: pd.DataFrame, candles: pd.DataFrame) -> tuple[int, int]:
    """(hits, calls): non-zero targets whose sign matched the next bar's execution return.

    The return is :func:`kronos_quant.execution.execution_returns` with ``next_open`` and a
    horizon of one bar, the convention the paper broker fills at.
    """
    if decisions.empty or candles.empty:
        return 0, 0
    panel = candles.assign(datetime=candles["ts"].map(from_ms), instrument=candles["symbol"])
    panel = panel.set_index(["datetime", "instrument"]).sort_index()
    panel = panel[["open", "high", "low", "close", "volume", "amount"]].astype(float)
    fwd = execution_returns(panel, horizon=1, execution="next_open")
    keys = pd.MultiIndex.from_arrays([decisions["ts"].map(from_ms), decisions["symbol"]],
                                     names=["datetime", "instrument"])
    realised = fwd.reindex(keys).to_numpy()
    weight = decisions["target_weight"].to_numpy()
    called = (weight != 0) & np.isfinite(realised)
    return int((np.sign(weight[called]) == np.sign(realised[called])).sum()), int(called.sum())


def live_report(ledger: Ledger) -> LiveReport:
    """Summarise the ledger of one state folder."""
    meta = ledger.meta()
    equity = ledger.table("equity")
    series = pd.Series(equity["equity"].to_numpy(float),
                       index=pd.DatetimeIndex(equity["ts"].map(from_ms), name="datetime"),
                       name="equity").sort_index()
    decisions, fills = ledger.table("decisions"), ledger.table("fills")
    hits, calls = hit_counts(decisions, ledger.table("candles"))
    return LiveReport(series, float(meta.get("initial_cash", 0.0)), len(decisions),
                      len(ledger.table("orders")), len(fills), float(fills["fee"].sum()),
                      hits, calls)


def write_tearsheet(report: LiveReport, path: str | Path, *, title: str,
                    timeframe_seconds: float | None = None, periods: int | None = None) -> Path:
    """The QuantStats HTML tear sheet of the equity curve's bar returns (the first against
    the starting cash) with the :meth:`LiveReport.metrics` headline, annualised with
    ``periods`` bars per year (e.g. :func:`kronos_quant.data.periods_per_year` of the equity's
    stamps) or, for a 24/7 market, with the bars per year of the bar length
    ``timeframe_seconds``."""
    from ..adapters.quantstats import tearsheet

    if (timeframe_seconds is None) == (periods is None):
        raise ValueError("give timeframe_seconds (a 24/7 market) or periods (bars per year)")
    if len(report.equity) < 2:
        raise ValueError(f"the ledger has {len(report.equity)} equity marks; a tear sheet needs "
                         "at least 2 decided candles")
    ppy = periods if periods is not None else periods_per_year(bar_seconds=timeframe_seconds)
    metrics = report.metrics(ppy)
    base = report.initial_cash if report.initial_cash > 0 else np.nan
    returns = (report.equity / report.equity.shift(1, fill_value=base) - 1.0).dropna()
    return tearsheet(returns, title=title, output=path, periods_per_year=ppy, metrics=metrics)
