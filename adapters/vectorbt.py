"""vectorbt adapter: Kronos scores as vectorbt signals, portfolios and an indicator.

Everything here trades what :mod:`kronos_quant.portfolio` decides, at the time
:mod:`kronos_quant.execution` says: a score indexed at bar t is known after t closes, so under
the default ``"next_open"`` its orders fill at the open of the next bar. vectorbt is imported
inside the functions (``pip install "kronos-quant[vectorbt]"``).

* :func:`backtest`: scores (or a ready weight frame) → ``vbt.Portfolio`` through
  ``Portfolio.from_orders(size_type="targetpercent", group_by=True, cash_sharing=True,
  call_seq="auto")``: one cash pool, sells before buys, orders only on execution bars.
* :func:`signals`: per-instrument entry/exit booleans with hysteresis, already lagged to the
  execution bar, for ``Portfolio.from_signals`` (price: :func:`price_frames`).
* ``KronosIndicator``: a ``vbt.IndicatorFactory`` indicator whose output ``score`` is a Kronos
  scorer; sweeps over scorers share one forecast per window and thresholds go through
  vectorbt's own ``score_crossed_above``/``score_above`` helpers. :func:`sweep_stats` gives
  each column of the sweep's portfolio its Sharpe and deflated Sharpe ratio.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data import INDEX_NAMES, PANEL_COLUMNS, bar_spacing, validate_panel
from ..data import periods_per_year as periods_per_year_of  # the parameter keeps its name
from ..execution import DEFAULT_EXECUTION, check_execution, execution_price
from ..metrics import first_trade_bar, sweep_sharpe
from ..orders import OrderPlan, order_plan
from ..portfolio import align, check_against_spec, target_weights
from ..signals.transforms import score_column
from ..tradespec import TradeSpec, resolve_spec
from . import require_engine

if TYPE_CHECKING:
    import vectorbt as vbt

logger = logging.getLogger(__name__)

# Keyword arguments of KronosIndicator.run that configure the forecasts, not the scorer.
FORECAST_OPTIONS = ("freq", "start", "end", "seed", "T", "top_k", "top_p", "cache_dir",
                    "batch_size", "verbose")


def wide_fields(panel: pd.DataFrame, fields: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Several columns of a validated panel as wide (bars × instruments) frames in one pass,
    NaN where an instrument has no bar; bars and instruments sorted."""
    index = panel.index.remove_unused_levels()
    dates, names = index.levels
    values = panel[list(fields)].to_numpy(np.float64).T  # (F, rows)
    shape = (len(fields), len(dates), len(names))
    if len(panel) == shape[1] * shape[2]:  # every bar present: sorted rows are date-major
        out = values.reshape(shape)
    else:
        out = np.full(shape, np.nan)
        out[:, index.codes[0], index.codes[1]] = values
    bars = pd.DatetimeIndex(dates, name="datetime")
    columns = pd.Index(names, name="instrument")
    frames = {f: pd.DataFrame(out[k], index=bars, columns=columns, copy=False)
              for k, f in enumerate(fields)}
    if bars.is_monotonic_increasing and columns.is_monotonic_increasing:
        return frames
    return {f: frame.sort_index().sort_index(axis=1) for f, frame in frames.items()}


def price_frames(panel: pd.DataFrame, *, execution: str = DEFAULT_EXECUTION
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Wide (bars × instruments) frames for vectorbt: ``close`` to value positions, ``price``
    to fill orders at (the open for ``next_open``, else the close) and ``tradable`` (the
    instrument has a bar there). Gaps in ``price`` hold the last close (vectorbt values a
    position at the order price of each bar, and a name without a bar is worth its last
    price, as in every engine; see :mod:`kronos_quant.orders`); leading gaps are back-filled
    while nothing can be held, so the portfolio value is never NaN."""
    field = execution_price(execution)
    wide = wide_fields(validate_panel(panel), tuple(dict.fromkeys(("close", field))))
    close, raw = wide["close"], wide[field]
    present = ~np.isnan(raw.to_numpy())
    tradable = pd.DataFrame(present, index=raw.index, columns=raw.columns, copy=False)
    if present.all():
        return close, raw, tradable
    close = close.ffill()
    return close.bfill(), raw.fillna(close).bfill(), tradable


def _weights(scores_or_weights, instruments: pd.Index, spec: TradeSpec, *,
             column: str | None) -> pd.DataFrame:
    """Target weights (rebalance dates × panel instruments) from scores or a weight frame."""
    obj = scores_or_weights
    if isinstance(obj, pd.DataFrame) and isinstance(obj.index, pd.DatetimeIndex):
        weights = check_against_spec(obj.astype("float64"), spec)  # already weights: dates × names
    elif isinstance(obj, (pd.Series, pd.DataFrame)) and isinstance(obj.index, pd.MultiIndex):
        weights = target_weights(obj, spec, column=column)
    else:
        raise TypeError("backtest needs scores indexed by ('datetime', 'instrument') or a weight "
                        "DataFrame indexed by datetime with one column per instrument, got "
                        f"{type(obj).__name__}")
    unknown = weights.columns.difference(instruments)
    if len(unknown):
        raise ValueError(f"weights name {len(unknown)} instrument(s) absent from the panel, "
                         f"first {unknown[0]!r}")
    if weights.isna().any().any():
        raise ValueError("weights contain NaN; use 0 for instruments not held")
    return weights.reindex(columns=instruments, fill_value=0.0)


def order_frame(weights: pd.DataFrame, close: pd.DataFrame, tradable: pd.DataFrame, *,
                execution: str = DEFAULT_EXECUTION) -> OrderPlan:
    """Target-percent orders on the bar calendar: each rebalance's weights on its execution
    bar (``kronos_quant.portfolio.align(fill=False)``), NaN (no order) on other bars, with
    the rules of :mod:`kronos_quant.orders` for names without a bar or whose bars end."""
    due = align(weights, close.index, execution=execution, fill=False)
    plan = order_plan(due.reindex(columns=close.columns), tradable)
    # Row-major, as vectorbt's simulation walks it (bar by bar): no strided reads.
    plan.orders = pd.DataFrame(np.ascontiguousarray(plan.orders.to_numpy(np.float64)),
                               index=due.index, columns=close.columns, copy=False)
    return plan


def backtest(scores_or_weights: pd.Series | pd.DataFrame, panel: pd.DataFrame,
             spec: TradeSpec | None = None, *, column: str | None = None,
             freq: str | pd.Timedelta | None = None, periods_per_year: int | None = None,
             portfolio_kwargs: Mapping[str, Any] | None = None, **terms) -> vbt.Portfolio:
    """Backtest scores (or target weights) on ``panel`` with vectorbt.

    Parameters
    ----------
    scores_or_weights
        Scores indexed by ("datetime", "instrument") (turned into weights by
        :func:`kronos_quant.portfolio.target_weights` with ``spec``), or a weight frame
        (rebalance dates × instruments, 0 = not held) such as ``target_weights`` returns,
        traded as it is.
    panel
        The canonical panel whose bars are traded (see :mod:`kronos_quant.data`).
    spec, **terms
        The trading terms (:class:`~kronos_quant.tradespec.TradeSpec`; default
        ``TradeSpec()``), keyword terms on top (``topk=3, fees=0.001``). vectorbt reads
        ``execution`` (the bar and price each rebalance fills at), ``cash``, ``fees`` and
        ``slippage`` (fractions of the traded value, as vectorbt applies them); a lot size or
        a minimum cost is refused (fractional shares, proportional fees). ``init_cash`` and
        ``weight_options`` still work, deprecated.
    column
        The score column when ``scores`` has several.
    freq, periods_per_year
        Bar spacing (default: the median gap between bars) and bars per year (default:
        inferred from the bars, as the tear sheet does). vectorbt annualises with
        ``year_freq / freq``: its global ``vbt.settings.returns["year_freq"]`` is set to
        ``freq * periods_per_year`` (logged when it changes), so ``pf.stats()`` and
        ``pf.sharpe_ratio()`` give the Sharpe ratio of :mod:`kronos_quant.metrics`.
    portfolio_kwargs
        Anything else ``Portfolio.from_orders`` accepts.

    Returns
    -------
    vbt.Portfolio, one group ("group") holding every instrument; ``pf.trade_spec`` is the
    spec it ran with.
    """
    vbt = require_engine("vectorbt")
    if "weight_options" in terms:
        warnings.warn("weight_options= is deprecated; pass the terms as keywords (or spec=)",
                      DeprecationWarning, stacklevel=2)
        terms = {**dict(terms.pop("weight_options") or {}), **terms}
    spec = resolve_spec(spec, terms, engine="vectorbt")
    close, price, tradable = price_frames(panel, execution=spec.execution)
    weights = _weights(scores_or_weights, close.columns, spec, column=column)
    plan = order_frame(weights, close, tradable, execution=spec.execution)
    extra = dict(portfolio_kwargs or {})
    fixed = {"size_type": "targetpercent", "group_by": True, "cash_sharing": True}
    clash = sorted((set(fixed) | {"size", "price", "fees", "slippage", "init_cash"}) & set(extra))
    if clash:
        raise ValueError(f"{clash} are fixed by this adapter (target weights, one shared-cash "
                         f"group, the spec's costs); call vbt.Portfolio.from_orders directly "
                         f"to change them")
    extra.setdefault("call_seq", "auto")
    if freq is None:
        freq = bar_spacing(close.index, option="freq=")  # what vectorbt annualises with
    set_year(freq, periods_per_year or periods_per_year_of(close.index))
    # Start at the first rebalance's execution bar: before it the book only holds cash.
    start = first_trade_bar(weights, close.index, execution=spec.execution)
    ordered = plan.orders.notna().to_numpy().any(axis=1)
    if ordered.any():
        start = min(start, plan.orders.index[int(np.argmax(ordered))])
    close, price, orders, at_close = (frame.loc[start:] for frame in
                                      (close, price, plan.orders, plan.at_close))
    pf = vbt.Portfolio.from_orders(close, size=orders, price=price.mask(at_close, close),
                                   fees=spec.fees, slippage=spec.slippage, init_cash=spec.cash,
                                   freq=freq, **fixed, **extra)
    pf.trade_spec = spec
    return pf


def set_year(freq: str | pd.Timedelta, periods_per_year: int) -> pd.Timedelta:
    """Set vectorbt's global ``year_freq`` to ``periods_per_year`` bars of ``freq`` (its
    annualisation factor is ``year_freq / freq``); returns it."""
    vbt = require_engine("vectorbt")
    year = pd.Timedelta(freq) * int(periods_per_year)
    if pd.Timedelta(vbt.settings.returns["year_freq"]) != year:
        logger.info("vectorbt year_freq set to %s (%d bars of %s), as kronos_quant.metrics "
                    "annualises", year, periods_per_year, pd.Timedelta(freq))
        vbt.settings.returns["year_freq"] = year
    return year


def sweep_stats(portfolio: vbt.Portfolio, *, periods_per_year: int | None = None,
                trials: int | None = None) -> pd.DataFrame:
    """Sharpe and deflated Sharpe ratio of every column of a parameter sweep's portfolio
    (e.g. ``Portfolio.from_signals`` on ``KronosIndicator`` crossings over a grid), by
    :func:`kronos_quant.metrics.sweep_sharpe`: ``trials`` (default: the columns) is how many
    configurations were tried, so the best row of a sweep is not reported as skill."""
    returns = portfolio.returns()
    if isinstance(returns, pd.Series):
        returns = returns.to_frame()
    ppy = periods_per_year or periods_per_year_of(returns.index)
    if portfolio.wrapper.freq is not None:  # pf.sharpe_ratio() then agrees with the table
        set_year(portfolio.wrapper.freq, ppy)
    return sweep_sharpe(returns, periods_per_year=ppy, trials=trials)


def _score_wide(scores: pd.Series | pd.DataFrame, column: str | None) -> pd.DataFrame:
    """Scores as a dates × instruments frame (NaN = no score that date)."""
    if isinstance(scores, pd.DataFrame) and not isinstance(scores.index, pd.MultiIndex):
        return scores.astype("float64")  # already wide, e.g. KronosIndicator's output
    return score_column(scores, column).unstack("instrument").sort_index()


def hysteresis(scores: pd.DataFrame, *, entry: float, exit: float,
               topk: int | None = None) -> pd.DataFrame:
    """Held state per score date (bool frame, dates × instruments).

    A name is entered when its score reaches ``entry`` (and, with ``topk``, it is among the
    date's ``topk`` highest scores) and held until its score falls below ``exit`` or goes
    missing; between ``exit`` and ``entry`` it keeps its previous state.
    """
    values = scores.to_numpy()
    eligible = values >= entry
    if topk is not None:
        if not isinstance(topk, (int, np.integer)) or isinstance(topk, bool) or topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
        ranks = scores.rank(axis=1, method="first", ascending=False).to_numpy()
        eligible &= ranks <= topk
    keep = values >= exit  # NaN compares False: a name without a score is let go
    held = np.zeros(values.shape, dtype=bool)
    state = np.zeros(values.shape[1], dtype=bool)
    for i in range(len(values)):
        state = eligible[i] | (state & keep[i])
        held[i] = state
    return pd.DataFrame(held, index=scores.index, columns=scores.columns)


def signals(scores: pd.Series | pd.DataFrame, *, bars: pd.Index | pd.DataFrame,
            column: str | None = None, entry: float = 0.0, exit: float | None = None,
            topk: int | None = None, execution: str = DEFAULT_EXECUTION
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Entry and exit booleans (bars × instruments) for ``Portfolio.from_signals``.

    The held state of :func:`hysteresis` (``exit`` defaults to ``entry``; it must not exceed
    it) changes on score dates; each change is placed on its execution bar by
    :func:`kronos_quant.portfolio.align`, so a score at t enters or exits at t+1 under
    ``next_*``. ``bars`` is the bar calendar: a panel, its index, or a DatetimeIndex. Trade
    them at :func:`price_frames`' ``price`` (the open for ``next_open``).
    """
    check_execution(execution)
    exit = entry if exit is None else exit
    if not (np.isfinite(entry) and np.isfinite(exit)) or exit > entry:
        raise ValueError(f"need finite exit <= entry for hysteresis, got entry={entry!r}, "
                         f"exit={exit!r}")
    calendar = bars.index if isinstance(bars, pd.DataFrame) else bars
    held = hysteresis(_score_wide(scores, column), entry=entry, exit=exit, topk=topk)
    before = held.shift(1, fill_value=False)
    placed = [align(flag.astype("float64"), calendar, execution=execution, fill=False)
              .fillna(0.0).astype(bool) for flag in (held & ~before, before & ~held)]
    entries, exits = placed
    return entries, exits


# --- KronosIndicator -------------------------------------------------------------------------

def _panel_from_wide(close: pd.DataFrame,
                     others: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """A canonical panel from wide frames; missing open/high/low copy the close and a missing
    volume is 0 (the model then sees flat candles without volume)."""
    fields = {"close": close}
    for name in PANEL_COLUMNS[:5]:
        given = others.get(name)
        if name != "close":
            fallback = close if name != "volume" else close * 0.0
            fields[name] = fallback if given is None else given.reindex_like(close)
    frame = pd.concat({n: fields[n] for n in PANEL_COLUMNS[:5]}, axis=1)
    long = frame.stack(level=1, future_stack=True).dropna(subset=["close"])
    long.index = long.index.set_names(list(INDEX_NAMES))
    long.index = long.index.set_levels(long.index.levels[1].astype(str), level=1)
    return validate_panel(long.sort_index())


def _forecasts(close, lookbacks, pred_lens, sample_counts, scorers, *, predictor=None,
               open=None, high=None, low=None, volume=None, **options) -> dict:
    """``cache_func`` of the indicator: one walk-forward forecast per distinct
    (lookback, pred_len, sample_count), shared by every scorer of the sweep."""
    from ..signals import forecast_panel

    if predictor is None:
        raise ValueError("KronosIndicator.run needs predictor= (a KronosPredictor)")
    unknown = sorted(set(options) - set(FORECAST_OPTIONS) - {"log"})
    if unknown:
        raise TypeError(f"KronosIndicator.run got unexpected options {unknown}; forecast "
                        f"options are {list(FORECAST_OPTIONS)} and log")
    panel = _panel_from_wide(close, {"open": open, "high": high, "low": low, "volume": volume})
    forecast_options = {k: v for k, v in options.items() if k in FORECAST_OPTIONS}
    forecast_options.setdefault("seed", 0)
    out = {}
    for key in dict.fromkeys(zip(lookbacks, pred_lens, sample_counts, strict=True)):
        lookback, pred_len, sample_count = (int(v) for v in key)
        out[key] = forecast_panel(predictor, panel, lookback=lookback, pred_len=pred_len,
                                  sample_count=sample_count, **forecast_options)
    return out


def _score_output(close, lookback, pred_len, sample_count, scorer, forecasts, *, log=False,
                  **_ignored) -> np.ndarray:
    """``apply_func`` of the indicator: one scorer on the shared forecasts, held (forward
    filled) from each scored bar until the next, on the close's shape."""
    chunk = forecasts[(int(lookback), int(pred_len), int(sample_count))]
    wide = chunk.score([scorer], log=bool(log))[scorer].unstack("instrument")
    wide = wide.reindex(index=close.index, columns=close.columns.astype(str)).ffill()
    return wide.to_numpy(np.float64)


_INDICATOR = None


def kronos_indicator():
    """The ``KronosIndicator`` class (built on first use, so vectorbt loads lazily).

    ``KronosIndicator.run(close, lookback=..., pred_len=..., sample_count=..., scorer=...,
    predictor=p, [open=, high=, low=, volume=,] [freq=, seed=, cache_dir=, ...])``: ``close``
    and the optional OHLCV frames are wide (bars × instruments); each parameter may be a list
    (``param_product=True`` sweeps their product). Output ``score`` (bars × instruments per
    parameter combination) is the scorer at each scored bar t, known after t closes: lag any
    crossing signal by the execution convention before trading it (see :func:`signals`).
    """
    global _INDICATOR
    if _INDICATOR is None:
        vbt = require_engine("vectorbt")
        factory = vbt.IndicatorFactory(
            class_name="KronosIndicator", short_name="kronos", input_names=["close"],
            param_names=["lookback", "pred_len", "sample_count", "scorer"],
            output_names=["score"], module_name=__name__)
        _INDICATOR = factory.from_apply_func(
            _score_output, cache_func=_forecasts, keep_pd=True, lookback=64, pred_len=5,
            sample_count=16, scorer="expected_return")
    return _INDICATOR


def __getattr__(name: str):
    # ``from kronos_quant.adapters.vectorbt import KronosIndicator`` builds it on demand.
    if name == "KronosIndicator":
        return kronos_indicator()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
