"""The execution convention: lags, prices and forward returns on a hand-made panel."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kronos_quant.execution import (
    DEFAULT_EXECUTION,
    EXECUTIONS,
    check_execution,
    describe_execution,
    execution_lag,
    execution_price,
    execution_returns,
)


def hand_panel() -> pd.DataFrame:
    """Two instruments on their own calendars (B misses one date), opens ≠ closes."""
    dates = pd.bdate_range("2024-01-01", periods=6)
    rows = []
    for i, d in enumerate(dates):
        rows.append((d, "A", 10.0 + i, 20.0 + 2 * i))
        if i != 2:  # B has no bar on the third date
            rows.append((d, "B", 100.0 + 10 * i, 50.0 + i))
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", "open", "close"])
    frame["high"] = frame[["open", "close"]].max(axis=1)
    frame["low"] = frame[["open", "close"]].min(axis=1)
    frame["volume"] = 1.0
    frame = frame.set_index(["datetime", "instrument"]).sort_index()
    return frame[["open", "high", "low", "close", "volume"]]


def test_names_lags_prices():
    assert EXECUTIONS == ("next_open", "next_close", "same_close")
    assert DEFAULT_EXECUTION == "next_open"
    assert [execution_lag(e) for e in EXECUTIONS] == [1, 1, 0]
    assert [execution_price(e) for e in EXECUTIONS] == ["open", "close", "close"]
    assert check_execution("same_close") == "same_close"
    assert "market-on-close" in describe_execution("same_close")
    for bad in ("next-open", "NEXT_OPEN", None, 1):
        with pytest.raises(ValueError, match="execution must be one of"):
            check_execution(bad)
    with pytest.raises(ValueError, match="next_open"):
        execution_lag("open")


@pytest.mark.parametrize("execution, field, lag", [("next_open", "open", 1),
                                                    ("next_close", "close", 1),
                                                    ("same_close", "close", 0)])
def test_forward_returns_by_hand(execution, field, lag):
    panel = hand_panel()
    horizon = 2
    got = execution_returns(panel, horizon=horizon, execution=execution)
    assert got.index.equals(panel.index)
    for inst, part in panel.groupby(level="instrument"):
        price = part[field].to_numpy()  # the instrument's own bars, in order
        n = len(price)
        for t in range(n):
            start, end = t + lag, t + lag + horizon
            expected = price[end] / price[start] - 1.0 if end < n else np.nan
            value = got.loc[part.index[t]]
            if np.isnan(expected):
                assert np.isnan(value), (inst, t)
            else:
                assert value == pytest.approx(expected), (inst, t)


def test_next_open_is_open_t_plus_1_to_open_t_plus_1_plus_h_and_log():
    panel = hand_panel()
    d = panel.index.get_level_values("datetime").unique()
    fwd = execution_returns(panel, horizon=1)  # default next_open
    # A: opens 10, 11, 12, ...: score at d0 trades at 11 and exits at 12.
    assert fwd.loc[(d[0], "A")] == pytest.approx(12 / 11 - 1)
    # B skips d2: its bar after d1 is d3 (open 130), then d4 (open 140).
    assert fwd.loc[(d[1], "B")] == pytest.approx(140 / 130 - 1)
    logged = execution_returns(panel, horizon=1, log=True)
    assert logged.loc[(d[0], "A")] == pytest.approx(np.log(12 / 11))
    assert fwd.loc[(d[-2], "A")] != fwd.loc[(d[-2], "A")]  # NaN: no exit bar yet


def test_bad_inputs():
    panel = hand_panel()
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        execution_returns(panel, horizon=0)
    with pytest.raises(ValueError, match="execution must be one of"):
        execution_returns(panel, horizon=1, execution="tomorrow")
    with pytest.raises(ValueError, match="missing required columns"):
        execution_returns(panel.drop(columns="open"), horizon=1)
