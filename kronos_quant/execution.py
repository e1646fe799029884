"""The execution convention: when a score is known and at which price it can trade.

A score indexed at bar t may use everything up to and including the close of bar t, so it
is known only after bar t closes. ``execution`` says where the trade it implies happens:

* ``"next_open"`` (default): at the open of the instrument's next bar, t+1. What a daily
  strategy that scores after the close and sends orders for the next session does.
* ``"next_close"``: at the close of bar t+1 (e.g. market-on-close orders placed a day later).
* ``"same_close"``: at the close of bar t itself. Opt-in only: it needs market-on-close
  orders sent *before* the close, with a score computed from a price that is not final yet;
  evaluated on final closes it is optimistic.

Evaluation (:func:`execution_returns`) and every engine (through
:func:`kronos_quant.portfolio.align`) read the convention from here, so the same scores give
the same trades everywhere. Bars are counted per instrument on its own rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .data import forward_returns

EXECUTIONS: tuple[str, ...] = ("next_open", "next_close", "same_close")
DEFAULT_EXECUTION: str = "next_open"
# Bars from the signal bar t to the execution bar, and the price traded there.
_LAG = {"next_open": 1, "next_close": 1, "same_close": 0}
_PRICE = {"next_open": "open", "next_close": "close", "same_close": "close"}
EXECUTION_DESCRIPTIONS: dict[str, str] = {
    "next_open": "score known after the close of bar t, traded at the open of bar t+1",
    "next_close": "score known after the close of bar t, traded at the close of bar t+1",
    "same_close": "traded at the close of bar t itself (needs market-on-close orders; optimistic)",
}


def check_execution(execution: str) -> str:
    """Return ``execution`` if it is one of :data:`EXECUTIONS`, else raise ValueError."""
    if not isinstance(execution, str) or execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {list(EXECUTIONS)}, got {execution!r}")
    return execution


def execution_lag(execution: str) -> int:
    """Bars from the signal bar t to the execution bar: 1 for ``next_*``, 0 for ``same_close``."""
    return _LAG[check_execution(execution)]


def execution_price(execution: str) -> str:
    """Panel column traded at: ``"open"`` for ``next_open``, ``"close"`` otherwise."""
    return _PRICE[check_execution(execution)]


def describe_execution(execution: str) -> str:
    """One line saying when a score indexed at t trades under ``execution``."""
    return f"{check_execution(execution)}: {EXECUTION_DESCRIPTIONS[execution]}"


def execution_returns(panel: pd.DataFrame, *, horizon: int, execution: str = DEFAULT_EXECUTION,
                      log: bool = False) -> pd.Series:
    """Forward return earned by trading the score at t under ``execution`` and holding
    ``horizon`` bars.

    Per instrument on its own bars: ``next_open`` open[t+1] → open[t+1+h], ``next_close``
    close[t+1] → close[t+1+h], ``same_close`` close[t] → close[t+h]. NaN where a bar is absent
    (the panel ends). Indexed like ``panel``; ``log=True`` gives log returns.

    Parameters
    ----------
    panel : canonical panel (see :mod:`kronos_quant.data`).
    horizon : holding period in bars (>= 1).
    execution : one of :data:`EXECUTIONS`.
    log : log returns instead of simple returns.
    """
    lag, price = execution_lag(execution), execution_price(execution)
    fwd = forward_returns(panel, horizon=horizon, field=price, log=log)  # validates the panel
    if lag:
        fwd = fwd.groupby(level="instrument").shift(-lag)
    return fwd.astype(np.float64).rename(f"fwd_ret_{int(horizon)}_{execution}")
