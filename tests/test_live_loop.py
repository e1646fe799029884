"""The live loop on a real ccxt client against the local mock: faults, catch-up, ledger, sizing."""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pandas as pd
import pytest
from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange
from kronos_quant.strategies.brokers import OrderRequest, PaperBroker, credentials_from_env
from kronos_quant.strategies.ledger import Ledger, client_order_id, from_ms
from kronos_quant.strategies.live import LiveConfig, LiveLoop, target_positions
from mock_exchange import Fault, ManualClock, MockExchange, MockServer

from kronos_quant.predictor import KronosPredictor
from kronos_quant.testing import tiny_pair

MIN = 60_000
START = 1_700_000_000_000 // MIN * MIN + 1_000  # 1 s after a 1m close
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def predictor():
    tok, model = tiny_pair(3)
    return KronosPredictor(model, tok, max_context=64)


@pytest.fixture()
def world(tmp_path, predictor):
    clock = ManualClock(START)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        def make(state=tmp_path, **overrides):
            settings = dict(exchange="binance", symbols=SYMBOLS, timeframe="1m", lookback=24,
                            sample_count=4, late_timeout_s=6.0, late_poll_s=2.0)
            config = LiveConfig(**{**settings, **overrides})
            feed = CcxtFeed(make_exchange("binance", api_host=srv.url, timeout_ms=250),
                            retry=RetryPolicy(base_delay=0.001, max_delay=0.01,
                                              sleep=lambda s: None))
            return LiveLoop(config, predictor=predictor, feed=feed,
                            store=CandleStore(state / "candles"), ledger=Ledger(state),
                            broker=PaperBroker(), clock=clock, sleep=clock.sleep)

        yield srv, clock, make


def decided_times(ledger: Ledger) -> pd.DataFrame:
    return ledger.table("decisions").groupby("ts")["symbol"].count()


def test_faults_late_candle_gap_and_catch_up_give_one_decision_per_candle(world):
    srv, clock, make = world
    loop = make()
    loop.run(once=True)
    first = loop.ledger.last_decided("1m")
    assert first == START // MIN * MIN - MIN  # first start: the newest closed candle only
    srv.mock.inject(Fault("500"), Fault("429", retry_after=0.01), Fault("timeout"),
                    Fault("truncated"), Fault("duplicate"))
    gap = first + 3 * MIN
    srv.mock.missing.add(gap)
    for _ in range(6):
        clock.advance(60)
        loop.run(once=True)
    clock.advance(60)
    srv.mock.inject(*[Fault("late")] * 2)  # the newest candle comes two polls late
    result = loop.cycle()
    assert result.decided[-1] == from_ms(first + 7 * MIN) and result.waiting == []
    clock.advance(240)  # a long stall: four candles to catch up in one cycle
    assert len(loop.cycle().decided) == 4
    counts = decided_times(loop.ledger)
    # every closed candle decided once, for every symbol, in order; the exchange never had
    # the gap candle, so there is nothing to decide there
    assert list(counts.index) == [first + k * MIN for k in range(12) if k != 3]
    assert (counts == len(SYMBOLS)).all()
    orders = loop.ledger.table("orders")
    assert orders["client_id"].is_unique
    assert len(loop.ledger.table("equity")) == len(counts)


def test_decision_at_t_ignores_later_candles(world, tmp_path):
    srv, clock, make = world
    loop = make(tmp_path / "a")
    clock.advance(600)
    loop.run(once=True)
    t = from_ms(loop.ledger.last_decided("1m"))
    scores = loop.ledger.table("scores").set_index(["symbol", "scorer"])["value"]
    # the same candle decided from a store that also holds ten later candles
    late = make(tmp_path / "b")
    late._refresh(srv.mock.clock_ms())
    clock.advance(600)
    late._refresh(srv.mock.clock_ms())
    assert late.frames["BTC/USDT"].index[-1] > t
    late.decide(t)
    again = late.ledger.table("scores").set_index(["symbol", "scorer"])["value"]
    pd.testing.assert_series_equal(again, scores)


def test_paper_fill_at_next_open_with_fee_and_slippage(tmp_path):
    broker = PaperBroker(fee_rate=0.01, slippage=0.001)
    with Ledger(tmp_path) as ledger:
        ledger.init_meta({"initial_cash": 1000.0, "exchange": "x", "timeframe": "1m"})
        with ledger.transaction() as db:
            broker.place(db, OrderRequest("id1", "A/B", "1m", 0, 2.0, 100.0))
        assert ledger.positions() == {} and ledger.cash() == 1000.0
        with ledger.transaction() as db:
            broker.on_candle(db, "A/B", MIN, {"open": 110.0})
        px = 110.0 * 1.001
        assert ledger.positions()["A/B"].qty == 2.0
        assert ledger.cash() == pytest.approx(1000.0 - 2 * px - 0.01 * 2 * px)
        with pytest.raises(RuntimeError), ledger.transaction() as db:  # rolled back as a unit
            broker.place(db, OrderRequest("id2", "A/B", "1m", MIN, -2.0, 100.0))
            raise RuntimeError("crash inside the decision")
        assert len(ledger.orders()) == 1
        with pytest.raises(ValueError, match="another set-up"):
            ledger.init_meta({"initial_cash": 5.0})


def test_target_positions_threshold_and_probability_weighted():
    scores = pd.DataFrame({"prob_up": [0.75, 0.52, 1.0], "expected_return": [0.02, -0.01, 0.0]},
                          index=["A", "B", "C"])
    prob = LiveConfig(exchange="x", symbols=list("ABC"), timeframe="1m")
    w = target_positions(scores, prob)
    # convictions 0.5, 0 (dead band), 1.0 → split 1:2, scaled by (0.5 + 1) / 3
    np.testing.assert_allclose(w.to_numpy(), [0.5 / 3, 0.0, 1.0 / 3])
    # the cap bounds the final weight: C's 1/3 → 0.25, its excess to A (1/6 → 0.25)
    capped = LiveConfig(exchange="x", symbols=list("ABC"), timeframe="1m", max_weight=0.25)
    np.testing.assert_allclose(target_positions(scores, capped).to_numpy(), [0.25, 0.0, 0.25])
    alone = LiveConfig(exchange="x", symbols=["A"], timeframe="1m")
    assert target_positions(scores.loc[["A"]], alone)["A"] == pytest.approx(0.5)
    thr = LiveConfig(exchange="x", symbols=list("ABC"), timeframe="1m", sizing="threshold",
                     threshold=0.005, max_weight=0.8)
    np.testing.assert_allclose(target_positions(scores, thr).to_numpy(), [0.8, 0.0, 0.0])
    with pytest.raises(ValueError, match="sizing must be one of"):
        LiveConfig(exchange="x", symbols=["A"], timeframe="1m", sizing="kelly")


def test_binding_cap_in_live_sizing_is_debug_not_a_warning_per_candle(caplog):
    from kronos_quant.portfolio import target_weights

    scores = pd.DataFrame({"expected_return": [0.02]}, index=["A"])
    config = LiveConfig(exchange="x", symbols=["A"], timeframe="1m", sizing="threshold",
                        max_weight=0.5)
    caplog.set_level(logging.INFO, logger="kronos_quant.portfolio")
    for _ in range(3):  # three candles
        assert target_positions(scores, config)["A"] == pytest.approx(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.set_level(logging.DEBUG, logger="kronos_quant.portfolio")
    target_positions(scores, config)
    assert [r.levelname for r in caplog.records if "cap wins" in r.getMessage()] == ["DEBUG"]
    caplog.clear()  # outside the live loop the same weights still warn
    panel = scores.rename_axis("instrument").assign(datetime=pd.Timestamp("2024-01-01"))
    target_weights(panel.set_index("datetime", append=True).swaplevel()["expected_return"],
                   method="threshold", threshold=0.0, max_weight=0.5)
    assert [r.levelname for r in caplog.records if "cap wins" in r.getMessage()] == ["WARNING"]


def test_client_ids_credentials_and_cli_parser(world, tmp_path, capsys):
    assert client_order_id("BTC/USDT", "1h", 1_700_000_000_000) == "kq-BTCUSDT-1h-1700000000"
    assert len(client_order_id("VERYLONGBASECOIN/USDT:USDT", "15m", 10**13)) <= 36
    with pytest.raises(ValueError, match="BINANCE_API_SECRET"):
        credentials_from_env("binance", {"BINANCE_API_KEY": "k"})
    assert credentials_from_env("binance", {"BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"}) \
        == {"apiKey": "k", "secret": "s"}
    from kronos_quant.cli.live import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    srv, clock, make = world
    args = parser.parse_args(["live", "--exchange", "binance", "--symbol", "BTC/USDT,ETH/USDT",
                              "--timeframe", "1m", "--state", str(tmp_path / "s"), "--api-host",
                              srv.url, "--once", "--samples", "4", "--lookback", "24",
                              "--retry-delay", "0.001", "--timeout-ms", "500"])
    assert args.func(args) == 0
    with Ledger(tmp_path / "s") as ledger:
        assert len(ledger.table("decisions")) == 2
        assert json.loads(ledger.table("decisions")["forecast"][0])["samples"] == 4
    args = parser.parse_args(["live-report", "--state", str(tmp_path / "s"), "--no-tearsheet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "equity: 10,000.00" in out and "PnL: +0.00" in out and "hit rate" in out


def test_live_report_equity_hit_rate_and_tearsheet(world, tmp_path, capsys):
    srv, clock, make = world
    loop = make(tmp_path / "s", dead_band=0.0, sizing="threshold", threshold=-1.0)  # always long
    loop.run(once=True)
    for _ in range(5):
        clock.advance(60)
        loop.run(once=True)
    from kronos_quant.strategies.live_report import live_report

    from kronos_quant.cli.live import register
    from kronos_quant.data import periods_per_year

    report = live_report(loop.ledger)
    candles = loop.ledger.table("candles").pivot(index="ts", columns="symbol", values="open")
    nxt = candles.shift(-2) / candles.shift(-1) - 1  # next_open → open one bar later
    realised = nxt.stack().dropna()
    assert report.calls == len(realised) and report.hits == int((realised > 0).sum())
    cash = loop.ledger.cash()
    marks = loop.ledger.table("decisions").groupby("symbol")["close"].last()
    value = sum(p.qty * marks[s] for s, p in loop.ledger.positions().items())
    assert report.equity.iloc[-1] == pytest.approx(cash + value)
    assert report.fees > 0 and report.pnl == pytest.approx(cash + value - 10_000.0)
    # The rate carries its uncertainty; hand case: 52 of 101 (Wilson interval by hand).
    from kronos_quant.strategies.live_report import hit_rate_text

    z, n, k = 1.959963984540054, 101, 52
    centre, half = (k + z * z / 2) / (n + z * z), z / (n + z * z) * (k * (n - k) / n
                                                                     + z * z / 4) ** 0.5
    assert hit_rate_text(k, n) == (f"51.5% (52/101; 95% CI {centre - half:.1%}–"
                                   f"{centre + half:.1%}, p = 0.84 against 50%)")
    assert hit_rate_text(0, 0) == "n/a"
    assert periods_per_year(bar_seconds=3600) == 8760
    assert periods_per_year(bar_seconds=86400) == 365
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["live-report", "--state", str(tmp_path / "s"), "--out",
                              str(tmp_path / "ts.html")])
    assert args.func(args) == 0
    assert "wrote tear sheet" in capsys.readouterr().out
    assert "<html" in (tmp_path / "ts.html").read_text().lower()
    with pytest.raises(SystemExit):
        parser.parse_args(["live", "--exchange", "binance", "--timeframe", "1m", "--state", "x",
                           "--samples", "0"])
