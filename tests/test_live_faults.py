"""The live loop against the failures real exchanges produce (Binance's and OKX's own words).

Real ccxt clients against the local mock (tests/mock_exchange.py), which answers with the
exchanges' documented error bodies; the classification is ccxt's own hierarchy.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ccxt
import pandas as pd
import pytest
from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange
from kronos_quant.adapters.ccxt_errors import (
    ERROR_RULES,
    RETRY_ACTIONS,
    FatalExchangeError,
    classify,
)
from kronos_quant.strategies.brokers import CcxtBroker, PaperBroker
from kronos_quant.strategies.ledger import Ledger, client_order_id
from kronos_quant.strategies.live import LiveConfig, LiveLoop, order_size
from mock_exchange import Fault, ManualClock, MockExchange, MockServer

from kronos_quant.predictor import KronosPredictor
from kronos_quant.testing import save_tiny_pair, tiny_pair

ROOT = Path(__file__).resolve().parents[1]
MIN = 60_000
START = 1_700_000_000_000 // MIN * MIN + 1_000
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
TRANSIENT = ("-1000", "-1001", "429", "418", "500", "maintenance", "timeout", "truncated")


@pytest.fixture(scope="module")
def predictor():
    tok, model = tiny_pair(3)
    return KronosPredictor(model, tok, max_context=64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_pair(tmp_path_factory.mktemp("model"), seed=1)


def fast_retry(clock=None) -> RetryPolicy:
    if clock is None:
        return RetryPolicy(attempts=20, base_delay=0.001, max_delay=0.01, sleep=lambda s: None)
    return RetryPolicy(base_delay=0.5, max_delay=5.0, sleep=clock.sleep, clock=clock)


def make_loop(srv, state: Path, predictor, clock, *, broker=None, retry=None, exchange="binance",
              loop_clock=None, sim_ccxt=False, **overrides) -> LiveLoop:
    settings = dict(exchange=exchange, symbols=SYMBOLS, timeframe="1m", lookback=24,
                    sample_count=4, late_timeout_s=0.0, sizing="threshold", threshold=-1.0,
                    gross=0.5)
    retry = retry or fast_retry()
    feed = CcxtFeed(make_exchange(exchange, api_host=srv.url, timeout_ms=250), retry=retry)
    if broker == "ccxt":
        keyed = make_exchange(exchange, api_host=srv.url, timeout_ms=250,
                              config={"apiKey": "k-test", "secret": "s-test"})
        if sim_ccxt:  # ccxt signs with the test's clock, as it would with a synced real one
            keyed.milliseconds = lambda: int(clock() * 1000)
        broker = CcxtBroker(keyed, retry=retry, key_vars=["BINANCE_API_KEY", "BINANCE_API_SECRET"])
    return LiveLoop(LiveConfig(**{**settings, **overrides}), predictor=predictor, feed=feed,
                    store=CandleStore(state / "candles"), ledger=Ledger(state),
                    broker=broker or PaperBroker(), clock=loop_clock or clock, sleep=clock.sleep)


# -- the table ------------------------------------------------------------------------------

def walk(tree: dict) -> list[str]:
    return [name for key, sub in tree.items() for name in (key, *walk(sub))]


def test_every_ccxt_error_class_has_one_rule_by_the_hierarchy():
    from ccxt.base.errors import error_hierarchy

    names = walk({k: error_hierarchy["BaseError"][k] for k in ("ExchangeError",
                                                               "OperationFailed")})
    actions = {name: classify(getattr(ccxt, name)("x")).action for name in names}
    # OperationFailed and every subclass: retried (Binance -1000/-1001 arrive as the base)
    for name in ["OperationFailed", "NetworkError", "RequestTimeout", "BadResponse",
                 "NullResponse", "CancelPending"]:
        assert actions[name] == "retry", name
    assert actions["ExchangeNotAvailable"] == actions["OnMaintenance"] == "maintenance"
    assert actions["DDoSProtection"] == actions["RateLimitExceeded"] == "rate_limit"
    assert actions["InvalidNonce"] == actions["ChecksumError"] == "resync"
    for name in ["AuthenticationError", "PermissionDenied", "AccountNotEnabled",
                 "AccountSuspended", "BadSymbol", "NotSupported"]:
        assert actions[name] == "stop", name
    assert actions["InsufficientFunds"] == actions["InvalidOrder"] == "reject"
    assert actions["OrderNotFound"] == "reject" and actions["DuplicateOrderId"] == "duplicate"
    assert actions["BadRequest"] == actions["ExchangeError"] == "fail"
    # a duplicate id that ccxt maps to the plain InvalidOrder (Binance -2010, OKX 51016)
    assert classify(ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}')
                    ).action == "duplicate"
    assert classify(ValueError("not an exchange error")) is None
    assert {r.action for r in ERROR_RULES} >= set(RETRY_ACTIONS) | {"stop", "reject"}


@pytest.mark.parametrize("flavour", ["binance", "okx"])
def test_each_error_body_maps_to_its_rule(flavour):
    clock = ManualClock(START)
    expected = {"-1000": "OperationFailed" if flavour == "binance" else "ExchangeNotAvailable",
                "429": "DDoSProtection" if flavour == "binance" else "RateLimitExceeded",
                "-1021": "InvalidNonce", "-2010": "InsufficientFunds", "-2011": "OrderNotFound",
                "-2015": "AuthenticationError",
                "maintenance": "ExchangeNotAvailable" if flavour == "binance" else "OnMaintenance"}
    time_path = "/api/v3/time" if flavour == "binance" else "/api/v5/public/time"
    with MockServer(MockExchange(clock_ms=clock.ms, flavour=flavour)) as srv:
        exchange = make_exchange(flavour, api_host=srv.url, timeout_ms=250)
        for kind, name in expected.items():
            srv.mock.inject(Fault(kind, path=time_path))
            with pytest.raises(getattr(ccxt, name)):
                exchange.fetch_time()


# -- feed and --once through every real error body ------------------------------------------

def test_okx_candles_and_errors_give_the_same_frame():
    clock = ManualClock(START + 30_000)
    with MockServer(MockExchange(clock_ms=clock.ms, flavour="okx")) as okx, \
            MockServer(MockExchange(clock_ms=clock.ms)) as binance:
        feeds = [CcxtFeed(make_exchange(x, api_host=s.url, timeout_ms=250), retry=fast_retry())
                 for x, s in (("okx", okx), ("binance", binance))]
        since = START - 400 * MIN
        clean, report = feeds[0].fetch_closed("BTC/USDT", "1m", since=since)
        same, _ = feeds[1].fetch_closed("BTC/USDT", "1m", since=since)
        pd.testing.assert_frame_equal(clean, same)  # one market, two envelopes, one frame
        assert len(clean) == 399 and report.pages == 2  # OKX pages 300 rows at most
        okx.mock.inject(*[Fault(k, path="candles", retry_after=0.01) for k in TRANSIENT])
        again, _ = feeds[0].fetch_closed("BTC/USDT", "1m", since=since)
        pd.testing.assert_frame_equal(again, clean)
        assert not okx.mock.faults  # every fault was served, and retried


def early_in_minute_clock() -> Callable[[], int]:
    """The mock exchange's clock for the ``--once`` runs on the wall clock: 5 s into a minute
    when the test starts. The loop retries until 1 s before the next one-minute close, so on the
    real clock a run started at hh:mm:59 would have no time to retry at all."""
    shift = 5_000 - time.time() * 1000 % 60_000
    return lambda: int(time.time() * 1000 + shift)


def live_args(url: str, state: Path, models, *extra: str) -> argparse.Namespace:
    from kronos_quant.cli.live import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    tok, model = models
    return parser.parse_args(["live", "--exchange", extra[0] if extra else "binance",
                              "--symbol", "BTC/USDT,ETH/USDT", "--timeframe", "1m", "--state",
                              str(state), "--api-host", url, "--once", "--samples", "2",
                              "--lookback", "16", "--model", str(model), "--tokenizer", str(tok),
                              "--retry-delay", "0.001", "--timeout-ms", "250", *extra[1:]])


@pytest.mark.parametrize("flavour", ["binance", "okx"])
def test_live_once_succeeds_when_every_request_fails_once(flavour, models, tmp_path):
    """Each request of the run meets one real error body first (the kinds in turn)."""
    mock = MockExchange(clock_ms=early_in_minute_clock(), flavour=flavour,
                        fail_each_once=TRANSIENT)
    with MockServer(mock) as srv:
        args = live_args(srv.url, tmp_path, models, flavour)
        assert args.func(args) == 0
    with Ledger(tmp_path) as ledger:
        assert len(ledger.table("decisions")) == 2 and ledger.table("skipped").empty
    assert len(mock._seen) >= 6  # time, markets, klines of both symbols: each failed once


@pytest.mark.parametrize("kind", ["-1000", "-1001", "429", "418", "maintenance"])
def test_live_once_succeeds_through_each_binance_error(kind, models, tmp_path):
    mock = MockExchange(clock_ms=early_in_minute_clock())
    mock.inject(*[Fault(kind, path=p, retry_after=0.01) for p in ("/time", "/klines", "/klines")])
    with MockServer(mock) as srv:
        args = live_args(srv.url, tmp_path, models)
        assert args.func(args) == 0
    assert not mock.faults
    with Ledger(tmp_path) as ledger:
        assert len(ledger.table("decisions")) == 2


def test_auth_error_on_live_orders_stops_with_one_line_naming_the_variables(models, tmp_path):
    key, secret = "kq-fake-key-91c", "kq-fake-secret-3d7"
    env = {**os.environ, "BINANCE_API_KEY": key, "BINANCE_API_SECRET": secret}
    tok, model = models
    with MockServer(MockExchange(reject_keys=True)) as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "kronos_quant.cli", "-q", "live", "--exchange", "binance",
             "--symbol", "BTC/USDT", "--timeframe", "1m", "--state", str(tmp_path),
             "--api-host", srv.url, "--once", "--live-orders", "--model", str(model),
             "--tokenizer", str(tok), "--samples", "2", "--lookback", "16"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert not any(r.startswith("POST") for r in srv.mock.requests)  # no order sent
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("kronos-quant live: stopped: binance fetch_balance")
    assert "AuthenticationError" in lines[0] and "-2015" in lines[0]
    assert "BINANCE_API_KEY" in lines[0] and "BINANCE_API_SECRET" in lines[0]
    assert key not in proc.stderr + proc.stdout and secret not in proc.stderr + proc.stdout
    with Ledger(tmp_path) as ledger:
        assert ledger.table("decisions").empty  # stopped before deciding anything


# -- the continuous loop --------------------------------------------------------------------

def test_continuous_loop_decides_every_candle_when_each_request_fails_once(predictor, tmp_path):
    clock = ManualClock(START)
    mock = MockExchange(clock_ms=clock.ms, fail_each_once=(*TRANSIENT, "-1021", "lost"),
                        check_recv_window=True)
    with MockServer(mock) as srv:
        loop = make_loop(srv, tmp_path, predictor, clock, broker="ccxt", sim_ccxt=True,
                         retry=fast_retry(clock))
        assert loop.run(max_cycles=9) == 9  # continuous: it sleeps to each close + grace
        dec, orders = loop.ledger.table("decisions"), loop.ledger.table("orders")
        assert loop.ledger.table("skipped").empty
        assert dec.groupby("ts").size().tolist() == [2] * 9
        assert (orders["status"] == "filled").all() and len(orders) >= 9
        ids = [o["clientOrderId"] for o in mock.orders]
        assert sorted(ids) == sorted(orders["client_id"]) and len(set(ids)) == len(ids)
        loop.ledger.close()


def test_clock_offset_at_start_and_resync_on_1021(predictor, tmp_path, caplog):
    """Our clock runs 45 s ahead of the exchange, ccxt's real clock years off the mock's; the
    mock enforces Binance's recvWindow, so every signed call needs a measured offset."""
    clock = ManualClock(START)
    ahead = lambda: clock() + 45.0  # noqa: E731
    mock = MockExchange(clock_ms=clock.ms, check_recv_window=True)
    with MockServer(mock) as srv:
        loop = make_loop(srv, tmp_path, predictor, clock, broker="ccxt", loop_clock=ahead)
        assert loop.offset_ms == pytest.approx(-45_000, abs=50)
        loop.run(once=True)
        # decided by exchange time: the exchange's latest closed candle, not ours
        assert loop.ledger.last_decided("1m") == START // MIN * MIN - MIN
        clock.advance(60)  # ccxt's offset is now 60 s stale: -1021, resync, retry
        loop.run(once=True)
        assert "InvalidNonce" in caplog.text and "clock resync" in caplog.text
        assert (loop.ledger.table("orders")["status"] == "filled").all()
        assert len(mock.orders) == 4
        loop.ledger.close()


def test_persistent_failure_skips_the_candle_with_its_reason_then_recovers(predictor, tmp_path):
    clock = ManualClock(START)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        loop = make_loop(srv, tmp_path, predictor, clock, retry=fast_retry(clock))
        loop.run(once=True)
        clock.advance(60)
        srv.mock.inject(*[Fault("-1000", path="/klines")] * 500)
        assert loop.run(max_cycles=1) == 1  # retried until the deadline, then skipped
        assert clock() < START / 1000 + 120  # gave up before the next close
        skipped = loop.ledger.table("skipped")
        assert sorted(skipped["symbol"]) == SYMBOLS
        assert (skipped["ts"] == START // MIN * MIN).all()
        assert skipped["reason"].str.contains('OperationFailed: binance {"code": -1000').all()
        srv.mock.faults.clear()
        clock.advance(60)
        loop.run(once=True)
        dec = loop.ledger.table("decisions")
        assert sorted(dec["ts"].unique()) == [START // MIN * MIN - MIN, START // MIN * MIN + MIN]
        loop.ledger.close()


def test_stale_decisions_are_recorded_not_sent(predictor, tmp_path, monkeypatch):
    clock = ManualClock(START)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        loop = make_loop(srv, tmp_path / "paper", predictor, clock)
        loop.run(once=True)
        clock.advance(300)  # down for five candles: the catch-up decides each, sends none late
        loop.run(once=True)
        orders = loop.ledger.table("orders").set_index("ts")
        stale = orders[orders["status"] == "stale"]
        assert len(stale) >= 6 and stale["note"].str.contains("after the next candle closed").all()
        assert orders.index.max() not in stale.index  # the newest candle trades
        assert set(loop.ledger.table("fills")["client_id"]).isdisjoint(stale["client_id"])
        loop.ledger.close()
        # the real broker: decided and committed, then down before sending
        live = make_loop(srv, tmp_path / "live", predictor, clock, broker="ccxt")
        monkeypatch.setattr(CcxtBroker, "after_commit", lambda *a, **k: None)
        live.run(once=True)
        monkeypatch.undo()
        clock.advance(120)
        live.run(once=True)
        notes = live.ledger.table("orders").set_index("ts")["note"]
        first = notes.loc[notes.index.min()]
        assert first.str.startswith("stale: not sent by").all()
        assert {o["clientOrderId"][-10:] for o in srv.mock.orders} == {
            str(notes.index.max() // 1000)}
        live.ledger.close()


def test_two_bots_on_one_account_never_share_orders(predictor, tmp_path, monkeypatch):
    clock = ManualClock(START)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        a = make_loop(srv, tmp_path / "a", predictor, clock, broker="ccxt")
        b = make_loop(srv, tmp_path / "b", predictor, clock, broker="ccxt")
        assert a.bot_id != b.bot_id
        b.run(once=True)  # b trades candle t first
        with monkeypatch.context() as patch:  # a dies between its send and its record
            patch.setattr(CcxtBroker, "_record", lambda *a, **k: (_ for _ in ()).throw(
                KeyboardInterrupt("kill -9")))
            with pytest.raises(KeyboardInterrupt):
                a.run(once=True)
        a.ledger.close()
        a = make_loop(srv, tmp_path / "a", predictor, clock, broker="ccxt")  # the restart
        a.run(once=True)
        t = a.ledger.last_decided("1m")
        for loop in (a, b):
            mine = {o["clientOrderId"] for o in srv.mock.orders
                    if o["clientOrderId"].startswith(f"kq-{loop.bot_id}-")}
            orders = loop.ledger.table("orders")
            assert set(orders["client_id"]) == mine == {
                client_order_id(s, "1m", t, bot=loop.bot_id) for s in SYMBOLS}
            assert (orders["status"] == "filled").all()
        assert len(srv.mock.orders) == 4  # two per bot: none adopted, none doubled
        a.ledger.close()
        b.ledger.close()
    with pytest.raises(FatalExchangeError):  # a stop rule is raised as one line
        fast_retry().call(lambda: (_ for _ in ()).throw(ccxt.PermissionDenied("no")), what="x")


# -- no-trade band (issue 19, case 10) -------------------------------------------------------

def test_order_size_no_trade_band():
    cfg = LiveConfig(exchange="x", symbols=["A"], timeframe="1m", min_trade_weight=0.05)
    # equity 10,000: a change under 500 of value is not traded...
    assert order_size(10.4, 10.0, 1000.0, 10_000.0, cfg) == 0.0  # 400
    assert order_size(10.6, 10.0, 1000.0, 10_000.0, cfg) == pytest.approx(0.6)  # 600
    # ...exits included (a small position lingers), and min_trade_value still applies
    assert order_size(0.0, 0.4, 1000.0, 10_000.0, cfg) == 0.0
    assert order_size(0.0, 0.6, 1000.0, 10_000.0, cfg) == pytest.approx(-0.6)
    no_band = LiveConfig(exchange="x", symbols=["A"], timeframe="1m")
    assert order_size(0.0, 1e-4, 1000.0, 10_000.0, no_band) == 0.0  # worth 0.1 < 1.0
    off = LiveConfig(exchange="x", symbols=["A"], timeframe="1m")
    assert off.min_trade_weight == 0.0
    assert order_size(10.01, 10.0, 1000.0, 10_000.0, off) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="min_trade_weight must be in"):
        LiveConfig(exchange="x", symbols=["A"], timeframe="1m", min_trade_weight=1.5)


def test_no_trade_band_cuts_orders_and_fees_on_the_same_candles(predictor, tmp_path):
    clock = ManualClock(START)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        runs = {}
        for band in (0.0, 0.05):
            clock.now_ms = START
            # always long, equal weight: every candle's price drift moves the targets a little
            loop = make_loop(srv, tmp_path / str(band), predictor, clock, min_trade_weight=band)
            for _ in range(15):
                loop.run(once=True)
                clock.advance(60)
            fills = loop.ledger.table("fills")
            runs[band] = (len(fills), fills["fee"].sum())
            loop.ledger.close()
    (n0, fee0), (n1, fee1) = runs[0.0], runs[0.05]
    # without the band every symbol trades every candle (fills one candle later, next_open)
    assert n0 == 2 * 14 and n1 == 2 and fee1 < fee0
