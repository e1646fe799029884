"""The live loop's soak run: random exchange faults and ``kill -9`` restarts on a fast clock.

Used by ``tests/test_live_soak.py`` and ``benchmarks/bench_live_soak.py``. The mock exchange
(``tests/mock_exchange.py``) runs in this process on a :class:`SimClock` (60× real time, plus
every sleep the loop hands it: idle time costs nothing) and serves ~``fault_rate`` of requests
a random fault, seeded (every kind in ``RANDOM_FAULTS``). The loop runs as a child process
(``python tests/live_soak.py child ...``) with the real ccxt client and the real-order broker
against the mock's signed endpoints. The parent kills it with SIGKILL at random moments; on
every other start the child kills itself (SIGKILL) right after an order was sent and before the
ledger recorded it. The last few candles run without faults, so that what a kill left
pending settles. After the run, :func:`check_invariants` compares the ledger with the exchange.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MIN = 60_000
START_MS = 1_700_000_000_000 // MIN * MIN + 2_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")
CASH = 10_000.0


class RemoteClock:
    """The child's view of the mock's :class:`SimClock`: synced once, then local; a sleep is
    handed to the mock (``POST /mock/sleep``), which jumps its clock by as much."""

    def __init__(self, url: str, factor: float) -> None:
        import requests

        self.session, self.url, self.factor = requests.Session(), url, factor
        self.ms0 = self.session.get(f"{url}/mock/clock", timeout=5).json()["ms"]
        self.real0, self.jumped_ms = time.monotonic(), 0

    def __call__(self) -> float:
        real = (time.monotonic() - self.real0) * self.factor * 1000
        return (self.ms0 + real + self.jumped_ms) / 1000.0

    def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.session.post(f"{self.url}/mock/sleep", data={"seconds": f"{seconds:.3f}"}, timeout=5)
        self.jumped_ms += int(round(seconds * 1000))


def child(argv: list[str]) -> None:
    """One life of the loop: until SIGTERM, or SIGKILL (the parent's or its own)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--factor", type=float, required=True)
    parser.add_argument("--crash-after-sends", type=int, default=0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    import logging

    level = logging.INFO if os.environ.get("SOAK_INFO") else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import torch
    from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange
    from kronos_quant.strategies.brokers import CcxtBroker
    from kronos_quant.strategies.ledger import Ledger
    from kronos_quant.strategies.live import LiveConfig, LiveLoop

    from kronos_quant.predictor import KronosPredictor
    from kronos_quant.testing import tiny_pair

    torch.set_num_threads(1)  # one core per loop, as a small live box would give it
    clock = RemoteClock(args.url, args.factor)
    sends = {"n": 0}

    class CrashingBroker(CcxtBroker):
        def _send(self, *a, **k):
            out = super()._send(*a, **k)
            sends["n"] += 1
            if sends["n"] == args.crash_after_sends:  # sent; the ledger has not heard back
                os.kill(os.getpid(), signal.SIGKILL)
            return out

    tok, model = tiny_pair(3)
    predictor = KronosPredictor(model, tok, max_context=32)
    retry = RetryPolicy(base_delay=0.2, max_delay=5.0, sleep=clock.sleep, clock=clock)
    plain = {"enableRateLimit": False}
    feed = CcxtFeed(make_exchange("binance", api_host=args.url, timeout_ms=150, config=plain),
                    retry=retry)
    keyed = make_exchange("binance", api_host=args.url, timeout_ms=150,
                          config={**plain, "apiKey": "soak-key", "secret": "soak-secret"})
    keyed.milliseconds = lambda: int(clock() * 1000)  # ccxt signs with the exchange's clock
    config = LiveConfig(exchange="binance", symbols=list(SYMBOLS), timeframe="1m", lookback=16,
                        sample_count=2, sizing="threshold", threshold=0.0, gross=0.5,
                        initial_cash=CASH, grace_s=1.0, late_timeout_s=6.0, late_poll_s=1.0)
    state = Path(args.state)
    loop = LiveLoop(config, predictor=predictor, feed=feed, store=CandleStore(state / "candles"),
                    ledger=Ledger(state), broker=CrashingBroker(keyed, retry=retry),
                    clock=clock, sleep=clock.sleep)
    loop.install_signal_handlers()
    loop.run(once=args.once)
    loop.ledger.close()


@dataclass
class SoakResult:
    seed: int
    candles: int  # candle times handled (decided or skipped), per symbol
    decided: int  # (symbol, candle) decision rows
    skipped: pd.DataFrame  # the ledger's skipped rows
    kills: int
    self_kills: int  # of which between send and record, by the child itself
    wall_s: float
    faults: dict[str, int]
    requests: int  # served by the mock during the faulty part of the run
    orders: pd.DataFrame  # the ledger's
    fills: pd.DataFrame
    positions: pd.DataFrame
    decisions: pd.DataFrame
    exchange_orders: list[dict] = field(default_factory=list)
    balances: dict[str, float] = field(default_factory=dict)
    log: str = ""

    @property
    def candles_per_min(self) -> float:
        return self.candles / self.wall_s * 60.0


def handled(state: Path) -> int:
    """Candle times with a decision or skipped row for every symbol (read while it runs)."""
    path = state / "ledger.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            row = db.execute("SELECT COUNT(*) FROM (SELECT ts FROM decisions UNION ALL SELECT ts "
                             "FROM skipped) GROUP BY ts HAVING COUNT(*) = ?",
                             (len(SYMBOLS),)).fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return 0
    return len(row)


def run_soak(workdir: Path, *, seed: int, candles: int = 500, kills: int = 6,
             fault_rate: float = 0.05, factor: float = 60.0,
             timeout_s: float = 600.0) -> SoakResult:
    """Run the loop until ``candles`` candle times are handled, killing it ``kills`` times."""
    from mock_exchange import FaultSchedule, MockExchange, MockServer, SimClock

    rng = np.random.default_rng(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    state, log_path = workdir / "state", workdir / "loop.log"
    schedule = FaultSchedule(seed=seed, rate=fault_rate)
    mock = MockExchange(sim=SimClock(START_MS, factor=factor), schedule=schedule, seed=seed,
                        check_recv_window=True)
    started, killed, self_killed, requests = time.monotonic(), 0, 0, 0

    def spawn(url: str, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, str(Path(__file__).resolve()), "child", "--url", url, "--state",
               str(state), "--factor", str(factor), *extra]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log_path.open("ab"),
                                stderr=subprocess.STDOUT)

    with MockServer(mock) as server:
        for life in range(kills + 1):
            last = life == kills
            target = candles if last else (life + 1) * candles // (kills + 2)
            self_kill = life % 2 == 1 and not last
            extra = ["--crash-after-sends", str(int(rng.integers(3, 20)))] if self_kill else []
            proc = spawn(server.url, *extra)
            while (done := handled(state)) < target:
                if last and done >= target - 3 and mock.schedule is not None:
                    # the last candles without faults: what a kill left pending settles
                    mock.schedule, requests = None, len(mock.requests)
                if proc.poll() is not None:
                    if self_kill and proc.returncode == -signal.SIGKILL:
                        self_killed += 1
                        break  # it killed itself between send and record
                    raise AssertionError(f"loop exited with {proc.returncode}:\n"
                                         + log_path.read_text()[-4000:])
                if time.monotonic() - started > timeout_s:
                    proc.kill()
                    raise AssertionError(f"soak stalled at {handled(state)} candles:\n"
                                         + log_path.read_text()[-4000:])
                time.sleep(0.05)
            if last:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, log_path.read_text()[-4000:]
            else:
                if proc.poll() is None:  # the parent's kill -9, somewhere in a cycle
                    time.sleep(float(rng.uniform(0.0, 0.3)))
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed += 1
        wall = time.monotonic() - started
        return collect(state, seed=seed, kills=(killed, self_killed), wall=wall, mock=mock,
                       faults=dict(schedule.drawn), requests=requests,
                       log=log_path.read_text())


def collect(state: Path, *, seed: int, kills: tuple[int, int], wall: float, mock,
            faults: dict[str, int], requests: int,
            log: str) -> SoakResult:
    from kronos_quant.strategies.ledger import Ledger

    with Ledger(state) as ledger:
        tables = {name: ledger.table(name) for name in ("decisions", "skipped", "orders",
                                                        "fills", "positions")}
    handled_ts = pd.concat([tables["decisions"]["ts"], tables["skipped"]["ts"]]).nunique()
    return SoakResult(seed=seed, candles=int(handled_ts), decided=len(tables["decisions"]),
                      skipped=tables["skipped"], kills=kills[0], self_kills=kills[1],
                      wall_s=wall, faults=faults, requests=requests,
                      orders=tables["orders"], fills=tables["fills"],
                      positions=tables["positions"], decisions=tables["decisions"],
                      exchange_orders=list(mock.orders), balances=dict(mock.balances), log=log)


def check_invariants(result: SoakResult) -> None:
    """What a soak run must leave behind (AssertionError naming the first broken one)."""
    rows = pd.concat([result.decisions[["symbol", "ts"]].assign(kind="decision"),
                      result.skipped[["symbol", "ts"]].assign(kind="skipped")])
    per_key = rows.groupby(["symbol", "ts"]).size()
    assert (per_key == 1).all(), f"(symbol, candle) with two rows: {per_key[per_key > 1]}"
    stamps = np.sort(rows["ts"].unique())
    grid = np.arange(stamps[0], stamps[-1] + 1, MIN)
    assert np.array_equal(stamps, grid), "a candle time has neither a decision nor a skip"
    assert len(per_key) == len(grid) * len(SYMBOLS), "a symbol is missing at some candle"
    assert result.skipped["reason"].str.len().gt(0).all()
    # client order ids: unique in the ledger and at the exchange
    exchange_ids = [o["clientOrderId"] for o in result.exchange_orders]
    assert len(exchange_ids) == len(set(exchange_ids)), "an order was sent twice"
    assert result.orders["client_id"].is_unique
    # the exchange's record of orders is the ledger's
    sent = result.orders[result.orders["exchange_order_id"].notna()]
    assert set(exchange_ids) == set(sent["client_id"])
    by_id = {o["clientOrderId"]: o for o in result.exchange_orders}
    for _, order in sent.iterrows():
        placed = by_id[order["client_id"]]
        assert str(placed["orderId"]) == order["exchange_order_id"]
        assert placed["side"].lower() == order["side"]
        assert float(placed["executedQty"]) == float(f"{order['qty']:.5f}") or abs(
            float(placed["executedQty"]) - order["qty"]) < 1e-5
    assert (result.orders["status"].isin(["filled", "stale", "rejected"])).all(), \
        result.orders["status"].value_counts().to_dict()
    # ledger positions = sum of fills = the exchange's balances
    fills = result.fills.groupby("symbol")["qty"].sum()
    positions = result.positions.set_index("symbol")["qty"]
    for symbol in SYMBOLS:
        got = float(positions.get(symbol, 0.0))
        assert abs(got - float(fills.get(symbol, 0.0))) < 1e-9, symbol
        assert abs(got - result.balances.get(symbol.split("/")[0], 0.0)) < 1e-9, symbol


def summary(result: SoakResult) -> dict:
    lost = int(result.skipped["reason"].str.contains("gap").eq(False).sum())
    return {"seed": result.seed, "candles": result.candles, "decided": result.decided,
            "skipped": len(result.skipped), "decisions_lost": lost, "kills": result.kills,
            "kills_between_send_and_record": result.self_kills,
            "orders": len(result.orders), "stale": int((result.orders["status"] == "stale").sum()),
            "rejected": int((result.orders["status"] == "rejected").sum()),
            "requests": result.requests, "faults": sum(result.faults.values()),
            "fault_kinds": len(result.faults),
            "wall_s": round(result.wall_s, 1), "candles_per_min": round(result.candles_per_min)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.path.insert(0, str(ROOT / "tests"))
        child(sys.argv[2:])
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        with __import__("tempfile").TemporaryDirectory() as tmp:
            res = run_soak(Path(tmp), seed=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
            print(json.dumps(summary(res)))
            check_invariants(res)
