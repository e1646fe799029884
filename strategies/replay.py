"""Recorded candles served as an exchange would, so the live loop can be replayed offline.

:class:`ReplayFeed` stands in for :class:`kronos_quant.adapters.ccxt.CcxtFeed`: it hands out
only the candles closed by its own clock, which the caller moves forward candle by candle.
:func:`replay_live` runs :class:`kronos_quant.strategies.live.LiveLoop` over it with the paper
broker, so a recorded day (or month) of trading replays in seconds through the same code path
as ``kronos-quant live``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..adapters.ccxt import CANDLE_FIELDS, CandleStore, FetchReport, candles_frame
from .brokers import PaperBroker
from .ledger import Ledger, to_ms
from .live import LiveConfig, LiveLoop
from .live_report import LiveReport, live_report

if TYPE_CHECKING:
    from ..predictor import KronosPredictor

TIMEFRAME_UNITS = {"m": "min", "h": "h", "d": "D", "w": "W"}


def timeframe_step(timeframe: str) -> pd.Timedelta:
    """A ccxt-style timeframe (``"1m"``, ``"4h"``, ``"1d"``, ``"1w"``) as a Timedelta."""
    unit = TIMEFRAME_UNITS.get(timeframe[-1:])
    if unit is None or not timeframe[:-1].isdigit():
        raise ValueError(f"timeframe must be a number and one of m, h, d, w (e.g. '1h'), "
                         f"got {timeframe!r}")
    return pd.Timedelta(int(timeframe[:-1]), unit=unit)


class ReplayFeed:
    """A feed that serves recorded candles as an exchange would: only those closed by ``now``.

    Duck-types :class:`kronos_quant.adapters.ccxt.CcxtFeed` for
    :class:`kronos_quant.strategies.live.LiveLoop` (``check``, ``step``, ``server_time_ms``,
    ``fetch_closed``, ``exchange_id``), with its own clock (``now_ms``) that the caller moves
    forward candle by candle.
    """

    exchange_id = "replay"

    def __init__(self, candles: dict[str, pd.DataFrame], *, timeframe: str, step: pd.Timedelta,
                 now_ms: int = 0) -> None:
        self.candles, self.timeframe, self._step, self.now_ms = candles, timeframe, step, now_ms
        # Open times in ms, once: every cycle filters them again.
        self._opens = {symbol: np.array([to_ms(t) for t in frame.index], dtype=np.int64)
                       for symbol, frame in candles.items()}

    def check(self, symbol: str, timeframe: str) -> None:
        if symbol not in self.candles:
            raise ValueError(f"symbol {symbol!r} has no recorded candles; "
                             f"have {sorted(self.candles)}")
        if timeframe != self.timeframe:
            raise ValueError(f"recorded candles are {self.timeframe}, not {timeframe}")

    def step(self, timeframe: str) -> pd.Timedelta:
        return self._step

    def server_time_ms(self) -> int:
        return self.now_ms

    def fetch_closed(self, symbol: str, timeframe: str, *, since: pd.Timestamp | int,
                     now_ms: int | None = None) -> tuple[pd.DataFrame, FetchReport]:
        """Recorded candles with open time ≥ ``since`` that have closed by ``now_ms``
        (default: the feed's clock)."""
        now = self.now_ms if now_ms is None else int(now_ms)
        opens = self._opens[symbol]
        keep = (opens >= to_ms(since)) & (opens + self._step // pd.Timedelta(milliseconds=1) <= now)
        values = self.candles[symbol][list(CANDLE_FIELDS)].to_numpy()[keep]
        rows = [[int(t), *map(float, v)] for t, v in zip(opens[keep], values, strict=True)]
        return candles_frame(rows), FetchReport(pages=1)


def replay_live(candles: dict[str, pd.DataFrame], config: LiveConfig, *,
                predictor: KronosPredictor, state: str | Path, times: pd.DatetimeIndex,
                broker: Any = None) -> LiveReport:
    """Run the live loop over recorded ``candles`` (symbol → bars), waking after each of
    ``times`` closes, with a fresh ledger in ``state``; returns the ledger's
    :class:`~kronos_quant.strategies.live_report.LiveReport`.

    ``config.timeframe`` is the bars' spacing (e.g. ``"1d"``, ``"1h"``); ``broker`` defaults
    to the paper broker (10 bp fees, 5 bp slippage). A state folder that already holds a
    ledger is refused by the ledger unless its settings match; pass a new folder per replay.
    """
    step = timeframe_step(config.timeframe)
    feed = ReplayFeed(candles, timeframe=config.timeframe, step=step)
    state = Path(state)
    with Ledger(state) as ledger:
        loop = LiveLoop(config, predictor=predictor, feed=feed,
                        store=CandleStore(state / "candles"), ledger=ledger,
                        broker=broker or PaperBroker(fee_rate=0.001, slippage=0.0005),
                        clock=lambda: feed.now_ms / 1000.0, sleep=lambda _s: None)
        for t in times:  # candle t closes one step later; the loop wakes just after
            feed.now_ms = to_ms(t + step) + 2_000
            loop.run(once=True)
        return live_report(ledger)
