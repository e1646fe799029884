"""ReplayFeed serves recorded candles like an exchange: only closed ones, from ``since`` on."""
from __future__ import annotations

import pandas as pd
import pytest
from kronos_quant.strategies.ledger import to_ms
from kronos_quant.strategies.live_report import LiveReport, write_tearsheet
from kronos_quant.strategies.replay import ReplayFeed, timeframe_step

from kronos_quant.data import synthetic_ohlcv


def test_timeframe_step_reads_ccxt_timeframes():
    assert timeframe_step("1m") == pd.Timedelta(minutes=1)
    assert timeframe_step("4h") == pd.Timedelta(hours=4)
    assert timeframe_step("1d") == pd.Timedelta(days=1)
    with pytest.raises(ValueError, match="'1y'"):
        timeframe_step("1y")


def test_replay_feed_serves_only_closed_candles():
    bars = synthetic_ohlcv(10, freq="1h", seed=0)
    step = pd.Timedelta(hours=1)
    feed = ReplayFeed({"BTC/USDT": bars}, timeframe="1h", step=step)
    with pytest.raises(ValueError, match="ETH/USDT"):
        feed.check("ETH/USDT", "1h")
    with pytest.raises(ValueError, match="not 1d"):
        feed.check("BTC/USDT", "1d")
    feed.now_ms = to_ms(bars.index[5] + step) - 1  # candle 5 is still forming
    frame, _ = feed.fetch_closed("BTC/USDT", "1h", since=bars.index[2])
    assert list(frame.index) == list(bars.index[2:5])
    assert frame["close"].tolist() == pytest.approx(bars["close"].iloc[2:5].tolist())
    feed.now_ms += 1  # now it has closed
    frame, _ = feed.fetch_closed("BTC/USDT", "1h", since=bars.index[2])
    assert frame.index[-1] == bars.index[5]


def test_live_tearsheet_needs_one_annualisation(tmp_path):
    equity = pd.Series([100.0, 101.0, 100.5], index=pd.date_range("2024-01-01", periods=3))
    report = LiveReport(equity, 100.0, 3, 0, 0, 0.0, 0, 0)
    for kwargs in ({}, {"periods": 252, "timeframe_seconds": 86400}):
        with pytest.raises(ValueError, match="timeframe_seconds .* or periods"):
            write_tearsheet(report, tmp_path / "t.html", title="t", **kwargs)
