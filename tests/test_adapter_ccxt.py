"""The ccxt feed against a local Binance-format server: real ccxt client, injected faults."""
from __future__ import annotations

import logging

import ccxt
import numpy as np
import pandas as pd
import pytest
from kronos_quant.adapters.ccxt import (
    CandleStore,
    CcxtFeed,
    RetryPolicy,
    candles_frame,
    find_gaps,
    make_exchange,
    retry_after_seconds,
    rewrite_api_host,
    row_problem,
)
from kronos_quant.adapters.ccxt_errors import FatalExchangeError
from mock_exchange import Fault, ManualClock, MockExchange, MockServer

MIN = 60_000
NOW = 1_700_000_000_000 // MIN * MIN + 30_000  # half-way through a 1m candle


class Sleeps(list):
    """A fake sleep that moves its own clock (``now``), for the retry policy's deadline/ban."""

    now = 1_000.0

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture()
def server():
    clock = ManualClock(NOW)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        srv.clock = clock
        yield srv


def make_feed(srv, sleeps=None, **retry) -> CcxtFeed:
    sleeps = Sleeps() if sleeps is None else sleeps
    policy = RetryPolicy(base_delay=0.001, max_delay=0.01, sleep=sleeps, clock=sleeps.clock,
                         **retry)
    return CcxtFeed(make_exchange("binance", api_host=srv.url, timeout_ms=250), retry=policy,
                    page_limit=10)


def test_rewrite_api_host_keeps_paths_at_any_depth():
    api = {"public": "https://api.binance.com/api/v3?x=1", "nested": {"a": "https://f.io/fapi/v1"},
           "list": ["https://x.com/p"], "n": 3}
    out = rewrite_api_host(api, "http://127.0.0.1:9999")
    assert out == {"public": "http://127.0.0.1:9999/api/v3?x=1",
                   "nested": {"a": "http://127.0.0.1:9999/fapi/v1"},
                   "list": ["http://127.0.0.1:9999/p"], "n": 3}
    with pytest.raises(ValueError, match="--api-host"):
        rewrite_api_host(api, "127.0.0.1:9999")
    exchange = make_exchange("binance", api_host="http://127.0.0.1:1")
    assert exchange.urls["api"]["fapiPublic"] == "http://127.0.0.1:1/fapi/v1"
    assert exchange.enableRateLimit


def test_unknown_exchange_symbol_and_timeframe_are_named(server):
    with pytest.raises(ValueError, match="unknown ccxt exchange id 'binanse'"):
        make_exchange("binanse")
    feed = make_feed(server)
    with pytest.raises(ValueError, match="timeframe '7m' is not offered by binance"):
        feed.check("BTC/USDT", "7m")
    with pytest.raises(ValueError, match="symbol 'XRP/USDT' is not a market on binance"):
        feed.check("XRP/USDT", "1m")
    feed.check("BTC/USDT", "1h")
    # market loading stayed on the public endpoints (no keys, no private calls)
    assert set(server.mock.requests) == {"/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo",
                                         "/dapi/v1/exchangeInfo"}


def test_paging_closed_only_dedupe_and_gap(server):
    server.mock.missing.add(NOW // MIN * MIN - 5 * MIN)
    feed = make_feed(server)
    server.mock.inject(Fault("duplicate"))
    frame, report = feed.fetch_closed("BTC/USDT", "1m", since=NOW - 30 * MIN)
    # 29 closed candles after `since` on the grid, one never existed; the forming one dropped
    assert len(frame) == 28 and report.forming_dropped == 1 and report.duplicates == 1
    assert frame.index[-1] == pd.Timestamp(NOW // MIN * MIN - MIN, unit="ms")
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    assert report.pages >= 3
    assert [(n) for *_, n in report.gaps] == [1]
    typical = (frame["high"] + frame["low"] + frame["close"]) / 3
    np.testing.assert_allclose(frame["amount"], frame["volume"] * typical)
    assert frame.index.tz is None


@pytest.mark.parametrize("kind", ["500", "429", "timeout", "truncated"])
def test_transient_faults_are_retried_to_the_same_candles(server, kind):
    clean, _ = make_feed(server).fetch_closed("BTC/USDT", "1m", since=NOW - 20 * MIN)
    sleeps = Sleeps()
    server.mock.inject(Fault(kind, retry_after=0.2), Fault(kind, retry_after=0.2))
    frame, _ = make_feed(server, sleeps).fetch_closed("BTC/USDT", "1m", since=NOW - 20 * MIN)
    pd.testing.assert_frame_equal(frame, clean)
    assert len(sleeps) == 2
    if kind == "429":  # Retry-After beats the 1-10 ms backoff
        assert min(sleeps) >= 0.2
    else:
        assert max(sleeps) < 0.05


def test_retries_give_up_and_other_errors_are_not_retried(server):
    feed = make_feed(server, attempts=3)
    server.mock.inject(*[Fault("500")] * 3)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        feed.fetch_closed("BTC/USDT", "1m", since=NOW - 5 * MIN)
    sleeps = Sleeps()
    feed = make_feed(server, sleeps)
    feed.exchange.load_markets()
    with pytest.raises(FatalExchangeError, match="DOGE/USDT 1m .*: BadSymbol: binance does "
                       "not have market symbol DOGE/USDT") as info:
        feed.fetch_closed("DOGE/USDT", "1m", since=NOW - 5 * MIN)
    assert isinstance(info.value.__cause__, ccxt.BadSymbol) and "\n" not in str(info.value)
    assert sleeps == []


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"},
                               now=pd.Timestamp("2015-10-21 07:28:00", tz="UTC").timestamp()) == 10
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds(None) is None
    policy = RetryPolicy(base_delay=1.0, jitter=0.0, max_retry_after=5.0)
    assert policy.delay(2) == 4.0 and policy.delay(0, 30.0) == 5.0


def test_malformed_rows_are_rejected_with_a_reason(caplog):
    good = [MIN * 5, 1.0, 2.0, 0.5, 1.5, 10.0]
    assert row_problem(good, MIN) is None
    cases = {"not on the": [MIN * 5 + 7, 1, 2, 0.5, 1.5, 1], "non-numeric": [MIN, "x", 2, 1, 1, 1],
             "non-finite": [MIN, 1, float("nan"), 1, 1, 1], "price <= 0": [MIN, 0, 2, 0, 1, 1],
             "high/low": [MIN, 1, 0.9, 0.8, 1, 1], "expected [time": [MIN, 1, 2],
             "open time None": [None, 1, 2, 0.5, 1, 1]}
    for reason, row in cases.items():
        assert reason in row_problem(row, MIN)
    assert candles_frame([]).empty


def test_bad_row_in_a_page_is_dropped_and_logged(server, caplog, monkeypatch):
    feed = make_feed(server)
    real = feed.exchange.fetch_ohlcv

    def corrupt(*args, **kwargs):
        rows = real(*args, **kwargs)
        if rows:
            rows[0] = [rows[0][0], rows[0][1], -1.0, rows[0][3], rows[0][4], rows[0][5]]
        return rows

    monkeypatch.setattr(feed.exchange, "fetch_ohlcv", corrupt)
    with caplog.at_level(logging.WARNING, logger="kronos_quant.adapters.ccxt"):
        frame, report = feed.fetch_closed("BTC/USDT", "1m", since=NOW - 5 * MIN)
    assert len(frame) == 3 and len(report.rejected) == 1
    assert "rejected row" in caplog.text and "price <= 0" in caplog.text


def test_store_restart_fetches_only_what_is_new(server, tmp_path):
    feed = make_feed(server)
    store = CandleStore(tmp_path)
    start = pd.Timestamp(NOW - 25 * MIN, unit="ms")
    first, _ = store.update(feed, "ETH/USDT", "1m", start=start)
    server.mock.requests.clear()
    server.clock.advance(180)
    again, _ = store.update(make_feed(server), "ETH/USDT", "1m", start=start)  # a fresh client
    assert len(again) == len(first) + 3
    pd.testing.assert_frame_equal(again.iloc[:len(first)], first, check_freq=False)
    assert server.mock.requests.count("/api/v3/klines") == 1  # one page: only the new bars
    assert [p.name for p in (tmp_path / "binance").iterdir()] == ["ETH-USDT_1m.parquet"]
    assert not find_gaps(again.index, pd.Timedelta(minutes=1))
