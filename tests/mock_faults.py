"""The mock exchange's faults and clocks: the exchanges' own error answers (Binance's and
OKX's), a queued or seeded-random fault schedule, a manual and an accelerated clock.

Used by ``tests/mock_exchange.py`` (which re-exports every name here).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

# Binance's own error answers (HTTP status, JSON body; None: an HTML page), from Binance's API
# documentation ("Error codes for Binance") and the codes ccxt's binance.py maps.
BINANCE_ERRORS: dict[str, tuple[int, dict | None]] = {
    "-1000": (500, {"code": -1000,
                    "msg": "An unknown error occurred while processing the request."}),
    "-1001": (503, {"code": -1001,
                    "msg": "Internal error; unable to process your request. Please try again."}),
    "429": (429, {"code": -1003, "msg": "Too much request weight used; current limit is 6000 "
                  "request weight per 1 MINUTE. Please use WebSocket Streams for live updates "
                  "to avoid polling the API."}),
    "418": (418, {"code": -1003, "msg": "Way too much request weight used; IP banned until "
                  "1700000000000. Please use WebSocket Streams for live updates to avoid bans."}),
    "-1021": (400, {"code": -1021,
                    "msg": "Timestamp for this request is outside of the recvWindow."}),
    "-2010": (400, {"code": -2010,
                    "msg": "Account has insufficient balance for requested action."}),
    "-2011": (400, {"code": -2011, "msg": "Unknown order sent."}),
    "-2015": (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}),
    "500": (500, None),  # a load balancer's page, not Binance's JSON
    "maintenance": (503, None),  # the HTML "system maintenance" page
}
# The same faults in OKX's envelope {"code": "...", "msg": "...", "data": []} (OKX API v5
# error codes; ccxt's okx.py maps them).
OKX_ERRORS: dict[str, tuple[int, dict | None]] = {
    "-1000": (500, {"code": "50026", "msg": "System error. Try again later.", "data": []}),
    "-1001": (200, {"code": "50013", "msg": "Systems are busy. Please try again later.",
                    "data": []}),
    "429": (429, {"code": "50011", "msg": "Too Many Requests", "data": []}),
    "418": (429, {"code": "50011", "msg": "Too Many Requests", "data": []}),
    "-1021": (401, {"code": "50102", "msg": "Timestamp request expired", "data": []}),
    "-2010": (200, {"code": "51008", "msg": "Order failed. Insufficient USDT balance in "
                    "account.", "data": []}),
    "-2011": (200, {"code": "51603", "msg": "Order does not exist", "data": []}),
    "-2015": (401, {"code": "50111", "msg": "Invalid OK-ACCESS-KEY", "data": []}),
    "500": (500, None),
    "maintenance": (503, {"code": "50001", "msg": "Service temporarily unavailable. Try again "
                          "later", "data": []}),
}
MAINTENANCE_PAGE = ("<!DOCTYPE html><html><head><title>Binance - System Maintenance</title>"
                    "</head><body><h1>System maintenance</h1><p>Binance is upgrading its "
                    "system. Please try again later.</p></body></html>")
FAULT_KINDS = (*BINANCE_ERRORS, "timeout", "truncated", "duplicate", "late", "lost")
# Faults that only a signed (account or order) request can meet.
SIGNED_FAULTS = ("-1021", "-2010", "-2011", "-2015")
# What a seeded random schedule draws from: every transient fault, plus order rejections
# (-2010 and -2011 on a new order). Never -2015: that one stops the loop.
RANDOM_FAULTS = ("-1000", "-1001", "429", "418", "-1021", "-2010", "-2011", "500",
                 "maintenance", "timeout", "truncated", "duplicate", "late", "lost")


@dataclass
class Fault:
    """One injected misbehaviour, consumed by the next request whose path ends with ``path``.

    kinds: a key of :data:`BINANCE_ERRORS` (the exchange's error answer: ``-1000``,
    ``-1001``, ``429`` and ``418`` with ``Retry-After: retry_after``, ``-1021``, ``-2010``,
    ``-2011``, ``-2015``, ``500`` and ``maintenance`` HTML pages; OKX's equivalents when the mock
    speaks OKX), ``timeout`` (answer after ``delay`` seconds, longer than the client's timeout),
    ``truncated`` (HTTP 200 with half a JSON body), ``duplicate`` (klines with one row twice),
    ``late`` (klines without the newest closed candle, as when the exchange is slow to close it),
    ``lost`` (the request takes effect, then no answer within ``delay`` seconds: a response lost
    on the way back). ``method`` limits the fault to one HTTP method (default: any).
    """

    kind: str
    path: str = "/klines"
    retry_after: float = 0.05
    delay: float = 0.5
    method: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {FAULT_KINDS}")


class ManualClock:
    """A settable clock in milliseconds; ``sleep`` advances it instead of waiting."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = int(now_ms)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now_ms / 1000.0

    def ms(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now_ms += int(round(seconds * 1000))

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))


class SimClock:
    """An accelerated exchange clock: ``factor`` × real time, plus every sleep handed to it.

    A loop under test sleeps through :meth:`jump` (the mock's ``POST /mock/sleep``), so idle
    time costs nothing while work, timeouts and restarts still take ``factor`` × their real
    duration of exchange time.
    """

    def __init__(self, start_ms: int, factor: float = 60.0) -> None:
        self.start_ms, self.factor = int(start_ms), float(factor)
        self.real0, self.jumped_ms = time.monotonic(), 0
        self._lock = threading.Lock()

    def ms(self) -> int:
        return int(self.start_ms + (time.monotonic() - self.real0) * self.factor * 1000
                   + self.jumped_ms)

    def __call__(self) -> float:
        return self.ms() / 1000.0

    def jump(self, seconds: float) -> None:
        with self._lock:
            self.jumped_ms += int(round(max(0.0, seconds) * 1000))


@dataclass
class FaultSchedule:
    """Faults drawn at random, seeded: each request meets one with probability ``rate``.

    The kind is drawn among those that fit the request (:data:`RANDOM_FAULTS`: signed-only
    errors on signed calls, -2010/-2011 on new orders, candle faults on klines). ``drawn``
    counts what was served.
    """

    seed: int = 0
    rate: float = 0.05
    kinds: tuple[str, ...] = RANDOM_FAULTS
    retry_after: float = 1.0
    delay: float = 0.2
    drawn: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @staticmethod
    def fits(kind: str, path: str, method: str, signed: bool) -> bool:
        """Whether a ``kind`` fault can answer this request."""
        order = path.endswith("/order")
        if kind in ("duplicate", "late", "truncated"):
            return path.endswith(("/klines", "/candles"))
        if kind in ("-2010", "-2011"):  # refused orders (a lookup is never answered falsely)
            return order and method == "POST"
        return signed or kind not in SIGNED_FAULTS

    def draw(self, path: str, method: str, signed: bool) -> Fault | None:
        if self.rng.random() >= self.rate:
            return None
        kinds = [k for k in self.kinds if self.fits(k, path, method, signed)]
        kind = kinds[int(self.rng.integers(len(kinds)))]
        self.drawn[kind] = self.drawn.get(kind, 0) + 1
        return Fault(kind, path=path, retry_after=self.retry_after, delay=self.delay)
