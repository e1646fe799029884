"""kill -9 in the middle of the live loop, then restart: no duplicate, no lost row, no skip.

The loop runs as a real subprocess (``python -m kronos_quant.cli live``) on 1-second
candles from the local mock exchange, which runs on the real clock in this process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from kronos_quant.strategies.ledger import Ledger
from mock_exchange import MockExchange, MockServer

from kronos_quant.testing import save_tiny_pair

ROOT = Path(__file__).resolve().parents[1]


def start_loop(url: str, state: Path, models: tuple[Path, Path], log: Path) -> subprocess.Popen:
    tok, model = models
    cmd = [sys.executable, "-m", "kronos_quant.cli", "live", "--exchange", "binance",
           "--symbol", "BTC/USDT", "--symbol", "ETH/USDT", "--timeframe", "1s",
           "--state", str(state), "--api-host", url, "--model", str(model), "--tokenizer",
           str(tok), "--lookback", "16", "--samples", "4", "--grace", "0.05",
           "--late-timeout", "0.5", "--late-poll", "0.1", "--retry-delay", "0.01",
           "--timeout-ms", "2000", "--fill", "next_open"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def decisions(state: Path) -> pd.DataFrame:
    if not (state / Ledger.FILE).exists():
        return pd.DataFrame(columns=["ts", "symbol"])
    with Ledger(state) as ledger:
        return ledger.table("decisions")


def wait_for(state: Path, n: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while len(decisions(state)) < n:
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"loop stopped or stalled (rc {proc.poll()}):\n"
                                 + log.read_text()[-3000:])
        time.sleep(0.02)


def test_kill_9_mid_cycle_then_restart(tmp_path):
    models = save_tiny_pair(tmp_path / "model", seed=1)
    state, log = tmp_path / "state", tmp_path / "loop.log"
    with MockServer(MockExchange()) as srv:
        proc = start_loop(srv.url, state, models, log)
        wait_for(state, 6, proc, log)
        os.kill(proc.pid, signal.SIGKILL)  # whatever it was doing: fetching, sampling, writing
        proc.wait()
        killed_at = decisions(state)
        time.sleep(1.5)  # candles close while it is down
        proc = start_loop(srv.url, state, models, log)
        wait_for(state, len(killed_at) + 8, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()[-3000:]
    assert "signal SIGTERM" in log.read_text()
    with Ledger(state) as ledger:
        dec = ledger.table("decisions")
        orders, fills = ledger.table("orders"), ledger.table("fills")
        equity, candles = ledger.table("equity"), ledger.table("candles")
    per_time = dec.groupby("ts")["symbol"].count()
    stamps = per_time.index.to_numpy()
    # every second from the first decision to the last decided once, for both symbols
    assert (per_time == 2).all()
    assert list(stamps) == list(range(stamps[0], stamps[-1] + 1, 1000))
    assert stamps[-1] > killed_at["ts"].max() + 1000  # the restart caught up past the crash
    assert set(equity["ts"]) == set(stamps) and len(candles) == len(dec)
    assert orders["client_id"].is_unique and fills["client_id"].is_unique
    keys = orders[["symbol", "ts"]].apply(tuple, axis=1)
    assert keys.is_unique  # at most one order per (symbol, candle)
    # every order but the newest per symbol has been filled at a later candle's open, or was
    # decided after the next candle closed (catching up after the kill) and is stale, unsent
    pending = orders[orders["status"] == "pending"]
    stale = orders[orders["status"] == "stale"]
    assert (pending.groupby("symbol")["ts"].max() == stamps[-1]).all()
    assert stale["note"].str.startswith("stale: decided at").all()
    assert set(fills["client_id"]) == (set(orders["client_id"]) - set(pending["client_id"])
                                       - set(stale["client_id"]))
