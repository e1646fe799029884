"""Helpers shared by tests/test_serve*.py: live-loop ledgers written by a replayed loop."""
from __future__ import annotations

import pandas as pd
from kronos_quant.adapters.ccxt import CandleStore
from kronos_quant.strategies.brokers import PaperBroker
from kronos_quant.strategies.ledger import Ledger, to_ms
from kronos_quant.strategies.live import LiveConfig, LiveLoop
from kronos_quant.strategies.replay import ReplayFeed, timeframe_step

from kronos_quant.data import synthetic_ohlcv

SYMBOLS = ["AAA", "BBB"]


def replay_steps(state, predictor, candles, times):
    """A live loop over recorded hourly candles; yields after each candle it decides."""
    step = timeframe_step("1h")
    feed = ReplayFeed(candles, timeframe="1h", step=step)
    config = LiveConfig(exchange="replay", symbols=SYMBOLS, timeframe="1h", lookback=16,
                        pred_len=2, sample_count=4)
    with Ledger(state) as ledger:
        loop = LiveLoop(config, predictor=predictor, feed=feed,
                        store=CandleStore(state / "candles"), ledger=ledger,
                        broker=PaperBroker(), clock=lambda: feed.now_ms / 1000.0,
                        sleep=lambda _s: None)
        for t in times:
            feed.now_ms = to_ms(t + step) + 2_000
            loop.run(once=True)
            yield ledger


def hourly_candles(n: int = 60) -> dict[str, pd.DataFrame]:
    """Seeded hourly candles of each of :data:`SYMBOLS`."""
    return {s: synthetic_ohlcv(n, freq="1h", seed=k, start="2024-03-01")
            for k, s in enumerate(SYMBOLS)}
