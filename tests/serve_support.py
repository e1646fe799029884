"""Helpers shared by tests/test_serve*.py: live-loop ledgers written by a replayed loop."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
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
    """Seeded hourly candles of each of :data:`SYMBOLS`, round the clock as an exchange's (the
    loop fetches lookback + 2 hours of history: session bars would leave too few)."""
    stamps = pd.date_range("2024-03-01", periods=n, freq="h", name="timestamps")
    return {s: synthetic_ohlcv(n, freq="1h", seed=k, start="2024-03-01").set_axis(stamps)
            for k, s in enumerate(SYMBOLS)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_serve(*args: str, env: dict[str, str] | None = None
                  ) -> Iterator[tuple[str, list[str]]]:
    """``kronos-quant serve ARGS`` on a free loopback port: yields (its URL, a list that holds
    its whole output once the block has ended and the server has stopped)."""
    port = free_port()
    cmd = [sys.executable, "-m", "kronos_quant.cli", "serve", "--port", str(port),
           "--threads", "1", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    url, output = f"http://127.0.0.1:{port}", []
    try:
        for _ in range(240):  # bounded: 60 s for the model to load
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {proc.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        else:
            raise RuntimeError("kronos-quant serve did not answer /health within 60 s")
        yield url, output
    finally:
        proc.terminate()
        output.append(proc.communicate(timeout=30)[0])
