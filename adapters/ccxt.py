"""Closed OHLCV candles from any ccxt exchange, with retries and a local Parquet store.

``make_exchange`` builds a ccxt client (rate limiting on; ``api_host`` rewrites only the host
of every ``urls['api']`` entry, keeping Binance's ``/api/v3``, ``/fapi/v1``, … paths, so a
regional host, a proxy or a local mock can stand in). :class:`CcxtFeed` validates the exchange
id, symbol and timeframe against the client's markets and ``timeframes``, pages through history
by ``since``, keeps only *closed* candles (open time + period ≤ the exchange's clock), drops
duplicates, rejects malformed rows with a logged reason and reports gaps. Every exchange call
is retried by ccxt's error hierarchy (:mod:`kronos_quant.adapters.ccxt_errors`).
:class:`CandleStore` keeps what was fetched in one Parquet file per (exchange, symbol,
timeframe), written atomically, so a restart asks the exchange only for what is new.

Frames are indexed by naive UTC open times named ``datetime`` (the panel convention) with float
columns open, high, low, close, volume, amount. Exchanges disagree on a quote-volume field, so
``amount`` is always computed the same way: ``volume × typical price``, typical price being
``(high + low + close) / 3``.

Needs the ``[crypto]`` extra: ``pip install "kronos-quant[crypto]"``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from ..data import PANEL_COLUMNS
from ..io import atomic_path
from . import require_engine
from .ccxt_errors import (  # noqa: F401 (RetryPolicy and retry_after_seconds: public here too)
    MalformedResponse,
    RetryPolicy,
    retry_after_seconds,
)

if TYPE_CHECKING:
    import ccxt

logger = logging.getLogger(__name__)

T = TypeVar("T")
CANDLE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

# -- client -------------------------------------------------------------------------------

def rewrite_api_host(api: Any, host: str) -> Any:
    """``urls['api']`` with the scheme and host of ``host`` on every URL; paths, queries kept.

    ``api`` may be a string, or a dict / list of them nested to any depth (as ccxt stores it).
    """
    target = urlsplit(host)
    if not target.scheme or not target.netloc:
        raise ValueError(f"--api-host must look like http://host[:port], got {host!r}")

    def one(value: Any) -> Any:
        if isinstance(value, str):
            parts = urlsplit(value)
            return urlunsplit((target.scheme, target.netloc, parts.path, parts.query,
                               parts.fragment))
        if isinstance(value, Mapping):
            return {key: one(item) for key, item in value.items()}
        if isinstance(value, list):
            return [one(item) for item in value]
        return value

    return one(api)


def make_exchange(exchange_id: str, *, api_host: str | None = None, timeout_ms: int = 10_000,
                  config: Mapping[str, Any] | None = None) -> ccxt.Exchange:
    """A synchronous ccxt client with rate limiting on (``config`` adds client settings)."""
    ccxt = require_engine("ccxt")
    if exchange_id not in ccxt.exchanges:
        near = [name for name in ccxt.exchanges if name.startswith(exchange_id[:3])][:8]
        raise ValueError(f"unknown ccxt exchange id {exchange_id!r}"
                         + (f"; did you mean one of {near}?" if near else ""))
    settings = {"enableRateLimit": True, "timeout": int(timeout_ms), **dict(config or {})}
    exchange = getattr(ccxt, exchange_id)(settings)
    if api_host:
        exchange.urls["api"] = rewrite_api_host(exchange.urls["api"], api_host)
    return exchange


# -- rows → frames ------------------------------------------------------------------------

@dataclass
class FetchReport:
    """What a fetch saw besides the candles it kept."""

    pages: int = 0
    duplicates: int = 0
    rejected: list[tuple[int | None, str]] = field(default_factory=list)  # (open ms, reason)
    gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]] = field(default_factory=list)
    forming_dropped: int = 0

    def merge(self, other: FetchReport) -> None:
        self.pages += other.pages
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.gaps += other.gaps
        self.forming_dropped += other.forming_dropped


def check_json_body(body: Any) -> None:
    """Raise :class:`MalformedResponse` when the last HTTP body is not valid JSON.

    ccxt hands an unparsable body to the exchange's parser as text, and Binance's parser turns a
    truncated kline list into rows that ``since`` then filters away: the page looks *empty*,
    not broken. Checking the raw body tells the two apart.
    """
    if isinstance(body, str) and body.strip():
        try:
            json.loads(body)
        except ValueError as err:
            raise MalformedResponse(f"invalid JSON body ({err}): {body[:60]!r}…") from None


def row_problem(row: Any, step_ms: int | None) -> str | None:
    """Why an OHLCV row ``[ms, open, high, low, close, volume]`` is unusable, or None."""
    if not isinstance(row, (list, tuple)) or len(row) < 6:
        return f"expected [time, open, high, low, close, volume], got {row!r:.80}"
    stamp, *values = row[:6]
    if not isinstance(stamp, (int, np.integer)) or isinstance(stamp, bool) or stamp < 0:
        return f"open time {stamp!r} is not a non-negative integer of milliseconds"
    if step_ms and stamp % step_ms:
        return f"open time {stamp} is not on the {step_ms} ms grid"
    try:
        o, h, lo, c, v = (float(x) for x in values)
    except (TypeError, ValueError):
        return f"non-numeric value in {values!r:.80}"
    if not all(math.isfinite(x) for x in (o, h, lo, c, v)):
        return f"non-finite value in {values!r:.80}"
    if min(o, h, lo, c) <= 0 or v < 0:
        return f"price <= 0 or volume < 0 in {values!r:.80}"
    if h < max(o, c, lo) or lo > min(o, c):
        return f"high/low do not bound open/close in {values!r:.80}"
    return None


def candles_frame(rows: list[list[float]]) -> pd.DataFrame:
    """Clean ``[ms, o, h, l, c, v]`` rows → the candle frame (naive UTC index, amount added)."""
    arr = np.asarray([r[:6] for r in rows], dtype=np.float64).reshape(-1, 6)
    index = pd.DatetimeIndex(pd.to_datetime(arr[:, 0].astype(np.int64), unit="ms"), name="datetime")
    frame = pd.DataFrame(arr[:, 1:], index=index, columns=list(CANDLE_FIELDS))
    frame["amount"] = frame["volume"] * (frame["high"] + frame["low"] + frame["close"]) / 3.0
    return frame[list(PANEL_COLUMNS)]


def find_gaps(index: pd.DatetimeIndex,
              step: pd.Timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """Runs of missing bars: (last bar before, first bar after, bars missing)."""
    if len(index) < 2:
        return []
    diffs = index[1:] - index[:-1]
    where = np.flatnonzero(diffs > step)
    return [(index[i], index[i + 1], int(diffs[i] // step) - 1) for i in where]


# -- the feed -----------------------------------------------------------------------------

class CcxtFeed:
    """Closed candles of one exchange, validated and paged (see the module docstring)."""

    def __init__(self, exchange: ccxt.Exchange, *, retry: RetryPolicy | None = None,
                 page_limit: int = 1000) -> None:
        if page_limit < 1:
            raise ValueError(f"page_limit must be >= 1, got {page_limit}")
        self.exchange = exchange
        self.retry = retry or RetryPolicy()
        self.page_limit = page_limit

    @property
    def exchange_id(self) -> str:
        return str(self.exchange.id)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.retry.call(fn, what=f"{self.exchange_id} {what}", exchange=self.exchange)

    def check(self, symbol: str, timeframe: str) -> None:
        """Clear errors for an unknown timeframe or symbol (markets are loaded once)."""
        frames = getattr(self.exchange, "timeframes", None) or {}
        if not self.exchange.has.get("fetchOHLCV"):
            raise ValueError(f"exchange {self.exchange_id!r} has no OHLCV endpoint in ccxt")
        if timeframe not in frames:
            raise ValueError(f"timeframe {timeframe!r} is not offered by {self.exchange_id}; "
                             f"choose one of {list(frames)}")
        markets = self._call(self.exchange.load_markets, "load_markets")
        if symbol not in markets:
            near = [s for s in markets if s.split("/")[0] == symbol.split("/")[0]][:8]
            raise ValueError(f"symbol {symbol!r} is not a market on {self.exchange_id}"
                             + (f"; markets with that base: {near}" if near else "")
                             + f" ({len(markets)} markets loaded)")

    def step(self, timeframe: str) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.exchange.parse_timeframe(timeframe))

    def server_time_ms(self) -> int:
        """The exchange's clock (falls back to ours when it has no time endpoint)."""
        if self.exchange.has.get("fetchTime"):
            value = self._call(self.exchange.fetch_time, "fetch_time")
            if isinstance(value, (int, float)) and value > 0:
                return int(value)
        return int(time.time() * 1000)

    def _page(self, symbol: str, timeframe: str, since: int, step_ms: int,
              report: FetchReport) -> list[list]:
        """One ``fetch_ohlcv`` page, malformed rows dropped (all malformed: retried)."""

        def fetch() -> list[list]:
            raw = self.exchange.fetch_ohlcv(symbol, timeframe, since=since, limit=self.page_limit)
            check_json_body(getattr(self.exchange, "last_http_response", None))
            if not isinstance(raw, list):
                raise MalformedResponse(f"expected a list of rows, got {type(raw).__name__}")
            good, bad = [], []
            for row in raw:
                problem = row_problem(row, step_ms)
                (bad if problem else good).append((row, problem))
            if raw and not good:
                raise MalformedResponse(f"all {len(raw)} rows malformed, e.g. {bad[0][1]}")
            for row, problem in bad:
                stamp = row[0] if isinstance(row, (list, tuple)) and row else None
                logger.warning("%s %s %s: rejected row at %s: %s", self.exchange_id, symbol,
                               timeframe, stamp, problem)
                report.rejected.append((stamp if isinstance(stamp, int) else None, problem))
            return [row for row, _ in good]

        report.pages += 1
        return self._call(fetch, f"fetch_ohlcv {symbol} {timeframe} since {since}")

    def fetch_closed(self, symbol: str, timeframe: str, *, since: pd.Timestamp | int,
                     now_ms: int | None = None) -> tuple[pd.DataFrame, FetchReport]:
        """Every closed candle with open time ≥ ``since`` (naive UTC or ms), paged by ``since``.

        ``now_ms`` is the exchange's clock (fetched when omitted); a candle whose open time +
        period is after it is still forming and is dropped.
        """
        step_ms = int(self.step(timeframe).total_seconds() * 1000)
        now_ms = self.server_time_ms() if now_ms is None else int(now_ms)
        cursor = since if isinstance(since, int) else int(pd.Timestamp(since).value // 1_000_000)
        cursor = -(-cursor // step_ms) * step_ms  # the first open time on the grid
        report, rows = FetchReport(), {}
        while cursor + step_ms <= now_ms:
            page = self._page(symbol, timeframe, cursor, step_ms, report)
            fresh = [r for r in page if r[0] >= cursor]
            if not fresh:
                break
            for row in fresh:
                if row[0] in rows:
                    report.duplicates += 1
                rows[row[0]] = row  # a repeated open time: the later row wins
            cursor = max(r[0] for r in fresh) + step_ms
        closed = [rows[t] for t in sorted(rows) if t + step_ms <= now_ms]
        report.forming_dropped = len(rows) - len(closed)
        frame = candles_frame(closed)
        report.gaps = find_gaps(frame.index, pd.Timedelta(milliseconds=step_ms))
        for before, after, n in report.gaps:
            logger.warning("%s %s %s: %d candle(s) missing between %s and %s", self.exchange_id,
                           symbol, timeframe, n, before, after)
        if report.duplicates:
            logger.info("%s %s %s: dropped %d duplicate candle(s)", self.exchange_id, symbol,
                        timeframe, report.duplicates)
        return frame, report


# -- local store --------------------------------------------------------------------------

class CandleStore:
    """Closed candles on disk: ``root/<exchange>/<BASE-QUOTE>_<timeframe>.parquet``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, exchange_id: str, symbol: str, timeframe: str) -> Path:
        safe = symbol.replace("/", "-").replace(":", "_")
        return self.root / exchange_id / f"{safe}_{timeframe}.parquet"

    def load(self, exchange_id: str, symbol: str, timeframe: str) -> pd.DataFrame:
        path = self.path(exchange_id, symbol, timeframe)
        if not path.exists():
            return candles_frame([])
        return pd.read_parquet(path)

    def update(self, feed: CcxtFeed, symbol: str, timeframe: str, *, start: pd.Timestamp,
               now_ms: int | None = None) -> tuple[pd.DataFrame, FetchReport]:
        """Fetch only candles after the last stored one (or from ``start``), store, return all."""
        stored = self.load(feed.exchange_id, symbol, timeframe)
        since = stored.index[-1] + feed.step(timeframe) if len(stored) else pd.Timestamp(start)
        new, report = feed.fetch_closed(symbol, timeframe, since=since, now_ms=now_ms)
        if len(new):
            merged = pd.concat([stored, new])
            merged = merged[~merged.index.duplicated(keep="last")].sort_index()
            report.gaps = find_gaps(merged.index, feed.step(timeframe))
            with atomic_path(self.path(feed.exchange_id, symbol, timeframe)) as tmp:
                merged.to_parquet(tmp)
            stored = merged
        return stored, report
