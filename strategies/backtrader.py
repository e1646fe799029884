"""``KronosStrategy``: a drop-in backtrader strategy trading Kronos scores.

Two modes, one strategy:

* **precomputed** (``predictor=None``): scores arrive on the feeds' signal lines (see
  :func:`kronos_quant.adapters.backtrader.feeds`); no model runs in the loop.
* **live inference** (``predictor=`` a :class:`~kronos_quant.predictor.KronosPredictor`):
  every ``rebalance`` bars, each data's last ``lookback`` bars seen so far are forecast in one
  batch through :func:`kronos_quant.signals.forecast_panel`, the code path of
  :func:`~kronos_quant.signals.score_panel` (same per-window seeds, same future stamps), so
  both modes give identical scores for the same settings.

Either way a rebalance at bar t turns the scores into weights with
:func:`kronos_quant.portfolio.target_weights` and trades them under the execution convention
(:mod:`kronos_quant.execution`): by default at the open of bar t+1 through backtrader's
cheat-on-open hook, with every order sized at the price it fills at (as vectorbt's
target-percent orders are) and sells sent before buys, so the same scores give the same
holdings as :func:`kronos_quant.adapters.vectorbt.backtest`.

backtrader is imported lazily: ``KronosStrategy`` and ``BuyAndHold`` are built on first
access (``pip install "kronos-quant[backtrader]"``).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..adapters import require_engine
from ..adapters.backtrader import (
    BAR_VALUES_NAME,
    PYFOLIO_NAME,
    bar_values,
    feeds,
    returns,
    score_frame,
)
from ..data import INDEX_NAMES, validate_panel
from ..execution import DEFAULT_EXECUTION, check_execution, execution_lag, execution_price
from ..portfolio import target_weights
from ..signals import forecast_panel

logger = logging.getLogger(__name__)

__all__ = ["KronosStrategy", "BuyAndHold",  # noqa: F822 (provided by the module __getattr__)
           "BacktraderRun", "run", "cerebro_for", "stop_returns", "weight_lines", "PARAMS"]

# (name, default, meaning): the one list behind the strategy's params and its docstring.
PARAMS: tuple[tuple[str, Any, str], ...] = (
    ("predictor", None, "KronosPredictor for live inference; None reads the signal lines"),
    ("scorer", "expected_return", "scorer (live) or signal line (precomputed) ranked on"),
    ("lookback", 64, "context bars per forecast (live)"),
    ("pred_len", 5, "bars forecast (live)"),
    ("sample_count", 16, "Monte Carlo paths per forecast (live)"),
    ("seed", 0, "base seed; each window's seed comes from (seed, instrument, date)"),
    ("T", 1.0, "sampling temperature (live)"),
    ("top_k", 0, "top-k sampling filter, 0 = off (live)"),
    ("top_p", 0.9, "nucleus sampling filter (live)"),
    ("score_options", None, "dict of further forecast_panel options, e.g. calendar (live)"),
    ("rebalance", 5, "rebalance every k bars from the first; None: every bar with a score "
                     "(precomputed only)"),
    ("method", "topk", "target_weights method: topk, rank, proportional, threshold, long_short"),
    ("topk", None, "names per leg"),
    ("n_drop", None, "Qlib TopkDropout: at most n_drop swaps per rebalance"),
    ("long_short", False, "long and short legs, net 0"),
    ("max_weight", None, "cap on each |weight|"),
    ("gross", 1.0, "sum of |weights|"),
    ("min_score", None, "long names need score >= min_score"),
    ("threshold", None, "threshold(s) for method='threshold'"),
    ("stop_quantile", None, "protective stop for longs at this quantile of the forecast lowest "
                            "close (live), or from the 'stop_return' line (precomputed)"),
    ("execution", DEFAULT_EXECUTION, "next_open (default), next_close or same_close"),
    ("as_weights", False, "the scorer line holds target weights (target_weights output) to "
                          "trade as they are (precomputed only)"),
)
WEIGHT_LINE = "target_weight"
STOP_LINE = "stop_return"
# An order smaller than this fraction of portfolio value is float noise, not a trade.
_DUST = 1e-12
# Buys are trimmed by this fraction when they would exhaust cash exactly, so float rounding
# never makes backtrader reject them for margin (vectorbt fills such buys partially).
_CASH_GUARD = 1e-9


def stop_returns(forecasts, quantile: float) -> pd.Series:
    """Per window, the ``quantile`` of the lowest forecast close over the horizon relative to
    the last close, minus 1 (a negative return): the ``stop_return`` line for precomputed
    mode, from :func:`kronos_quant.signals.forecast_panel` output."""
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"stop_quantile must lie in (0, 1), got {quantile!r}")
    batch = forecasts.batch
    lowest = batch.paths[..., 3].min(axis=2)  # (N, S) close column, min over the horizon
    level = np.quantile(lowest, float(quantile), axis=1) / batch.last_close - 1.0  # (N,)
    return pd.Series(level, index=forecasts.keys, name=STOP_LINE)


class KronosLogic:
    """What ``KronosStrategy`` does; backtrader's ``Strategy`` supplies the machinery."""

    def __init__(self) -> None:
        p = self.p
        self._price = execution_price(check_execution(p.execution))
        self._lag = execution_lag(p.execution)
        self._bar = 0  # strategy bars seen, counted by next()
        self._due: list[tuple[int, pd.Series, pd.Series]] = []  # (bar, weights, stop returns)
        self._history: list[pd.Series] = []  # scores of each rebalance so far
        self._stops: dict[Any, Any] = {}
        self.fills: list[dict[str, Any]] = []
        self.decisions: list[tuple[pd.Timestamp, pd.Series]] = []

    # -- checks ---------------------------------------------------------------------------
    def start(self) -> None:
        p = self.p
        if self._price == "open" and not self.cerebro.p.cheat_on_open:
            raise ValueError(f"execution={p.execution!r} trades at the next open: build the "
                             "Cerebro with cheat_on_open=True (or use strategies.backtrader.run)")
        if self._price == "close" and not self.broker.p.coc:
            raise ValueError(f"execution={p.execution!r} trades at a close: call "
                             "cerebro.broker.set_coc(True) (or use strategies.backtrader.run)")
        if p.rebalance is not None and (not isinstance(p.rebalance, (int, np.integer))
                                        or p.rebalance < 1):
            raise ValueError(f"rebalance must be an integer >= 1 or None, got {p.rebalance!r}")
        if p.predictor is None:
            lines = [n for n in getattr(self.datas[0], "signal_lines", ())]
            if p.scorer not in lines:
                raise ValueError(f"scorer {p.scorer!r} is not a signal line of the feeds "
                                 f"(lines: {lines}); build them with adapters.backtrader.feeds("
                                 "panel, scores) or pass predictor= for live inference")
            if p.stop_quantile is not None and STOP_LINE not in lines:
                raise ValueError(f"stop_quantile in precomputed mode needs a {STOP_LINE!r} "
                                 "signal line (see stop_returns)")
        elif p.rebalance is None or p.as_weights:
            raise ValueError("live inference needs an integer rebalance and scores, not weights")

    # -- the bar loop ---------------------------------------------------------------------
    def prenext_open(self) -> None:
        self.next_open()

    def next_open(self) -> None:
        if self._price == "open":
            self._execute_due(self._bar + 1)

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        self._bar += 1
        if self._price == "close":
            self._execute_due(self._bar)
        if self.p.rebalance is None or (self._bar - 1) % self.p.rebalance == 0:
            self._decide()
            if self._lag == 0:
                self._execute_due(self._bar)

    def _now(self) -> list[Any]:
        """Datas with a bar at the current step (in the open hook the strategy's own clock
        still shows the previous bar, so the step is the latest data stamp)."""
        live = [d for d in self.datas if len(d)]
        step = max(d.datetime[0] for d in live)
        return [d for d in live if d.datetime[0] == step]

    @staticmethod
    def _stamp(data) -> pd.Timestamp:
        return data.p.dataname.index[len(data) - 1]

    def _decide(self) -> None:
        scores, stops = (self._precomputed() if self.p.predictor is None else self._live())
        scores = scores.dropna()
        if scores.empty:
            return
        self._history.append(scores)
        when = scores.index[0][0]
        if self.p.as_weights:
            weights = scores.droplevel("datetime")
        else:
            # Only TopkDropout depends on earlier dates (its holdings); other methods read one.
            history = self._history if self.p.n_drop is not None else self._history[-1:]
            weights = self._weights(pd.concat(history)).iloc[-1]
        self.decisions.append((when, weights))
        self._due.append((self._bar + self._lag, weights, stops))

    def _weights(self, scores: pd.Series) -> pd.DataFrame:
        p = self.p
        return target_weights(scores, method=p.method, topk=p.topk, n_drop=p.n_drop,
                              long_short=p.long_short, max_weight=p.max_weight, gross=p.gross,
                              min_score=p.min_score, threshold=p.threshold)

    def _precomputed(self) -> tuple[pd.Series, pd.Series]:
        now = self._now()
        when = self._stamp(now[0])  # every data in ``now`` has its bar at this stamp
        keys = pd.MultiIndex.from_arrays([pd.DatetimeIndex([when] * len(now)),
                                          [d._name for d in now]], names=list(INDEX_NAMES))
        scores = pd.Series([getattr(d.lines, self.p.scorer)[0] for d in now], index=keys,
                           name=self.p.scorer, dtype=np.float64)
        stops = (pd.Series([getattr(d.lines, STOP_LINE)[0] for d in now], index=keys)
                 if self.p.stop_quantile is not None else pd.Series(dtype=np.float64))
        return scores, stops

    def _live(self) -> tuple[pd.Series, pd.Series]:
        p = self.p
        ready = [d for d in self._now() if len(d) >= p.lookback]
        if not ready:
            return pd.Series(dtype=np.float64), pd.Series(dtype=np.float64)
        columns = list(ready[0].bar_columns)
        parts = {d._name: d.p.dataname.iloc[len(d) - p.lookback:len(d)][columns] for d in ready}
        window = pd.concat(parts, names=[INDEX_NAMES[1], INDEX_NAMES[0]])
        window = window.swaplevel().sort_index()
        when = self._stamp(ready[0])
        fc = forecast_panel(p.predictor, window, lookback=p.lookback, pred_len=p.pred_len,
                            sample_count=p.sample_count, freq=1, start=when, end=when,
                            seed=p.seed, T=p.T, top_k=p.top_k, top_p=p.top_p, verbose=False,
                            **(p.score_options or {}))
        scores = fc.score([p.scorer])[p.scorer]
        stops = (stop_returns(fc, p.stop_quantile) if p.stop_quantile is not None
                 else pd.Series(dtype=np.float64))
        return scores, stops

    # -- orders ---------------------------------------------------------------------------
    def _execute_due(self, bar: int) -> None:
        while self._due and self._due[0][0] <= bar:
            _, weights, stops = self._due.pop(0)
            self._rebalance(weights, stops)

    def _rebalance(self, weights: pd.Series, stops: pd.Series) -> None:
        """Trade to ``weights`` at this bar's execution price, as vectorbt's target-percent
        orders do: value = cash + positions at that price, fixed for the bar (fees do not
        shrink later targets); orders by increasing value (sells first, ``call_seq="auto"``);
        a buy that cash cannot cover is cut to what it can (vectorbt's partial fill)."""
        for order in self._stops.values():
            self.cancel(order)
        self._stops.clear()
        now = self._now()
        price = {d: getattr(d, self._price)[0] for d in now}
        held = {d: self.getposition(d).size for d in self.datas}
        cash = self.broker.getcash()
        slip = self.broker.p.slip_perc  # buys fill this much above the sizing price
        value = cash + sum(size * (price[d] if d in price else d.close[0])
                           for d, size in held.items())
        target = {d: float(weights.get(d._name, 0.0)) for d in now}
        order_value = [target[d] * value - held[d] * price[d] for d in now]
        for i in np.argsort(order_value, kind="stable"):
            d = now[i]
            size = target[d] * value / price[d] - held[d]
            if abs(size * price[d]) <= _DUST * abs(value):
                continue
            fill = price[d] * (1 + slip if size > 0 else 1 - slip)
            rate = self.broker.getcommissioninfo(d).getcommission(1.0, fill) / fill
            budget = cash * (1 - _CASH_GUARD)
            if size > 0 and size * fill * (1 + rate) > budget:
                size = max(budget / (fill * (1 + rate)), 0.0)
            cash -= size * fill + abs(size) * fill * rate
            (self.buy if size > 0 else self.sell)(data=d, size=abs(size))
        self._place_stops(now, target, value, price, stops)

    def _place_stops(self, now, target, value, price, stops: pd.Series) -> None:
        if self.p.stop_quantile is None or stops.empty:
            return
        bt = require_engine("backtrader")
        level = stops.droplevel("datetime")
        for d in now:
            if target[d] > 0 and np.isfinite(level.get(d._name, np.nan)):
                stop = d.close[-self._lag] * (1.0 + level[d._name])  # the signal bar's close
                self._stops[d] = self.sell(data=d, size=target[d] * value / price[d],
                                           exectype=bt.Order.Stop, price=stop)

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            when = self._fill_stamp(order)
            self.fills.append({"datetime": when, "instrument": order.data._name,
                               "size": order.executed.size, "price": order.executed.price})
            logger.debug("%s %s %+.6g @ %.6g", when, order.data._name, order.executed.size,
                         order.executed.price)
        elif order.status in (order.Margin, order.Rejected):
            logger.warning("order %s for %s %+.6g: %s", order.ref, order.data._name, order.size,
                           order.getstatusname())
        elif order.status in (order.Canceled, order.Expired):
            logger.debug("order %s for %s %s", order.ref, order.data._name,
                         order.getstatusname())

    @staticmethod
    def _fill_stamp(order) -> pd.Timestamp:
        """The bar an order filled on: cheat-on-close fills are booked one bar later at the
        previous bar's close, with that bar's stamp."""
        data = order.data
        for ago in range(min(len(data), 3)):
            if data.datetime[-ago] == order.executed.dt:
                return data.p.dataname.index[len(data) - 1 - ago]
        raise RuntimeError(f"order {order.ref} filled outside the last bars of {data._name}")

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            logger.debug("trade closed %s: pnl %.6g, net %.6g", trade.data._name, trade.pnl,
                         trade.pnlcomm)

    def score_history(self) -> pd.DataFrame:
        """Every rebalance's scores so far, indexed like ``score_panel``'s output."""
        if not self._history:
            return pd.DataFrame(columns=[self.p.scorer], dtype=np.float64)
        return pd.concat(self._history).to_frame(self.p.scorer).sort_index()


def _strategy_doc() -> str:
    rows = "\n".join(f"    {name} (default {default!r})\n        {text}" for name, default, text
                     in PARAMS)
    return ("Kronos scores → target weights → orders, in backtrader (see the module docs).\n\n"
            "Use ``cerebro.addstrategy(KronosStrategy, **params)`` with\n"
            "``Cerebro(cheat_on_open=True)`` for the default next-open execution.\n\n"
            f"Parameters\n----------\n{rows}\n\nAfter a run: ``fills`` (every executed order: "
            "datetime, instrument, size, price), ``decisions`` (signal date, weights) and "
            "``score_history()``.\n")


@functools.cache
def _classes() -> dict[str, type]:
    bt = require_engine("backtrader")
    strategy = type("KronosStrategy", (KronosLogic, bt.Strategy),
                    {"params": tuple((name, default) for name, default, _ in PARAMS),
                     "__doc__": _strategy_doc(), "__module__": __name__})
    return {"KronosStrategy": strategy,
            "BuyAndHold": type("BuyAndHold", (BuyAndHoldLogic, bt.Strategy),
                               {"__doc__": BuyAndHoldLogic.__doc__, "__module__": __name__})}


class BuyAndHoldLogic:
    """Equal-value buy-and-hold of every data from the second bar's open (the first bar a
    score made at the first close could trade); the yardstick for ``KronosStrategy``."""

    def __init__(self) -> None:
        self._bought = False

    def next_open(self) -> None:
        live = [d for d in self.datas if len(d) > 1]
        if self._bought or not live:
            return
        self._bought = True
        budget = self.broker.getcash() * (1 - _CASH_GUARD) / len(live)
        for d in live:
            rate = self.broker.getcommissioninfo(d).getcommission(1.0, d.open[0]) / d.open[0]
            self.buy(data=d, size=budget / (d.open[0] * (1 + rate)))


def __getattr__(name: str) -> type:
    if name in ("KronosStrategy", "BuyAndHold"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def weight_lines(weights: pd.DataFrame) -> pd.Series:
    """A weight frame (rebalance dates × instruments) as the ``target_weight`` line values."""
    if not isinstance(weights, pd.DataFrame) or not isinstance(weights.index, pd.DatetimeIndex):
        raise TypeError("weights must be a DataFrame indexed by rebalance datetimes with one "
                        "column per instrument (target_weights output)")
    if weights.isna().to_numpy().any():
        raise ValueError("weights contain NaN; use 0 for instruments not held")
    stacked = weights.astype(np.float64).stack()
    stacked.index = stacked.index.set_names(list(INDEX_NAMES))
    return stacked.rename(WEIGHT_LINE)


class BacktraderRun(NamedTuple):
    """What :func:`run` returns: the finished strategy (with its analyzers), its per-bar
    returns (tz-naive) and the Cerebro (for :func:`kronos_quant.adapters.backtrader.plot`)."""

    result: Any
    returns: pd.Series
    cerebro: Any


def cerebro_for(panel: pd.DataFrame, *, scores: pd.Series | pd.DataFrame | None = None,
                cash: float = 1_000_000.0, commission: float = 0.0, slippage: float = 0.0,
                execution: str = DEFAULT_EXECUTION, stdstats: bool = True):
    """A Cerebro with the panel's feeds (and score lines), the broker set up for
    ``execution`` (cheat-on-open for next_open, cheat-on-close for the close conventions),
    commission and slippage as fractions of the price (slippage as vectorbt applies it: buys
    at price × (1 + s), sells at price × (1 − s), not capped by the bar's range), and the
    analyzers ``sharpe``, ``drawdown``, ``returns``, ``trades``, ``pyfolio`` and
    ``bar_values`` (the portfolio value after every bar: per-bar returns)."""
    bt = require_engine("backtrader")
    price = execution_price(execution)
    if not np.isfinite(cash) or cash <= 0:
        raise ValueError(f"cash must be a positive number, got {cash!r}")
    for name, value in (("commission", commission), ("slippage", slippage)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")
    cerebro = bt.Cerebro(cheat_on_open=price == "open", stdstats=stdstats)
    cerebro.broker.set_coc(price == "close")
    cerebro.broker.setcash(float(cash))
    cerebro.broker.setcommission(commission=float(commission))
    if slippage:
        cerebro.broker.set_slippage_perc(float(slippage), slip_open=True, slip_limit=True,
                                         slip_match=True, slip_out=True)
    for data in feeds(panel, scores):
        cerebro.adddata(data, name=data._name)
    # backtrader's own ratio (daily, whole run); risk-free 0 and the sample deviation as in
    # kronos_quant.metrics, whose Sharpe (from the first rebalance on) is the one we report.
    cerebro.addanalyzer(bt.analyzers.SharpeRatio, _name="sharpe", timeframe=bt.TimeFrame.Days,
                        annualize=True, riskfreerate=0.0, stddev_sample=True)
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
    cerebro.addanalyzer(bt.analyzers.Returns, _name="returns")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    cerebro.addanalyzer(bt.analyzers.PyFolio, _name=PYFOLIO_NAME)
    cerebro.addanalyzer(bar_values(), _name=BAR_VALUES_NAME)
    return cerebro


def run(panel: pd.DataFrame, *, scores: pd.Series | pd.DataFrame | None = None,
        predictor=None, weights: pd.DataFrame | None = None, cash: float = 1_000_000.0,
        commission: float = 0.0, slippage: float = 0.0, execution: str = DEFAULT_EXECUTION,
        stdstats: bool = True, **params: Any) -> BacktraderRun:
    """Backtest Kronos scores (precomputed) or a predictor (live inference) in backtrader.

    Parameters
    ----------
    panel
        Canonical panel; one data feed per instrument.
    scores
        Score Series/DataFrame indexed by ("datetime", "instrument") for precomputed mode;
        a single column is ranked on unless ``scorer=`` names another.
    predictor
        A KronosPredictor for live inference (then ``scores`` is not needed).
    weights
        Target weights to trade as they are instead (rebalance dates × instruments, e.g.
        :func:`kronos_quant.portfolio.target_weights` output); each row is a rebalance.
    cash, commission, slippage
        Starting cash; proportional commission and slippage per trade (0.001 = 10 bp).
    execution
        Execution convention (:mod:`kronos_quant.execution`).
    stdstats
        backtrader's standard observers (cash/value, trades, buy/sell marks for plots).
    **params
        Any :data:`PARAMS` of ``KronosStrategy`` (rebalance, method, topk, ...).
    """
    if sum(x is not None for x in (scores, predictor, weights)) != 1:
        raise ValueError("give exactly one of scores= (precomputed), predictor= (live) or "
                         "weights=")
    panel = validate_panel(panel)
    if weights is not None:
        scores = weight_lines(weights)
        off_bar = ~scores.index.isin(panel.index)  # names without a bar that day cannot trade
        if (scores[off_bar] != 0).any():
            logger.warning("%d nonzero weight(s) on dates where the instrument has no bar: "
                           "not traded", int((scores[off_bar] != 0).sum()))
        scores = scores[~off_bar]
        params.update(scorer=WEIGHT_LINE, as_weights=True, rebalance=None)
    if scores is not None and "scorer" not in params:
        ranked = [c for c in score_frame(scores).columns if c != STOP_LINE]
        if len(ranked) != 1:
            raise ValueError(f"scores have columns {ranked}: pick one with scorer=")
        params["scorer"] = ranked[0]
    unknown = sorted(set(params) - {name for name, _, _ in PARAMS})
    if unknown:
        raise TypeError(f"unknown KronosStrategy parameter(s) {unknown}")
    cerebro = cerebro_for(panel, scores=scores, cash=cash, commission=commission,
                          slippage=slippage, execution=execution, stdstats=stdstats)
    cerebro.addstrategy(_classes()["KronosStrategy"], predictor=predictor, execution=execution,
                        **params)
    strategy = cerebro.run()[0]
    return BacktraderRun(strategy, returns(strategy), cerebro)
