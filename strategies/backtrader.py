"""``KronosStrategy``: a drop-in backtrader strategy trading Kronos scores.

Two modes, one strategy:

* **precomputed** (``predictor=None``): scores arrive on the feeds' signal lines (see
  :func:`kronos_quant.adapters.backtrader.feeds`); no model runs in the loop.
* **live inference** (``predictor=`` a :class:`~kronos_quant.predictor.KronosPredictor`):
  every ``rebalance`` bars, each data's last ``lookback`` bars seen so far are forecast in one
  batch through :func:`kronos_quant.signals.forecast_panel`, the code path of
  :func:`~kronos_quant.signals.score_panel` (same per-window seeds, same future stamps), so
  both modes give identical scores for the same settings.

Either way the trading terms come from one :class:`~kronos_quant.tradespec.TradeSpec`
(``spec=`` plus term params on top), a rebalance at bar t turns the scores into weights with
:func:`kronos_quant.portfolio.target_weights` and trades them under the execution convention
(:mod:`kronos_quant.execution`): every order is sent in backtrader's cheat-on-open hook of
the execution bar and fills there, at the open (``next_open``) or, flagged cheat-on-close, at
the bar's close (``next_close``, ``same_close``, delisting sales); every order is sized at the
price it fills at (as vectorbt's target-percent orders are), sells before buys, and names
that stop trading follow :class:`kronos_quant.orders.OrderRules`, so the same scores give the
same shares as :func:`kronos_quant.adapters.vectorbt.backtest` on every bar.

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
    STOP_LINE,
    add_return_analyzers,
    feeds,
    returns,
    score_frame,
    stop_returns,
)
from ..data import INDEX_NAMES, validate_panel
from ..orders import OrderRules
from ..portfolio import THIN_DATES, OnceFilter, align, check_against_spec, target_weights
from ..signals import forecast_panel
from ..tradespec import DEPRECATED_TERMS, TERMS, TradeSpec, resolve_spec

logger = logging.getLogger(__name__)

__all__ = ["KronosStrategy", "BuyAndHold",  # noqa: F822 (provided by the module __getattr__)
           "BacktraderRun", "run", "cerebro_for", "stop_returns", "PARAMS"]

# (name, default, meaning): the one list behind the strategy's params and its docstring.
# Trading terms default to None: "take it from spec" (a TradeSpec, default TradeSpec()).
PARAMS: tuple[tuple[str, Any, str], ...] = (
    ("spec", None, "TradeSpec with the trading terms (default TradeSpec()); the term params "
                   "below override it"),
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
    ("rebalance", None, "TradeSpec.rebalance: every k-th date with a score (precomputed) or "
                        "every k-th bar from the first (live)"),
    ("method", None, "TradeSpec.method: topk, rank, proportional, threshold, long_short, "
                     "conviction"),
    ("topk", None, "TradeSpec.topk: names per leg"),
    ("n_drop", None, "TradeSpec.n_drop: Qlib TopkDropout, at most n_drop swaps per rebalance"),
    ("long_short", None, "TradeSpec.long_short: long and short legs, net 0"),
    ("max_weight", None, "TradeSpec.max_weight: cap on each |weight|"),
    ("gross", None, "TradeSpec.gross: sum of |weights|"),
    ("min_score", None, "TradeSpec.min_score: long names need score >= min_score"),
    ("threshold", None, "TradeSpec.threshold: threshold(s) for method='threshold'"),
    ("invested", None, "TradeSpec.invested: share of equity the weights apply to"),
    ("execution", None, "TradeSpec.execution: next_open, next_close or same_close"),
    ("stop_quantile", None, "protective stop for longs at this quantile of the forecast lowest "
                            "close (live), or from the 'stop_return' line (precomputed)"),
    ("weights", None, "target weights (rebalance dates × instruments, target_weights output) "
                      "to trade as they are instead of scores"),
)
# Forecast options of live inference: meaningless (and refused by run) without a predictor.
LIVE_PARAMS = ("lookback", "pred_len", "sample_count", "seed", "T", "top_k", "top_p",
               "score_options")
STRATEGY_TERMS = ("rebalance", "method", "topk", "n_drop", "long_short", "max_weight", "gross",
                  "min_score", "threshold", "invested", "execution")
# An order smaller than this fraction of portfolio value is float noise, not a trade.
_DUST = 1e-12
# Buys are trimmed by this fraction when they would exhaust cash exactly, so float rounding
# never makes backtrader reject them for margin (vectorbt fills such buys partially).
_CASH_GUARD = 1e-9


class KronosLogic:
    """What ``KronosStrategy`` does; backtrader's ``Strategy`` supplies the machinery."""

    def __init__(self) -> None:
        p = self.p
        terms = {name: getattr(p, name) for name in STRATEGY_TERMS
                 if getattr(p, name) is not None}
        self.spec = resolve_spec(p.spec, terms, engine="backtrader")
        self._price, self._lag = self.spec.price, self.spec.lag
        self._bar = 0  # strategy steps seen, counted by the open hook
        self._score_dates = 0  # dates with a finite score seen (precomputed cadence)
        self._due: list[tuple[int, pd.Series, pd.Series]] = []  # (bar, weights, stop returns)
        self._history: list[pd.Series] = []  # scores of each rebalance so far
        self._stops: dict[Any, Any] = {}
        self._topk_note = OnceFilter(THIN_DATES)  # target_weights runs every rebalance
        self.fills: list[dict[str, Any]] = []
        self.decisions: list[tuple[pd.Timestamp, pd.Series]] = []

    # -- checks ---------------------------------------------------------------------------
    def start(self) -> None:
        p = self.p
        if not (self.cerebro.p.cheat_on_open and self.broker.p.coc):
            raise ValueError("KronosStrategy fills orders in the open hook, at the open or the "
                             "close of the bar: build the Cerebro with cheat_on_open=True and "
                             "call cerebro.broker.set_coc(True) (or use "
                             "strategies.backtrader.cerebro_for / run)")
        self._rules = OrderRules([d._name for d in self.datas])
        ends = [d.p.dataname.index[-1] for d in self.datas]
        self._ends, self._last = ends, max(ends)
        self._plan: dict[pd.Timestamp, pd.Series] = {}
        if p.weights is not None:
            if p.predictor is not None:
                raise ValueError("give weights= or predictor=, not both")
            calendar = pd.DatetimeIndex(sorted(set().union(*(d.p.dataname.index
                                                             for d in self.datas))))
            due = align(p.weights, calendar, execution=self.spec.execution, fill=False)
            self._plan = {when: row for when, row in due.dropna(how="all").iterrows()}
        elif p.predictor is None:
            lines = [n for n in getattr(self.datas[0], "signal_lines", ())]
            if p.scorer not in lines:
                raise ValueError(f"scorer {p.scorer!r} is not a signal line of the feeds "
                                 f"(lines: {lines}); build them with adapters.backtrader.feeds("
                                 "panel, scores) or pass predictor= for live inference")
            if p.stop_quantile is not None and STOP_LINE not in lines:
                raise ValueError(f"stop_quantile in precomputed mode needs a {STOP_LINE!r} "
                                 "signal line (see stop_returns)")

    # -- the bar loop ---------------------------------------------------------------------
    # Every order is sent in the open hook and filled in the same step: at the bar's open
    # (cheat-on-open) or, flagged coc, at its close (cheat-on-close), stamped with the bar.
    def prenext_open(self) -> None:
        self.next_open()

    def next_open(self) -> None:
        self._bar += 1
        if self._lag == 0:  # same_close: the bar's scores are loaded, decide before trading
            self._maybe_decide()
        self._step()

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        if self._lag == 1:
            self._maybe_decide()

    def _now(self) -> list[Any]:
        """Datas with a bar at the current step (in the open hook the strategy's own clock
        still shows the previous bar, so the step is the latest data stamp)."""
        live = [d for d in self.datas if len(d)]
        step = max(d.datetime[0] for d in live)
        return [d for d in live if d.datetime[0] == step]

    @staticmethod
    def _stamp(data) -> pd.Timestamp:
        return data.p.dataname.index[len(data) - 1]

    def _maybe_decide(self) -> None:
        p = self.p
        if p.weights is not None:
            return
        if p.predictor is not None:
            if (self._bar - 1) % self.spec.rebalance == 0:
                self._decide(*self._live())
            return
        scores, stops = self._precomputed()
        if scores.notna().any():  # a date without any score is no rebalance
            self._score_dates += 1
            if (self._score_dates - 1) % self.spec.rebalance == 0:
                self._decide(scores, stops)

    def _decide(self, scores: pd.Series, stops: pd.Series) -> None:
        scores = scores.dropna()
        if scores.empty:
            return
        self._history.append(scores)
        when = scores.index[0][0]
        # Only TopkDropout depends on earlier dates (its holdings); other methods read one.
        history = self._history if self.spec.n_drop is not None else self._history[-1:]
        weights = self._weights(pd.concat(history)).iloc[-1]
        self.decisions.append((when, weights))
        self._due.append((self._bar + self._lag, weights, stops))

    def _weights(self, scores: pd.Series) -> pd.DataFrame:
        portfolio_logger = logging.getLogger(target_weights.__module__)
        portfolio_logger.addFilter(self._topk_note)
        try:  # the history is already one row per rebalance
            return target_weights(scores, self.spec.replace(rebalance=1))
        finally:
            portfolio_logger.removeFilter(self._topk_note)

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
    def _step(self) -> None:
        """This bar's orders under the rules of :mod:`kronos_quant.orders`."""
        now = self._now()
        stamp = self._stamp(now[0])
        names = [d._name for d in self.datas]
        due, stops = self._plan.get(stamp), pd.Series(dtype=np.float64)
        while self._due and self._due[0][0] <= self._bar:
            _, due, stops = self._due.pop(0)
        if due is not None:
            due = due.reindex(names).fillna(0.0).to_numpy(np.float64)
            for order in self._stops.values():
                self.cancel(order)
            self._stops.clear()
        present = np.array([d in now for d in self.datas])
        final = np.array([end == stamp and end < self._last for end in self._ends])
        orders, at_close = self._rules.step(stamp, due, present, final)
        if not np.isnan(orders).all():
            self._send(orders, at_close, now, stops)

    def stop(self) -> None:  # backtrader's end-of-run hook
        self._rules.log_skipped()

    def _send(self, orders: np.ndarray, at_close: np.ndarray, now: list, stops: pd.Series
              ) -> None:
        """Trade to target weights ``orders`` (NaN: no order) as vectorbt's target-percent
        orders do: value = cash + positions at this bar's order prices (execution price, close
        for ``at_close``, last close without a bar), fixed for the bar; sells first (orders by
        increasing value); a buy cash cannot cover is cut to what it can."""
        close_fill = np.asarray(at_close) | (self._price == "close")
        price = {d: (d.close[0] if close_fill[i] else getattr(d, self._price)[0])
                 for i, d in enumerate(self.datas) if d in now}
        held = {d: self.getposition(d).size for d in self.datas}
        cash = self.broker.getcash()
        slip = self.broker.p.slip_perc  # buys fill this much above the sizing price
        value = cash + sum(size * price.get(d, d.close[0]) for d, size in held.items())
        sent = [i for i in np.flatnonzero(~np.isnan(orders))]
        order_value = [orders[i] * value - held[self.datas[i]] * price[self.datas[i]]
                       for i in sent]
        # Orders worth the same up to float noise (a dust position left by rounding) go in
        # name order, as vectorbt's stable sort puts equal ones: it decides which buy cash cuts.
        key = np.round(np.asarray(order_value) / abs(value), 9) if value else order_value
        for k in np.argsort(key, kind="stable"):
            i = sent[k]
            d = self.datas[i]
            size = orders[i] * value / price[d] - held[d]
            if abs(size * price[d]) <= _DUST * abs(value):
                continue
            fill = price[d] * (1 + slip if size > 0 else 1 - slip)
            rate = self.broker.getcommissioninfo(d).getcommission(1.0, fill) / fill
            budget = cash * (1 - _CASH_GUARD)
            if size > 0 and size * fill * (1 + rate) > budget:
                size = max(budget / (fill * (1 + rate)), 0.0)
            cash -= size * fill + abs(size) * fill * rate
            (self.buy if size > 0 else self.sell)(data=d, size=abs(size),
                                                  coc=bool(close_fill[i]))
        target = {d: float(np.nan_to_num(orders[i])) for i, d in enumerate(self.datas)
                  if d in now}
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
        """The bar an order filled on (orders fill in the step they are sent, so this is the
        data's current bar; stop orders too)."""
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
            self.buy(data=d, size=budget / (d.open[0] * (1 + rate)), coc=False)  # at the open


def __getattr__(name: str) -> type:
    if name in ("KronosStrategy", "BuyAndHold"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BacktraderRun(NamedTuple):
    """What :func:`run` returns: the finished strategy (with its analyzers), its per-bar
    returns (tz-naive) and the Cerebro (for :func:`kronos_quant.adapters.backtrader.plot`)."""

    result: Any
    returns: pd.Series
    cerebro: Any


def cerebro_for(panel: pd.DataFrame, spec: TradeSpec | None = None, *,
                scores: pd.Series | pd.DataFrame | None = None, stdstats: bool = True,
                **terms: Any):
    """A Cerebro with the panel's feeds (and score lines), the broker set up from ``spec``
    (default ``TradeSpec()``; keyword ``terms`` override it, ``commission`` is the deprecated
    name of ``fees``): ``cash``, ``fees`` and ``slippage`` as fractions of the price (slippage
    as vectorbt applies it: buys at price × (1 + s), sells at price × (1 − s), not capped by
    the bar's range), cheat-on-open and cheat-on-close both on (``KronosStrategy`` sends its
    orders in the open hook and flags which fill at the close), and the analyzers ``sharpe``,
    ``drawdown``, ``returns``, ``trades``, ``pyfolio``, ``bar_values`` (per-bar values)."""
    bt = require_engine("backtrader")
    spec = resolve_spec(spec, terms, engine="backtrader")
    cerebro = bt.Cerebro(cheat_on_open=True, stdstats=stdstats)
    cerebro.broker.set_coc(True)
    # backtrader's submission check prices every market order at the open under
    # cheat-on-open, also those that fill at the close; orders are sized to the cash here.
    cerebro.broker.set_checksubmit(False)
    cerebro.broker.setcash(spec.cash)
    cerebro.broker.setcommission(commission=spec.fees)
    if spec.slippage:
        cerebro.broker.set_slippage_perc(spec.slippage, slip_open=True, slip_limit=True,
                                         slip_match=True, slip_out=True)
    for data in feeds(panel, scores):
        cerebro.adddata(data, name=data._name)
    cerebro.addanalyzer(bt.analyzers.SharpeRatio, _name="sharpe", timeframe=bt.TimeFrame.Days,
                        annualize=True, riskfreerate=0.0, stddev_sample=True)
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
    cerebro.addanalyzer(bt.analyzers.Returns, _name="returns")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    add_return_analyzers(cerebro)
    return cerebro


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options → (trading terms for the spec, other KronosStrategy params)."""
    strategy = {name for name, _, _ in PARAMS} - set(STRATEGY_TERMS)
    terms = {k: v for k, v in options.items() if k not in strategy}
    unknown = sorted(set(terms) - set(TERMS) - set(DEPRECATED_TERMS))
    if unknown:
        raise TypeError(f"unknown KronosStrategy parameter(s) {unknown}; trading terms are "
                        f"{list(TERMS)}, strategy params {sorted(strategy)}")
    return terms, {k: v for k, v in options.items() if k in strategy}


def run(panel: pd.DataFrame, spec: TradeSpec | None = None, *,
        scores: pd.Series | pd.DataFrame | None = None, predictor=None,
        weights: pd.DataFrame | None = None, stdstats: bool = True,
        **options: Any) -> BacktraderRun:
    """Backtest Kronos scores (precomputed) or a predictor (live inference) in backtrader.

    Parameters
    ----------
    panel
        Canonical panel; one data feed per instrument.
    spec, **options
        The trading terms (:class:`~kronos_quant.tradespec.TradeSpec`, default
        ``TradeSpec()``) with keyword terms on top (``topk=3, fees=0.001``; ``commission``
        is the deprecated name of ``fees``), and any other :data:`PARAMS` of
        ``KronosStrategy`` (scorer, lookback, stop_quantile, ...). A lot size or a minimum
        cost is refused (fractional shares, proportional fees).
    scores
        Score Series/DataFrame indexed by ("datetime", "instrument") for precomputed mode;
        a single column is ranked on unless ``scorer=`` names another.
    predictor, weights
        A KronosPredictor for live inference, or target weights to trade as they are
        (rebalance dates × instruments, e.g. ``target_weights`` output; a row = a rebalance).
    stdstats
        backtrader's standard observers (cash/value, trades, buy/sell marks for plots).

    Returns BacktraderRun; ``result.spec`` is the spec the strategy traded.
    """
    if sum(x is not None for x in (scores, predictor, weights)) != 1:
        raise ValueError("give exactly one of scores= (precomputed), predictor= (live) or "
                         "weights=")
    terms, params = _split(options)
    live = sorted(set(params) & set(LIVE_PARAMS))
    if predictor is None and live:
        raise TypeError(f"KronosStrategy parameter(s) {live} apply only with predictor= (live "
                        "inference); with scores= or weights= they do nothing"
                        + ("; the names to hold are topk=" if "top_k" in live else ""))
    spec = resolve_spec(spec, terms, engine="backtrader", stacklevel=3)
    panel = validate_panel(panel)
    if weights is not None:
        if not isinstance(weights, pd.DataFrame) or weights.isna().to_numpy().any():
            raise ValueError("weights must be a DataFrame without NaN (rebalance dates × "
                             "instruments, 0 = not held)")
        params["weights"] = check_against_spec(weights.astype(np.float64), spec)
    if scores is not None and len(score_frame(scores)) == 0:
        raise ValueError("scores are empty")
    if scores is not None and "scorer" not in params:
        ranked = [c for c in score_frame(scores).columns if c != STOP_LINE]
        if len(ranked) != 1:
            raise ValueError(f"scores have columns {ranked}: pick one with scorer=")
        params["scorer"] = ranked[0]
    cerebro = cerebro_for(panel, spec, scores=scores, stdstats=stdstats)
    cerebro.addstrategy(_classes()["KronosStrategy"], predictor=predictor, spec=spec, **params)
    strategy = cerebro.run()[0]
    return BacktraderRun(strategy, returns(strategy), cerebro)
