"""Target weights on bars → the orders every engine sends: one rule for names that stop trading.

:func:`kronos_quant.portfolio.align` puts each rebalance on its execution bar. Real panels
have holes, and every engine must treat them alike, so the rule lives here and nowhere else
(vectorbt runs :func:`order_plan` before its simulation, backtrader steps the same
:class:`OrderRules` bar by bar, Qlib states where it differs):

* **Delisting.** A held name whose bars end before the panel's last bar is sold on its last
  bar: at that bar's execution price if an order is due there, else at its close; the
  proceeds return to cash.
* **Missing bar.** A held name without a bar at an execution bar keeps its shares, valued at
  its last price, and its order waits for its next bar (unless a later rebalance replaces it).
* **No bar, not held.** A target on a name that is not held and has no bar at the execution
  bar is skipped, and logged per name.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["OrderRules", "OrderPlan", "order_plan"]


class OrderRules:
    """The rules of the module docstring, one bar at a time.

    ``step`` takes the bar's due targets (a rebalance executing here, or None), which names
    have a bar, and which names are on their final bar before the panel ends; it returns the
    orders to send (target weights, NaN = no order) and which of them fill at the close
    instead of the execution price (delisting sales on a bar without a due order).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.held = np.zeros(len(self.names), dtype=bool)  # last order left a position
        self.pending = np.full(len(self.names), np.nan)  # orders waiting for a bar
        self.skipped: dict[str, list[pd.Timestamp]] = {}

    def step(self, when: pd.Timestamp, due: np.ndarray | None, present: np.ndarray,
             final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        orders = np.full(len(self.names), np.nan)
        if due is not None:
            due = np.nan_to_num(np.asarray(due, dtype=np.float64))
            self.pending[:] = np.nan  # a new rebalance replaces every waiting order
            orders[present] = due[present]
            wait = ~present & self.held
            self.pending[wait] = due[wait]
            for j in np.flatnonzero(~present & ~self.held & (due != 0)):
                self.skipped.setdefault(self.names[j], []).append(when)
        late = present & ~np.isnan(self.pending)
        orders[late], self.pending[late] = self.pending[late], np.nan
        exit_ = final & np.where(np.isnan(orders), self.held, orders != 0)
        at_close = exit_ & np.isnan(orders)
        orders[exit_] = 0.0
        self.pending[final] = np.nan
        sent = ~np.isnan(orders)
        self.held[sent] = orders[sent] != 0
        return orders, at_close

    def log_skipped(self) -> None:
        """One warning per name whose targets were skipped (no bar, not held)."""
        for name, stamps in self.skipped.items():
            logger.warning("%s: %d target(s) skipped, no bar at the execution bar and not "
                           "held (first %s)", name, len(stamps), stamps[0])


@dataclass
class OrderPlan:
    """Orders (bars × names, target weights, NaN = none), ``at_close`` (bool, same shape) and
    the per-name skipped execution bars."""

    orders: pd.DataFrame
    at_close: pd.DataFrame
    skipped: dict[str, list[pd.Timestamp]]


def final_bars(present: np.ndarray) -> np.ndarray:
    """True on each name's last bar when that bar comes before the panel's last bar."""
    rows = present.shape[0]
    last = rows - 1 - np.argmax(present[::-1], axis=0)  # last present row per name
    final = np.zeros(present.shape, dtype=bool)
    ends = present.any(axis=0) & (last < rows - 1)
    final[last[ends], np.flatnonzero(ends)] = True
    return final


def order_plan(due: pd.DataFrame, present: pd.DataFrame) -> OrderPlan:
    """Apply :class:`OrderRules` to a whole backtest.

    ``due``: targets on their execution bars (``align(weights, bars, execution=...,
    fill=False)``: NaN rows = no rebalance), ``present``: bool frame of the same shape (the
    name has a bar). Logs the skipped targets per name.
    """
    values, have = due.to_numpy(np.float64), present.to_numpy(bool)
    final = final_bars(have)
    if have.all():
        orders, at_close, skipped = values, np.zeros(values.shape, dtype=bool), {}
    else:
        rules = OrderRules(due.columns)
        orders, at_close = np.full(values.shape, np.nan), np.zeros(values.shape, dtype=bool)
        rebalance = ~np.isnan(values).all(axis=1)
        for i, when in enumerate(due.index):
            orders[i], at_close[i] = rules.step(when, values[i] if rebalance[i] else None,
                                                have[i], final[i])
        rules.log_skipped()
        skipped = rules.skipped
    frame = lambda v: pd.DataFrame(v, index=due.index, columns=due.columns)  # noqa: E731
    return OrderPlan(frame(orders), frame(at_close), skipped)
