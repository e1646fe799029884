"""The live loop's hold rule (issue 19, case 10): enter only when P(up) is clearly away from ½,
hold inside the band, leave only on a clear reversal; bands in standard errors of P(up)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange
from kronos_quant.strategies.brokers import PaperBroker
from kronos_quant.strategies.ledger import Ledger
from kronos_quant.strategies.live import LiveConfig, LiveLoop, hold_targets
from mock_exchange import ManualClock, MockExchange, MockServer

from kronos_quant.predictor import KronosPredictor
from kronos_quant.testing import tiny_pair

MIN = 60_000
START = 1_700_000_000_000 // MIN * MIN + 1_000
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def cfg(**kw) -> LiveConfig:
    return LiveConfig(**{"exchange": "x", "symbols": ["A", "B"], "timeframe": "1m", **kw})


def rule(sized, held, prob, *, entry=0.25, exit=0.25, gross=1.0):
    index = list("ABCD")[:len(sized)]
    targets, actions = hold_targets(pd.Series(sized, index=index, dtype=float),
                                    pd.Series(held, index=index, dtype=float),
                                    pd.Series(prob, index=index, dtype=float),
                                    entry=entry, exit=exit, gross=gross)
    return targets.to_numpy(), list(actions)


# -- the rule on hand-made scores ------------------------------------------------------------

def test_inside_the_band_a_position_is_held_not_closed():
    # A held long at 0.3 whose P(up) weakens to 0.55 (sized 0.05) or dips to 0.4: held
    targets, actions = rule([0.05, 0.0], [0.3, 0.3], [0.55, 0.40])
    np.testing.assert_allclose(targets, [0.3, 0.3])
    assert actions == ["hold", "hold"]
    # a flat name inside the band stays flat, even though sizing gives it a small weight
    targets, actions = rule([0.1, 0.0], [0.0, 0.0], [0.6, 0.5])
    np.testing.assert_allclose(targets, [0.0, 0.0])
    assert actions == ["flat", "flat"]


def test_exit_only_on_a_clear_reversal_and_entry_only_when_clearly_away():
    # exit at P(up) < 0.5 - 0.25: 0.25 is still inside (held), 0.1875 leaves
    targets, actions = rule([0.0, 0.0], [0.3, 0.3], [0.25, 0.1875])
    np.testing.assert_allclose(targets, [0.3, 0.0])
    assert actions == ["hold", "exit"]
    # entry at |P(up) - 0.5| >= 0.25: 0.75 enters at the sized weight, 0.6875 does not
    targets, actions = rule([0.25, 0.19], [0.0, 0.0], [0.75, 0.6875])
    np.testing.assert_allclose(targets, [0.25, 0.0])
    assert actions == ["enter", "flat"]
    # a clear signal on the held side resizes to the sized weight (min_trade_weight still
    # decides whether that order is worth sending)
    targets, actions = rule([0.45], [0.3], [0.95])
    np.testing.assert_allclose(targets, [0.45])
    assert actions == ["follow"]
    # a wider exit band holds through a reversal the entry band would call clear
    targets, actions = rule([0.0], [0.3], [0.2], exit=0.375)
    np.testing.assert_allclose(targets, [0.3])
    assert actions == ["hold"]
    # a missing P(up) is no reversal: held
    targets, actions = rule([0.0], [0.3], [np.nan])
    assert actions == ["hold"] and targets[0] == pytest.approx(0.3)


def test_long_short_reverses_only_into_a_clear_entry():
    # short held: P(up) 0.9 is a clear long entry (straight across), 0.65 only an exit to flat
    targets, actions = rule([0.4, 0.15], [-0.3, -0.3], [0.9, 0.65], entry=0.25, exit=0.1)
    np.testing.assert_allclose(targets, [0.4, 0.0])
    assert actions == ["exit", "exit"]
    targets, actions = rule([-0.2], [0.0], [0.2])  # a flat name enters short when clear
    np.testing.assert_allclose(targets, [-0.2])
    assert actions == ["enter"]


def test_kept_positions_come_first_within_gross():
    # A kept at 0.7 (price drift), B enters at 0.6: B gets the 0.3 left of gross 1
    targets, actions = rule([0.2, 0.6], [0.7, 0.0], [0.55, 0.95])
    np.testing.assert_allclose(targets, [0.7, 0.3])
    assert actions == ["hold", "enter"]
    assert abs(targets).sum() == pytest.approx(1.0)


def test_entry_band_scales_with_the_sampling_error_of_p_up():
    # √(¼/S): 0.125 at 16 paths, 0.0625 at 64; exit_z defaults to entry_z
    assert cfg(entry_z=2, sample_count=16).hold_bands() == pytest.approx((0.25, 0.25))
    assert cfg(entry_z=2, sample_count=64).hold_bands() == pytest.approx((0.125, 0.125))
    assert cfg(entry_z=2, exit_z=3, sample_count=16).hold_bands() == pytest.approx((0.25, 0.375))
    assert cfg().hold_bands() is None and cfg(entry_z=0, exit_z=0).hold_bands() is None
    # the same P(up) = 0.7 is noise with 16 paths (1.6 standard errors) and an entry with 64
    for paths, action in ((16, "flat"), (64, "enter")):
        entry, exit = cfg(entry_z=2, sample_count=paths).hold_bands()
        _, actions = rule([0.2], [0.0], [0.7], entry=entry, exit=exit)
        assert actions == [action], paths


@pytest.mark.parametrize(("kw", "message"), [
    (dict(entry_z=-1.0), "entry_z must be a finite number >= 0, got -1.0"),
    (dict(entry_z=math.nan), "entry_z must be a finite number >= 0, got nan"),
    (dict(entry_z=2, exit_z="3"), "exit_z must be a finite number >= 0, got '3'"),
    (dict(entry_z=5, sample_count=16),
     "entry_z=5 with sample_count=16 puts the entry band at |P(up) - 1/2| >= 0.625: no "
     "forecast can reach it; use entry_z <= 4 (the square root of sample_count)"),
    (dict(entry_z=2, exit_z=4, sample_count=16),
     "exit_z=4 with sample_count=16 puts the exit beyond P(up) = 0 or 1: a position could "
     "never be left; use exit_z < 4 (the square root of sample_count)"),
    (dict(entry_z=2, sizing="threshold"),
     "entry_z/exit_z (the hold band on P(up)) apply to sizing='prob'; got sizing='threshold'"),
])
def test_live_config_refuses_bad_hold_bands_naming_the_field(kw, message):
    with pytest.raises(ValueError) as info:
        cfg(**kw)
    assert str(info.value) == message


# -- through the loop on the mock exchange ---------------------------------------------------

@pytest.fixture(scope="module")
def predictor():
    tok, model = tiny_pair(3)
    return KronosPredictor(model, tok, max_context=64)


def trade(srv, clock, state, predictor, candles: int, **overrides) -> Ledger:
    clock.now_ms = START
    config = LiveConfig(**{**dict(exchange="binance", symbols=SYMBOLS, timeframe="1m",
                                  lookback=24, sample_count=4, late_timeout_s=0.0,
                                  max_weight=0.6), **overrides})
    feed = CcxtFeed(make_exchange("binance", api_host=srv.url, timeout_ms=250),
                    retry=RetryPolicy(base_delay=0.001, max_delay=0.01, sleep=lambda s: None))
    loop = LiveLoop(config, predictor=predictor, feed=feed, store=CandleStore(state / "candles"),
                    ledger=Ledger(state), broker=PaperBroker(fee_rate=0.001, slippage=0.0005),
                    clock=clock, sleep=clock.sleep)
    for _ in range(candles):
        loop.run(once=True)
        clock.advance(60)
    return loop.ledger


def test_the_hold_band_cuts_orders_on_the_same_candles_and_records_what_it_holds(
        predictor, tmp_path):
    clock = ManualClock(START)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv:
        off = trade(srv, clock, tmp_path / "off", predictor, 20)
        on = trade(srv, clock, tmp_path / "on", predictor, 20, entry_z=1.0)  # 4 paths: ±0.25
        runs = {name: (ledger.table("orders"), ledger.table("decisions"), ledger.table("scores"),
                       ledger.table("fills")) for name, ledger in (("off", off), ("on", on))}
        off.close()
        on.close()
    (orders_off, dec_off, _, fills_off), (orders_on, decisions, scores, fills_on) = (
        runs["off"], runs["on"])
    assert len(dec_off) == len(decisions) == 2 * 20  # the same candles decided
    assert 0 < len(orders_on) < len(orders_off)
    assert fills_on["fee"].sum() < fills_off["fee"].sum()
    # inside the band (long only, 4 paths: 0.25 <= P(up) < 0.75) nothing is ordered and the
    # decision records the position held then (every earlier order filled at the next open)
    p = scores[scores["scorer"] == "prob_up"].set_index(["symbol", "ts"])["value"]
    signed = orders_on.assign(q=np.where(orders_on["side"] == "buy", 1.0, -1.0) * orders_on["qty"])
    inside = 0
    for (symbol, ts), row in decisions.set_index(["symbol", "ts"]).iterrows():
        if 0.25 <= p[(symbol, ts)] < 0.75:
            inside += 1
            mine = signed[signed["symbol"] == symbol]
            assert not (mine["ts"] == ts).any()
            assert row["target_qty"] == pytest.approx(mine.loc[mine["ts"] < ts, "q"].sum(),
                                                      abs=1e-12)
    assert inside >= 5
