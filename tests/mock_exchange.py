"""A local stand-in for Binance's public REST API, for tests of the ccxt feed and the live loop.

It listens on 127.0.0.1 only and answers the three public calls the real ``ccxt.binance``
client makes for market data: exchange info (spot ``/api/v3``, plus empty USD-M ``/fapi/v1`` and
COIN-M ``/dapi/v1`` lists, which ``load_markets`` also asks for), server time and klines, in
Binance's own JSON layout. Point a client at it with ``--api-host http://127.0.0.1:PORT``
(only the host of each ``urls['api']`` entry changes; the paths stay Binance's).

Candles are a deterministic function of their open time (seeded per bar), so any history up to
the mock's clock exists and a restart sees the same bars. The forming candle (open time + period
> now) is served too, as Binance does, with values that depend on ``now`` — a client that keeps
it sees prices change under it. Faults (``tests/mock_faults.py``: Binance's and OKX's own error
answers) are queued per path and consumed in order, drawn at random with a seed, or served to
every distinct request once. ``flavour="okx"`` speaks OKX v5 (instruments, time, candles).

Signed spot trading (for the ``--live-orders`` broker): ``POST /api/v3/order`` (MARKET orders,
filled at once at the forming candle's price, FULL response with fills; commission 0.1% in the
asset received, as Binance charges without BNB), ``GET /api/v3/order`` by ``orderId`` or
``origClientOrderId``, ``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``,
``GET /api/v3/account`` and the (empty) currency and margin lists ccxt loads when keys are set.
``newClientOrderId`` is unique among *open* orders only, as on Binance: a filled order's id can
be sent again and makes a second order. Signatures are not checked (the keys are fake); the
``X-MBX-APIKEY`` header of each signed call is kept in ``api_keys``.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from mock_faults import (  # noqa: F401 (re-exported for the tests)
    BINANCE_ERRORS,
    FAULT_KINDS,
    MAINTENANCE_PAGE,
    OKX_ERRORS,
    RANDOM_FAULTS,
    SIGNED_FAULTS,
    Fault,
    FaultSchedule,
    ManualClock,
    SimClock,
)

INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
               "30m": 1_800_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}
COMMISSION = 0.001


@dataclass
class MockExchange:
    """Market state and fault queue behind the HTTP server (see the module docstring)."""

    symbols: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")})
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    missing: set[int] = field(default_factory=set)  # open times (ms) the exchange never had
    seed: int = 0
    faults: list[Fault] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    flavour: str = "binance"  # or "okx": OKX v5 paths, candle rows and error envelope
    schedule: FaultSchedule | None = None  # random faults, after the queued ones
    sim: SimClock | None = None  # serves /mock/clock and /mock/sleep; sets clock_ms
    check_recv_window: bool = False  # -1021 when a signed timestamp is off the mock's clock
    fail_each_once: tuple[str, ...] = ()  # every distinct request fails once, kinds in turn
    reject_keys: bool = False  # every signed request answers -2015 (bad API key)
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.flavour not in ("binance", "okx"):
            raise ValueError(f"flavour must be binance or okx, got {self.flavour!r}")
        if self.sim is not None:
            self.clock_ms = self.sim.ms

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    orders: list[dict] = field(default_factory=list)  # every order accepted, in order
    trades: list[dict] = field(default_factory=list)  # their fills, in myTrades' layout
    balances: dict[str, float] = field(default_factory=lambda: {"USDT": 1_000_000.0})
    api_keys: list[str] = field(default_factory=list)
    _order_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def take_fault(self, path: str, method: str = "GET", signed: bool = False,
                   query: dict[str, str] | None = None) -> Fault | None:
        if path.startswith("/mock/"):
            return None
        with self._lock:
            for i, fault in enumerate(self.faults):
                if path.endswith(fault.path) and fault.method in (None, method):
                    return self.faults.pop(i)
            if signed and self.reject_keys:
                return Fault("-2015", path=path)
            if self.fail_each_once:
                # the same request again (a retry) passes: the signature and time change
                key = repr((method, path, sorted((k, v) for k, v in (query or {}).items()
                                                 if k not in ("timestamp", "signature"))))
                if key not in self._seen:
                    self._seen.add(key)
                    kinds = [k for k in self.fail_each_once
                             if FaultSchedule.fits(k, path, method, signed)]
                    if kinds:
                        kind = kinds[len(self._seen) % len(kinds)]
                        return Fault(kind, path=path, retry_after=0.01, delay=0.4)
            if self.schedule is not None:
                return self.schedule.draw(path, method, signed)
        return None

    def error_answer(self, kind: str) -> tuple[int, str] | None:
        """(HTTP status, body) of an error fault in this exchange's words, or None."""
        table = OKX_ERRORS if self.flavour == "okx" else BINANCE_ERRORS
        if kind not in table:
            return None
        status, body = table[kind]
        if body is None:
            return status, (MAINTENANCE_PAGE if kind == "maintenance"
                            else "<html><body><h1>500 Internal Server Error</h1></body></html>")
        return status, json.dumps(body)

    def recv_window_error(self, query: dict[str, str]) -> bool:
        """Binance's rule: refuse a timestamp 1 s ahead of the server or recvWindow behind."""
        if not self.check_recv_window or "timestamp" not in query:
            return False
        skew = int(query["timestamp"]) - self.clock_ms()
        return skew >= 1000 or -skew > int(query.get("recvWindow", 5000))

    def candle(self, symbol: str, open_ms: int, step_ms: int, now_ms: int) -> list:
        """Binance's 12-field kline row; prices as strings, as Binance sends them."""
        base = 100.0 + 50.0 * (sum(map(ord, symbol)) % 7)
        n = open_ms // step_ms
        rng = np.random.default_rng([self.seed, n, sum(map(ord, symbol))])
        drift = 0.002 * np.sin(n / 11.0)  # a smooth, slightly predictable component
        open_ = base * float(np.exp(drift + 0.01 * rng.standard_normal()))
        close = open_ * float(np.exp(0.004 * rng.standard_normal()))
        if open_ms + step_ms > now_ms:  # forming: moves with the clock
            close = open_ * (1.0 + 1e-4 * ((now_ms - open_ms) % 997))
        high = max(open_, close) * (1 + 0.002 * abs(rng.standard_normal()))
        low = min(open_, close) * (1 - 0.002 * abs(rng.standard_normal()))
        volume = 10.0 + 5.0 * abs(rng.standard_normal())
        return [open_ms, f"{open_:.4f}", f"{high:.4f}", f"{low:.4f}", f"{close:.4f}",
                f"{volume:.5f}", open_ms + step_ms - 1, f"{volume * close:.4f}", 10,
                "0", "0", "0"]

    def klines(self, query: dict[str, str], fault: Fault | None) -> list[list]:
        symbol, interval = query["symbol"], query["interval"]
        if symbol not in self.symbols:
            raise KeyError(symbol)
        step = INTERVAL_MS[interval]
        now = self.clock_ms()
        limit = min(int(query.get("limit", 500)), 1000)
        start = int(query.get("startTime", now - limit * step))
        end = int(query.get("endTime", now))
        first = -(-start // step) * step
        last_open = min(end, now) // step * step
        if fault is not None and fault.kind == "late":
            last_open = min(last_open, (now // step - 2) * step)
        rows = [self.candle(symbol, t, step, now) for t in range(first, last_open + 1, step)
                if t not in self.missing][:limit]
        if fault is not None and fault.kind == "duplicate" and len(rows) > 1:
            rows.insert(len(rows) // 2, list(rows[len(rows) // 2]))
            rows = rows[:limit]
        return rows

    # -- OKX v5 (public market data) ---------------------------------------------------------

    def okx_symbol(self, inst_id: str | None) -> str:
        for symbol, (base, quote) in self.symbols.items():
            if inst_id == f"{base}-{quote}":
                return symbol
        raise KeyError(inst_id)

    def okx_instruments(self, query: dict[str, str]) -> list[dict]:
        if query.get("instType") != "SPOT":
            return []  # no derivatives listed
        return [{"instType": "SPOT", "instId": f"{b}-{q}", "baseCcy": b, "quoteCcy": q,
                 "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "", "lever": "10",
                 "listTime": "1548133413000", "lotSz": "0.00000001", "minSz": "0.00001",
                 "tickSz": "0.1", "maxLmtSz": "9999999999", "maxMktSz": "1000000",
                 "state": "live", "uly": "", "instFamily": "", "category": "1"}
                for b, q in self.symbols.values()]

    def okx_candles(self, query: dict[str, str], fault: Fault | None) -> list[list[str]]:
        """OKX's rows, newest first: [ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm];
        ``before``/``after`` are exclusive bounds on ts, ``limit`` at most 300."""
        symbol = self.okx_symbol(query.get("instId"))
        step = INTERVAL_MS[query["bar"].lower().replace("utc", "")]
        now, limit = self.clock_ms(), min(int(query.get("limit", 100)), 300)
        after = int(query.get("after", now + step))
        before = int(query.get("before", after - (limit + 1) * step))
        last_open = min(after - 1, now) // step * step
        if fault is not None and fault.kind == "late":
            last_open = min(last_open, (now // step - 2) * step)
        first = max(before + 1, last_open - (limit - 1) * step)
        first = -(-first // step) * step
        rows = []
        for t in range(first, last_open + 1, step):
            if t in self.missing:
                continue
            k = self.candle(symbol, t, step, now)
            rows.append([str(t), *k[1:6], k[5], k[7], "1" if t + step <= now else "0"])
        if fault is not None and fault.kind == "duplicate" and len(rows) > 1:
            rows.insert(len(rows) // 2, list(rows[len(rows) // 2]))
        return rows[::-1][:limit]

    def route_okx(self, path: str, query: dict[str, str], fault: Fault | None) -> object:
        if path == "/api/v5/public/time":
            return [{"ts": str(self.clock_ms())}]
        if path == "/api/v5/public/instruments":
            return self.okx_instruments(query)
        if path in ("/api/v5/market/candles", "/api/v5/market/history-candles"):
            return self.okx_candles(query, fault)
        raise FileNotFoundError(path)

    # -- Binance signed trading ----------------------------------------------------------------

    def new_order(self, form: dict[str, str]) -> dict:
        """Accept a MARKET order and fill it at once (ValueError: Binance's code and message)."""
        symbol, side, cid = form.get("symbol"), form.get("side"), form.get("newClientOrderId")
        if symbol not in self.symbols:
            raise KeyError(symbol)
        if form.get("type") != "MARKET" or side not in ("BUY", "SELL"):
            raise ValueError(-1116, "Invalid orderType.")
        with self._lock:
            if cid and any(o["clientOrderId"] == cid and o["status"] == "NEW" for o in self.orders):
                raise ValueError(-2010, "Duplicate order sent.")
            base, quote = self.symbols[symbol]
            qty, now = float(form["quantity"]), self.clock_ms()
            price = float(self.candle(symbol, now // 60_000 * 60_000, 60_000, now)[4])
            got, paid = (base, quote) if side == "BUY" else (quote, base)
            got_amount, paid_amount = (qty, qty * price) if side == "BUY" else (qty * price, qty)
            if self.balances.get(paid, 0.0) < paid_amount:
                raise ValueError(-2010, "Account has insufficient balance for requested action.")
            commission = got_amount * COMMISSION
            self.balances[paid] = self.balances.get(paid, 0.0) - paid_amount
            self.balances[got] = self.balances.get(got, 0.0) + got_amount - commission
            order = {"symbol": symbol, "orderId": next(self._order_ids), "orderListId": -1,
                     "clientOrderId": cid or f"mock{now}", "transactTime": now, "time": now,
                     "updateTime": now, "price": "0.00000000", "origQty": f"{qty:.8f}",
                     "executedQty": f"{qty:.8f}", "cummulativeQuoteQty": f"{qty * price:.8f}",
                     "status": "FILLED", "timeInForce": "GTC", "type": "MARKET", "side": side,
                     "stopPrice": "0.00000000", "icebergQty": "0.00000000", "isWorking": True,
                     "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE"}
            self.orders.append(order)
            fill = {"price": f"{price:.8f}", "qty": f"{qty:.8f}",
                    "commission": f"{commission:.8f}", "commissionAsset": got,
                    "tradeId": order["orderId"]}
            self.trades.append({"symbol": symbol, "id": order["orderId"],
                                "orderId": order["orderId"], "orderListId": -1,
                                "quoteQty": f"{qty * price:.8f}", "time": now,
                                "isBuyer": side == "BUY", "isMaker": False, "isBestMatch": True,
                                **{k: v for k, v in fill.items() if k != "tradeId"}})
        return {**order, "fills": [fill]}

    def find_order(self, query: dict[str, str]) -> dict:
        """The newest order with this ``orderId`` or ``origClientOrderId`` (KeyError if none)."""
        with self._lock:
            for order in reversed(self.orders):
                if order["symbol"] == query.get("symbol") and (
                        str(order["orderId"]) == query.get("orderId")
                        or order["clientOrderId"] == query.get("origClientOrderId")):
                    return dict(order)
        raise LookupError("Order does not exist.")

    def account(self) -> dict:
        return {"makerCommission": 10, "takerCommission": 10, "canTrade": True,
                "accountType": "SPOT", "updateTime": self.clock_ms(), "permissions": ["SPOT"],
                "balances": [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"}
                             for a, v in sorted(self.balances.items())]}

    def exchange_info(self, path: str) -> dict:
        info = {"timezone": "UTC", "serverTime": self.clock_ms(), "rateLimits": [], "symbols": []}
        if not path.startswith("/api/"):
            return info  # derivatives: no contracts listed
        for symbol, (base, quote) in self.symbols.items():
            info["symbols"].append({
                "symbol": symbol, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
                "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "permissions": ["SPOT"],
                "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01",
                             "maxPrice": "1000000", "tickSize": "0.01"},
                            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000",
                             "stepSize": "0.00001"}]})
        return info


def _handler(mock: MockExchange) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: tests read mock.requests instead
            pass

        def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if body.startswith("<")
                             else "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _route(self, method: str, path: str, query: dict[str, str],
                   fault: Fault | None) -> object:
            if path == "/mock/clock":
                return {"ms": mock.clock_ms()}
            if path == "/mock/sleep" and mock.sim is not None:
                mock.sim.jump(float(query["seconds"]))
                return {"ms": mock.clock_ms()}
            if mock.flavour == "okx":
                return {"code": "0", "msg": "", "data": mock.route_okx(path, query, fault)}
            if path.endswith("/exchangeInfo"):
                return mock.exchange_info(path)
            if path.endswith("/time"):
                return {"serverTime": mock.clock_ms()}
            if path.endswith("/klines"):
                return mock.klines(query, fault)
            if path == "/api/v3/order":
                return mock.new_order(query) if method == "POST" else mock.find_order(query)
            if path == "/api/v3/openOrders":
                return [o for o in mock.orders if o["status"] == "NEW"
                        and query.get("symbol") in (None, o["symbol"])]
            if path == "/api/v3/myTrades":
                return [t for t in mock.trades if t["symbol"] == query.get("symbol")
                        and str(t["orderId"]) == query.get("orderId", str(t["orderId"]))]
            if path == "/api/v3/account":
                return mock.account()
            if path.endswith(("/capital/config/getall", "/allPairs")):
                return []  # ccxt then takes the currencies from the markets
            raise FileNotFoundError(path)

        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                query |= {k: v[-1] for k, v in parse_qs(body).items()}
            if self.headers.get("X-MBX-APIKEY"):
                mock.api_keys.append(self.headers["X-MBX-APIKEY"])
            if not url.path.startswith("/mock/"):
                mock.requests.append(url.path if method == "GET" else f"{method} {url.path}")
            signed = "signature" in query
            fault = mock.take_fault(url.path, method, signed, query)
            if fault is None and signed and mock.recv_window_error(query):
                fault = Fault("-1021", path=url.path)
            answer = mock.error_answer(fault.kind) if fault is not None else None
            if answer is not None:
                ban = fault.kind in ("429", "418")
                return self._send(*answer, {"Retry-After": f"{fault.retry_after:g}"} if ban
                                  else None)
            if fault is not None and fault.kind == "timeout":
                time.sleep(fault.delay)
                if signed and mock.recv_window_error(query):  # too late: Binance drops it
                    return None
            try:
                payload = self._route(method, url.path, query, fault)
            except FileNotFoundError:
                return self._send(404, '{"code":-1,"msg":"unknown path"}')
            except KeyError:
                if mock.flavour == "okx":
                    return self._send(200, '{"code":"51001","msg":"Instrument ID does not '
                                      'exist","data":[]}')
                return self._send(400, '{"code":-1121,"msg":"Invalid symbol."}')
            except LookupError as err:  # after KeyError, its subclass
                return self._send(400, json.dumps({"code": -2013, "msg": str(err)}))
            except ValueError as err:
                code, msg = err.args
                return self._send(400, json.dumps({"code": code, "msg": msg}))
            if fault is not None and fault.kind == "lost":
                time.sleep(fault.delay)  # done, but the client hears nothing before its timeout
                return None
            body = json.dumps(payload)
            if fault is not None and fault.kind == "truncated":
                body = body[: len(body) // 2]
            try:
                self._send(200, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout fault)

    return Handler


class MockServer:
    """Run a :class:`MockExchange` on 127.0.0.1 in a daemon thread (a context manager)."""

    def __init__(self, mock: MockExchange | None = None) -> None:
        self.mock = mock or MockExchange()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.mock))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> MockServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # a standalone server for the subprocess tests and manual runs
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True, help="write the chosen port here")
    parser.add_argument("--missing", default="", help="comma-separated open times (ms) to omit")
    args = parser.parse_args()
    mock = MockExchange(missing={int(t) for t in args.missing.split(",") if t})
    with MockServer(mock) as server:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(server.url)
        import os
        os.replace(tmp, args.port_file)
        print(server.url, flush=True)
        try:
            server.thread.join()
        except KeyboardInterrupt:
            sys.exit(0)
