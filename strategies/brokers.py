"""Brokers of the live loop: a paper broker (default) and a real ccxt broker (opt-in).

A broker works with the :class:`~kronos_quant.strategies.ledger.Ledger` in two steps, so an
order is never sent twice nor lost:

1. inside the decision's transaction, :meth:`place` records the order (status ``pending``) and
   :meth:`on_candle` fills what the new candle settles;
2. after the commit, :meth:`after_commit` does anything outside the ledger (the ccxt broker
   sends ``pending`` orders; the client order id comes from (symbol, timeframe, candle time),
   so a resend after a crash or a timeout is recognised by the exchange as the same order).

Paper fills follow :mod:`kronos_quant.execution`: ``next_open`` (default) fills an order decided
at candle t at the open of the next candle the feed delivers; ``last`` fills at the decision
candle's close (the last price). Buys pay ``price × (1 + slippage)``, sells receive
``price × (1 − slippage)``, and both pay ``fee_rate × notional``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..execution import DEFAULT_EXECUTION
from .ledger import Ledger

if TYPE_CHECKING:
    from ..adapters.ccxt import RetryPolicy

logger = logging.getLogger(__name__)

PAPER_FILLS: tuple[str, ...] = ("next_open", "last")


@dataclass(frozen=True)
class OrderRequest:
    """A change of position decided at one candle."""

    client_id: str
    symbol: str
    timeframe: str
    ts: int
    qty: float  # signed: > 0 buy, < 0 sell
    ref_price: float  # the decision candle's close


class PaperBroker:
    """Simulated fills with fees and slippage, entirely inside the ledger's transactions."""

    name = "paper"

    def __init__(self, *, fee_rate: float = 0.001, slippage: float = 0.0005,
                 fill: str = DEFAULT_EXECUTION) -> None:
        if fill not in PAPER_FILLS:
            raise ValueError(f"paper fill must be one of {PAPER_FILLS}, got {fill!r}")
        if not 0 <= fee_rate < 1 or not 0 <= slippage < 1:
            raise ValueError(f"fee_rate and slippage must be in [0, 1), got {fee_rate}, {slippage}")
        self.fee_rate, self.slippage, self.fill = float(fee_rate), float(slippage), fill

    def _fill(self, db: sqlite3.Connection, client_id: str, symbol: str, ts: int, qty: float,
              price: float) -> None:
        px = price * (1 + self.slippage if qty > 0 else 1 - self.slippage)
        Ledger.put_fill(db, client_id, symbol, ts, qty, px, abs(qty) * px * self.fee_rate)

    def on_candle(self, db: sqlite3.Connection, symbol: str, ts: int,
                  bar: Mapping[str, float]) -> None:
        """Fill this symbol's pending orders from earlier candles at this candle's open."""
        rows = db.execute("SELECT client_id, side, qty FROM orders WHERE symbol = ? AND "
                          "status = 'pending' AND ts < ? ORDER BY ts", (symbol, ts)).fetchall()
        for client_id, side, qty in rows:
            self._fill(db, client_id, symbol, ts, qty if side == "buy" else -qty, bar["open"])

    def place(self, db: sqlite3.Connection, order: OrderRequest) -> None:
        Ledger.put_order(db, order.client_id, order.symbol, order.timeframe, order.ts,
                         order.qty, order.ref_price, "pending")
        if self.fill == "last":
            self._fill(db, order.client_id, order.symbol, order.ts, order.qty, order.ref_price)

    def after_commit(self, ledger: Ledger, *, now_ms: int | None = None) -> None:
        """Nothing leaves the ledger."""


def credential_vars(exchange_id: str) -> dict[str, str]:
    """ccxt credential field → the environment variable it is read from."""
    prefix = exchange_id.upper()
    return {"apiKey": f"{prefix}_API_KEY", "secret": f"{prefix}_API_SECRET",
            "password": f"{prefix}_API_PASSWORD"}


def credentials_from_env(exchange_id: str,
                         environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """API credentials from ``<EXCHANGE>_API_KEY``, ``_API_SECRET`` and optional ``_API_PASSWORD``.

    Never from files or arguments, so they are not written to the state folder or shell history.
    """
    env = os.environ if environ is None else environ
    names = credential_vars(exchange_id)
    creds = {field: env[var] for field, var in names.items() if env.get(var)}
    missing = [names[f] for f in ("apiKey", "secret") if f not in creds]
    if missing:
        raise ValueError(f"--live-orders needs the environment variables {missing} "
                         "(keys are read from the environment only)")
    return creds


class CcxtBroker:
    """Market orders on a real exchange through ccxt (only behind ``--live-orders``).

    Orders are recorded ``pending`` in the decision's transaction and sent after the commit;
    the live loop also calls :meth:`after_commit` at the start of every cycle, so ``pending``
    orders left by a crash or a failed send go out at the next start with the same client
    order id. A pending order older than its symbol's newest decision is superseded by it (that
    decision sized its order from the ledger without this one) and marked ``stale``.

    Sending is idempotent even on exchanges that accept a reused client order id once the
    first order is filled (Binance: the id is unique among *open* orders only): every attempt,
    the first and each retry after a timeout, first looks the client order id up and sends
    only when the exchange does not know it. An order found that way is recorded as submitted
    (and its fill, when the exchange reports one), never sent again.

    Errors follow :data:`kronos_quant.adapters.ccxt_errors.ERROR_RULES`: an order the exchange
    refuses (insufficient funds, an invalid order) is ``rejected`` with the exchange's words,
    not retried; a duplicate client id is looked up; a pending order not sent before the next
    candle closed is ``stale``; ``InvalidNonce`` (-1021) resyncs ccxt's clock offset (and the
    loop's, through ``on_resync``) before the retry; an authentication error stops the loop
    with one line naming ``key_vars`` (the credential variables, never their values).
    """

    name = "ccxt"

    def __init__(self, exchange: Any, *, retry: RetryPolicy | None = None,
                 key_vars: Sequence[str] = (), order_window_ms: int = 5000) -> None:
        from ..adapters.ccxt import RetryPolicy

        self.exchange = exchange
        self.order_window_ms = int(order_window_ms)
        self.retry = retry or RetryPolicy()
        self.key_vars = tuple(key_vars)
        self.on_resync: Callable[[], Any] | None = None
        # ccxt logs request headers (the API key among them) at DEBUG: keep it above that.
        logging.getLogger("ccxt").setLevel(max(logging.INFO, logging.getLogger("ccxt").level))
        exchange.verbose = False

    def on_candle(self, db: sqlite3.Connection, symbol: str, ts: int,
                  bar: Mapping[str, float]) -> None:
        """Fills arrive from the exchange, not from candles."""

    def place(self, db: sqlite3.Connection, order: OrderRequest) -> None:
        Ledger.put_order(db, order.client_id, order.symbol, order.timeframe, order.ts,
                         order.qty, order.ref_price, "pending")

    def check(self) -> None:
        """At start: the keys work (one signed call) and ccxt's clock offset is measured."""
        self._call(self.exchange.load_time_difference, "load_time_difference")
        self._call(self.exchange.fetch_balance, "fetch_balance (checking the API keys)")

    def resync(self) -> None:
        """After -1021: ccxt's own offset (it signs requests with it), then the loop's."""
        self.exchange.load_time_difference()
        if self.on_resync is not None:
            self.on_resync()

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return self.retry.call(fn, what=f"{self.exchange.id} {what}", exchange=self.exchange,
                               resync=self.resync, key_vars=self.key_vars)

    def lookup(self, symbol: str, client_id: str) -> dict | None:
        """The exchange's order with this client order id, or None when it has none."""
        from ..adapters import require_engine

        try:
            return self.exchange.fetch_order(None, symbol, {"clientOrderId": client_id})
        except require_engine("ccxt").OrderNotFound:
            return None

    def _exchange_ms(self) -> int:
        """The time ccxt signs requests with (its clock plus the measured offset)."""
        return int(self.exchange.milliseconds()) - int(
            self.exchange.options.get("timeDifference") or 0)

    def _send(self, symbol: str, side: str, amount: float, client_id: str) -> tuple[dict, bool]:
        """(the order, whether it was already at the exchange), retried by the error table.

        Each order carries ``recvWindow = order_window_ms``: Binance refuses a request that
        reaches it later than that after its timestamp. After a send whose outcome is unknown
        (timeout, 5xx, -1000) the retry first waits that window out, so the first request,
        if still in flight, can no longer execute; then the id is looked up, and only an
        order the exchange does not know is sent again.
        """
        sent: list[int] = []

        def attempt() -> tuple[dict, bool]:
            if sent:
                self.retry.sleep(max(0.0, (sent[-1] + self.order_window_ms
                                           - self._exchange_ms()) / 1000 + 0.001))
            found = self.lookup(symbol, client_id)
            if found is not None:
                return found, True
            sent.append(self._exchange_ms())
            return self.exchange.create_order(symbol, "market", side, amount, None, {
                "clientOrderId": client_id, "recvWindow": self.order_window_ms}), False

        return self._call(attempt, f"create_order {client_id}")

    def _stale_reason(self, ledger: Ledger, order: Mapping[str, Any],
                      now_ms: int | None) -> str | None:
        newest = ledger.last_decided_by_symbol(order["timeframe"]).get(order["symbol"])
        if newest is not None and order["ts"] < newest:
            return "superseded by a newer decision"
        step_ms = int(self.exchange.parse_timeframe(order["timeframe"]) * 1000)
        if now_ms is not None and now_ms >= order["ts"] + 2 * step_ms:
            return (f"stale: not sent by {pd.Timestamp(int(order['ts'] + 2 * step_ms), unit='ms')}"
                    ", when the next candle closed")
        return None

    def after_commit(self, ledger: Ledger, *, now_ms: int | None = None) -> None:
        """Send (or recognise) every pending order; mark superseded and late ones stale.

        ``now_ms`` is the exchange's time: an order still pending when the candle after its
        decision has closed is not sent (unless the exchange already has it).
        """
        pending = ledger.orders("pending")
        if len(pending):  # amount_to_precision needs the markets (ccxt caches them)
            self._call(self.exchange.load_markets, "load_markets")
        for _, order in pending.iterrows():
            stale = self._stale_reason(ledger, order, now_ms)
            if stale is None:
                self._submit(ledger, order)
                continue
            found = self._call(lambda order=order: self.lookup(order["symbol"],
                                                               order["client_id"]),
                               f"fetch_order {order['client_id']}")
            if found is None:
                with ledger.transaction() as db:
                    Ledger.set_order_status(db, order["client_id"], "stale", note=stale)
                continue
            self._record(ledger, order, found, "sent before a restart")

    def _submit(self, ledger: Ledger, order: Mapping[str, Any]) -> None:
        from ..adapters.ccxt_errors import classify, short

        cid, symbol = order["client_id"], order["symbol"]
        try:
            amount = float(self.exchange.amount_to_precision(symbol, order["qty"]))
            placed, known = self._send(symbol, order["side"], amount, cid)
        except Exception as err:
            action = getattr(classify(err), "action", None)
            if action == "duplicate":
                placed, known = self._call(lambda: self.lookup(symbol, cid),
                                           f"fetch_order {cid}") or {}, True
            elif action == "reject":
                with ledger.transaction() as db:
                    Ledger.set_order_status(db, cid, "rejected",
                                            note=f"{type(err).__name__}: {short(err, 200)}")
                logger.error("order %s %s %s %.8g rejected, not retried: %s: %s", cid,
                             order["side"], symbol, order["qty"], type(err).__name__,
                             short(err))
                return
            else:
                raise
        self._record(ledger, order, placed, "already at the exchange, not resent" if known
                     else None)

    def _fees(self, placed: Mapping[str, Any], symbol: str) -> list[Mapping[str, Any]]:
        """The order's fees; from its trades when the order itself does not carry them (an
        order looked up rather than answered with its fills)."""
        fees = [f for f in (placed.get("fees") or [placed.get("fee")]) if f]
        if fees or not placed.get("id"):
            return fees
        trades = self._call(lambda: self.exchange.fetch_order_trades(placed["id"], symbol),
                            f"fetch_order_trades {placed['id']}")
        return [t["fee"] for t in trades if t.get("fee")]

    def _record(self, ledger: Ledger, order: Mapping[str, Any], placed: Mapping[str, Any],
                note: str | None) -> None:
        """The exchange's answer into the ledger: submitted, and its fill when reported."""
        cid, symbol = order["client_id"], order["symbol"]
        with ledger.transaction() as db:
            Ledger.set_order_status(db, cid, "submitted", exchange_order_id=placed.get("id"),
                                    note=note)
            filled, price = placed.get("filled"), placed.get("average")
            if filled and price:
                sign = 1.0 if order["side"] == "buy" else -1.0
                qty, fee = fill_in_quote(self.exchange.market(symbol), sign * float(filled),
                                         float(price), self._fees(placed, symbol))
                Ledger.put_fill(db, cid, symbol, int(order["ts"]), qty, float(price), fee)
        logger.info("order %s %s %s %.8g: %s%s", cid, order["side"], symbol, order["qty"],
                    "filled" if placed.get("filled") else "submitted",
                    f" ({note})" if note else "")


def fill_in_quote(market: Mapping[str, Any], qty: float, price: float,
                  fees: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """(position change, fee in the quote currency) of a fill of signed ``qty`` at ``price``.

    A commission taken in the base asset (Binance's default on buys) shrinks the position by
    its amount and is worth ``amount × price``; one in the quote asset is taken as it is; one
    in a third asset (e.g. BNB) cannot be priced here and is counted as 0, with a warning.
    """
    quote_fee = 0.0
    for fee in fees:
        cost, currency = float(fee.get("cost") or 0.0), fee.get("currency")
        if cost == 0.0 or currency == market.get("quote"):
            quote_fee += cost
        elif currency == market.get("base"):
            qty, quote_fee = qty - cost, quote_fee + cost * price
        else:
            logger.warning("fee of %.8g %s not in %s or %s: not counted in the ledger's cash",
                           cost, currency, market.get("base"), market.get("quote"))
    return qty, quote_fee
