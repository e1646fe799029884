"""Live sizing: one candle's scores → target weights → orders (used by :mod:`.live`).

* :func:`target_positions` sizes a candle with the loop's TradeSpec (``config.trade_spec()``),
  through :func:`kronos_quant.portfolio.target_weights`, exactly as a backtest would.
* :func:`hold_targets` layers hysteresis on top, for the live loop only (it needs the
  positions held, which a backtest's weights do not have): a position is entered or resized
  only when P(up) is clearly away from ½, kept while P(up) sits inside the band, and left only
  when P(up) clearly reverses — the ``entry``/``exit`` hysteresis of
  :func:`kronos_quant.adapters.vectorbt.hysteresis`, read on P(up) around ½.
* :func:`order_size` turns a target into the order actually sent (the no-trade band).

Why the band is in units of √(¼/S): P(up) is the share of S sampled paths that end up, so
with no real conviction it has standard error √(p(1 − p)/S) = √(¼/S) (0.125 at S = 16). A
band narrower than that lets every position flip in and out on sampling noise, paying the
fee both ways (docs/live.md has the numbers).
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..portfolio import target_weights

if TYPE_CHECKING:
    from .live import LiveConfig

PORTFOLIO_LOGGER = logging.getLogger(target_weights.__module__)
# target_weights' words when max_weight keeps a date below gross.
CAP_WINS = "the cap wins"
# What hold_targets did per symbol (also the words of the loop's DEBUG log).
ACTIONS: tuple[str, ...] = ("enter", "follow", "hold", "exit", "flat")
TOLERANCE = 1e-12  # P(up) is k/S: a band of exactly k/S − ½ must count as reached


def prob_noise(sample_count: int) -> float:
    """Standard error of P(up) from ``sample_count`` paths when there is no conviction
    (p = ½): √(¼/S)."""
    return math.sqrt(0.25 / sample_count)


class CapAtDebug(logging.Filter):
    """Demotes target_weights' "cap wins" warning to DEBUG while the live loop sizes a candle.

    There a binding ``max_weight`` is the per-symbol limit the loop was started with (one
    symbol capped at half the equity binds on every candle), not a surprise worth a warning
    per candle; :class:`~kronos_quant.strategies.live.LiveLoop` states the ceiling once at
    start. Other records pass as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and CAP_WINS in str(record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return PORTFOLIO_LOGGER.isEnabledFor(logging.DEBUG)
        return True


CAP_AT_DEBUG = CapAtDebug()


def target_positions(scores: pd.DataFrame, config: LiveConfig) -> pd.Series:
    """Target weight per symbol for one candle time (``scores``: symbols × scorers), sized by
    :func:`kronos_quant.portfolio.target_weights` with ``config.trade_spec()`` (the same
    TradeSpec a backtest reads: ``max_weight``, ``gross``, ``long_short``, ``invested``).

    ``threshold``: ``method="threshold"`` on ``config.score`` — equal weight (summing to
    ``gross``) on symbols whose score is above ``threshold`` (and, with ``long_short``, short
    below ``−threshold``).

    ``prob`` (probability-weighted): ``method="conviction"`` on ``p = prob_up``, after setting
    p to 0.5 (no conviction) inside the dead band ``|p − 0.5| ≤ dead_band``: weight ∝ 2·p − 1,
    the candle's gross scaled by the mean conviction, so a lone symbol with p = 0.75 holds
    half of ``gross`` and p = 1 all of it.

    These are the weights before the positions held are known; the loop applies
    :func:`hold_targets` on top when ``config.hold_bands()`` is set. A binding ``max_weight``
    is logged at DEBUG here (see :class:`CapAtDebug`), not warned.
    """
    values = scores[config.score].astype(float)
    spec = config.trade_spec()
    frame = (values.where((values - 0.5).abs() > config.dead_band, 0.5)
             if spec.method == "conviction" else values)
    if frame.isna().all():  # no score at all: no conviction, nothing held
        return pd.Series(0.0, index=scores.index)
    stamp = pd.Timestamp("1970-01-01")  # one rebalance row; the date itself is irrelevant
    panel = frame.rename(config.score).to_frame()
    panel.index = pd.MultiIndex.from_product([[stamp], frame.index],
                                             names=["datetime", "instrument"])
    PORTFOLIO_LOGGER.addFilter(CAP_AT_DEBUG)
    try:
        weights = target_weights(panel, spec)
    finally:
        PORTFOLIO_LOGGER.removeFilter(CAP_AT_DEBUG)
    return weights.iloc[0].reindex(scores.index).fillna(0.0)


def hold_action(sized: float, held: float, prob_up: float, *, entry: float,
                exit: float) -> str:
    """What one symbol does under the hysteresis rule (one of :data:`ACTIONS`).

    With ``c = prob_up − ½`` and the side held (long +, short −, flat 0):

    * flat: ``enter`` the sized weight when ``|c| ≥ entry`` (and sizing gives a position),
      else stay ``flat``;
    * held: ``exit`` when the forecast clearly reverses (``side · c < −exit``: for a long,
      P(up) < ½ − exit) — to flat, or straight to the other side when that is itself a clear
      entry (long-short); ``follow`` the sized weight (a resize) when ``|c| ≥ entry`` on the
      held side; otherwise ``hold``: keep the position (a missing P(up) holds too: no new
      information is not a reversal).
    """
    side = float(np.sign(held))
    clear = abs(prob_up - 0.5) >= entry - TOLERANCE  # NaN: False
    if side == 0:
        return "enter" if clear and sized != 0 else "flat"
    if side * (prob_up - 0.5) < -exit - TOLERANCE:
        return "exit"
    if clear and np.sign(sized) == side:
        return "follow"
    return "hold"


def hold_targets(sized: pd.Series, held: pd.Series, prob_up: pd.Series, *, entry: float,
                 exit: float, gross: float) -> tuple[pd.Series, pd.Series]:
    """Target weights after the hysteresis rule of :func:`hold_action`, and the action per
    symbol.

    ``sized``: this candle's weights (:func:`target_positions`); ``held``: the weights held
    now (quantity × close / equity); ``prob_up``: this candle's P(up); ``entry``/``exit``:
    the bands in probability (:meth:`LiveConfig.hold_bands`). A held target is the held
    weight itself, so the order is nothing. Kept positions come first: when they and the
    newly sized weights together exceed ``gross``, the sized ones are scaled down to the
    room left (never leverage beyond ``gross``).
    """
    held = held.reindex(sized.index).fillna(0.0)
    prob_up = prob_up.reindex(sized.index)
    actions = pd.Series([hold_action(float(sized[s]), float(held[s]), float(prob_up[s]),
                                     entry=entry, exit=exit) for s in sized.index],
                        index=sized.index, dtype=object)
    kept = actions == "hold"
    targets = sized.where(~kept, held).where(actions != "flat", 0.0)
    exits = actions == "exit"  # to flat, unless the reversal is itself a clear entry
    reverse = exits & ((prob_up - 0.5).abs() >= entry - TOLERANCE) & (
        np.sign(sized) == -np.sign(held))
    targets = targets.where(~exits | reverse, 0.0)
    room = max(0.0, gross - float(targets[kept].abs().sum()))
    moving = float(targets[~kept].abs().sum())
    if moving > room + TOLERANCE:
        targets = targets.where(kept, targets * (room / moving))
    return targets.astype(float), actions


def order_size(target_qty: float, held: float, price: float, equity: float,
               config: LiveConfig) -> float:
    """The order that moves ``held`` to ``target_qty`` (0.0: none): changes worth less than
    ``min_trade_value`` (quote) or ``min_trade_weight`` × equity are not traded, exits
    included (the no-trade band that keeps noise in the forecasts from churning fees; a
    position smaller than the band may linger until a larger change moves it)."""
    delta = target_qty - held
    value = abs(delta) * price
    if value < max(config.min_trade_value, config.min_trade_weight * equity):
        return 0.0
    return delta
