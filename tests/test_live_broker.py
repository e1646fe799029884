"""The real-order broker (``--live-orders``) on the real ccxt client against the local mock's
signed Binance endpoints: idempotent client order ids, a lost response, a restart, no keys
in logs or state files."""
from __future__ import annotations

import logging

import pytest
from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange
from kronos_quant.strategies.brokers import CcxtBroker, credentials_from_env, fill_in_quote
from kronos_quant.strategies.ledger import Ledger, client_order_id
from kronos_quant.strategies.live import LiveConfig, LiveLoop
from mock_exchange import COMMISSION, Fault, ManualClock, MockExchange, MockServer

from kronos_quant.predictor import KronosPredictor
from kronos_quant.testing import tiny_pair

MIN = 60_000
START = 1_700_000_000_000 // MIN * MIN + 1_000  # 1 s after a 1m close
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
# Fake keys, set only in this test's environment; the mock accepts any signature.
KEY, SECRET = "kq-test-key-7f3a9c", "kq-test-secret-52e1bd"
CASH = 10_000.0


@pytest.fixture(scope="module")
def predictor():
    tok, model = tiny_pair(3)
    return KronosPredictor(model, tok, max_context=64)


@pytest.fixture()
def world(tmp_path, predictor, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # everything, urllib3's request lines included
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)
    clock = ManualClock(START)
    retry = RetryPolicy(base_delay=0.001, max_delay=0.01, sleep=lambda s: None)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        def make() -> LiveLoop:
            # every symbol long at equal weight (expected return above −1): orders each time
            config = LiveConfig(exchange="binance", symbols=SYMBOLS, timeframe="1m",
                                lookback=24, sample_count=4, sizing="threshold",
                                threshold=-1.0, gross=0.5, initial_cash=CASH)
            feed = CcxtFeed(make_exchange("binance", api_host=srv.url, timeout_ms=300),
                            retry=retry)
            keyed = make_exchange("binance", api_host=srv.url, timeout_ms=300,
                                  config=credentials_from_env("binance"))
            return LiveLoop(config, predictor=predictor, feed=feed,
                            store=CandleStore(tmp_path / "candles"), ledger=Ledger(tmp_path),
                            broker=CcxtBroker(keyed, retry=retry), clock=clock,
                            sleep=clock.sleep)

        yield srv.mock, clock, make, tmp_path


def posts(mock: MockExchange) -> int:
    return sum(r == "POST /api/v3/order" for r in mock.requests)


def assert_ledger_matches_exchange(ledger: Ledger, mock: MockExchange) -> None:
    """The ledger's positions and cash move exactly as the exchange's balances did."""
    for symbol in SYMBOLS:
        base = symbol.split("/")[0]
        assert ledger.positions()[symbol].qty == pytest.approx(mock.balances[base], rel=1e-9)
    spent = 1_000_000.0 - mock.balances["USDT"]
    assert CASH - ledger.cash() == pytest.approx(spent, rel=1e-6)


def test_orders_carry_the_decision_client_id_and_fills_match_the_exchange(world):
    mock, clock, make, state = world
    loop = make()
    loop.run(once=True)
    t = loop.ledger.last_decided("1m")
    expected = {client_order_id(s, "1m", t, bot=loop.bot_id) for s in SYMBOLS}
    assert all(cid.startswith(f"kq-{loop.ledger.bot_id()}-") for cid in expected)
    assert {o["clientOrderId"] for o in mock.orders} == expected
    assert all(o["type"] == "MARKET" and o["side"] == "BUY" for o in mock.orders)
    orders = loop.ledger.orders()
    assert set(orders["client_id"]) == expected and (orders["status"] == "filled").all()
    assert set(orders["exchange_order_id"]) == {str(o["orderId"]) for o in mock.orders}
    assert_ledger_matches_exchange(loop.ledger, mock)
    # half the equity (gross 0.5) went into the two symbols at the decision's prices
    assert 0.4 * CASH < CASH - loop.ledger.cash() < 0.6 * CASH
    assert mock.api_keys and set(mock.api_keys) == {KEY}  # the signed calls were made
    loop.ledger.close()


def test_a_lost_response_is_retried_without_a_second_order(world, caplog):
    mock, clock, make, state = world
    mock.inject(Fault("lost", path="/api/v3/order", method="POST", delay=0.8))
    loop = make()
    loop.run(once=True)
    assert posts(mock) == len(SYMBOLS)  # the lookup found the lost one: no second POST
    ids = [o["clientOrderId"] for o in mock.orders]
    assert len(ids) == len(set(ids)) == len(SYMBOLS)
    assert "RequestTimeout" in caplog.text  # the timeout happened and was retried
    notes = loop.ledger.orders().set_index("client_id")["note"]
    assert notes.str.contains("already at the exchange").sum() == 1
    assert_ledger_matches_exchange(loop.ledger, mock)
    # Binance (and the mock) take a filled order's client id again: a blind resend would
    # have made a second order, which is what the lookup prevents.
    exchange = loop.broker.exchange
    exchange.create_order(SYMBOLS[0], "market", "buy", 0.001, None, {"clientOrderId": ids[0]})
    assert [o["clientOrderId"] for o in mock.orders].count(ids[0]) == 2
    loop.ledger.close()


def test_restart_after_a_crash_between_send_and_record_does_not_double(world, monkeypatch):
    mock, clock, make, state = world

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the order left, before the ledger heard back")

    loop = make()
    with monkeypatch.context() as patch:
        patch.setattr(CcxtBroker, "_record", crash)
        with pytest.raises(KeyboardInterrupt):
            loop.run(once=True)
    loop.ledger.close()
    assert len(mock.orders) == 1
    with Ledger(state) as ledger:
        assert (ledger.orders()["status"] == "pending").all() and ledger.positions() == {}
    restarted = make()  # same state, same candle: the decision is done, its orders pending
    restarted.run(once=True)
    orders = restarted.ledger.orders()
    assert len(mock.orders) == len(SYMBOLS) and (orders["status"] == "filled").all()
    assert orders["note"].str.contains("already at the exchange").sum() == 1
    assert_ledger_matches_exchange(restarted.ledger, mock)
    clock.advance(60)  # the next candle trades only its own delta, under its own ids
    restarted.run(once=True)
    ids = [o["clientOrderId"] for o in mock.orders]
    assert len(ids) == len(set(ids)) == len(restarted.ledger.orders())
    assert_ledger_matches_exchange(restarted.ledger, mock)
    restarted.ledger.close()


def test_keys_never_reach_logs_or_state_files(world, caplog):
    mock, clock, make, state = world
    mock.inject(Fault("500", path="/api/v3/order", method="POST"))
    loop = make()
    for _ in range(2):
        loop.run(once=True)
        clock.advance(60)
    loop.ledger.close()
    assert len(mock.orders) == 2 * len(SYMBOLS) and set(mock.api_keys) == {KEY}
    assert "500" in caplog.text and "/api/v3/order" in caplog.text  # requests were logged
    for secret in (KEY, SECRET):
        assert secret not in caplog.text
        for path in state.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_fill_in_quote_prices_commissions_in_either_asset(caplog):
    market = {"base": "BTC", "quote": "USDT"}
    assert fill_in_quote(market, 0.5, 100.0, [{"cost": 0.0005, "currency": "BTC"}]) == \
        pytest.approx((0.4995, 0.05))
    assert fill_in_quote(market, -0.5, 100.0, [{"cost": 0.05, "currency": "USDT"}]) == \
        (-0.5, 0.05)
    assert fill_in_quote(market, 0.5, 100.0, []) == (0.5, 0.0)
    two = [{"cost": 0.0001, "currency": "BTC"}, {"cost": 0.02, "currency": "USDT"}]
    assert fill_in_quote(market, 0.5, 100.0, two) == pytest.approx((0.4999, 0.03))
    assert fill_in_quote(market, 0.5, 100.0, [{"cost": 0.01, "currency": "BNB"}]) == (0.5, 0.0)
    assert "BNB" in caplog.text and COMMISSION == 0.001
