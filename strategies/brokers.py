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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

    def after_commit(self, ledger: Ledger) -> None:
        """Nothing leaves the ledger."""


def credentials_from_env(exchange_id: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """API credentials from ``<EXCHANGE>_API_KEY``, ``_API_SECRET`` and optional ``_API_PASSWORD``.

    Never from files or arguments, so they are not written to the state folder or shell history.
    """
    env = os.environ if environ is None else environ
    prefix = exchange_id.upper()
    names = {"apiKey": f"{prefix}_API_KEY", "secret": f"{prefix}_API_SECRET",
             "password": f"{prefix}_API_PASSWORD"}
    creds = {field: env[var] for field, var in names.items() if env.get(var)}
    missing = [names[f] for f in ("apiKey", "secret") if f not in creds]
    if missing:
        raise ValueError(f"--live-orders needs the environment variables {missing} "
                         "(keys are read from the environment only)")
    return creds


class CcxtBroker:
    """Market orders on a real exchange through ccxt (only behind ``--live-orders``).

    Orders are recorded ``pending`` in the decision's transaction and sent after the commit;
    ``pending`` orders left by a crash are sent at the next start with the same client order
    id. Only the newest decision of a symbol is sent: older pending ones (a restart after a
    long stop) are marked ``stale``, since the target position supersedes them.
    """

    name = "ccxt"

    def __init__(self, exchange: Any, *, retry: "RetryPolicy | None" = None) -> None:
        from ..adapters.ccxt import RetryPolicy

        self.exchange = exchange
        self.retry = retry or RetryPolicy()
        # ccxt logs request headers (the API key among them) at DEBUG: keep it above that.
        logging.getLogger("ccxt").setLevel(max(logging.INFO, logging.getLogger("ccxt").level))
        exchange.verbose = False

    def on_candle(self, db: sqlite3.Connection, symbol: str, ts: int,
                  bar: Mapping[str, float]) -> None:
        """Fills arrive from the exchange, not from candles."""

    def place(self, db: sqlite3.Connection, order: OrderRequest) -> None:
        Ledger.put_order(db, order.client_id, order.symbol, order.timeframe, order.ts,
                         order.qty, order.ref_price, "pending")

    def after_commit(self, ledger: Ledger) -> None:
        from ..adapters.ccxt import require_ccxt

        ccxt = require_ccxt()
        pending = ledger.orders("pending")
        newest = pending.groupby("symbol")["ts"].transform("max") if len(pending) else None
        for i, order in pending.iterrows():
            cid = order["client_id"]
            if order["ts"] < newest[i]:
                with ledger.transaction() as db:
                    Ledger.set_order_status(db, cid, "stale", note="superseded by a newer decision")
                continue
            amount = float(self.exchange.amount_to_precision(order["symbol"], order["qty"]))
            try:
                placed = self.retry.call(
                    lambda: self.exchange.create_order(order["symbol"], "market", order["side"],
                                                       amount, None, {"clientOrderId": cid}),
                    what=f"create_order {cid}", exchange=self.exchange)
            except ccxt.DuplicateOrderId:
                status, note, placed = "submitted", "already at the exchange (resent)", {}
            except (ccxt.InvalidOrder, ccxt.InsufficientFunds) as err:
                status, note, placed = "rejected", f"{type(err).__name__}: {err}"[:200], {}
            else:
                status, note = "submitted", None
            with ledger.transaction() as db:
                Ledger.set_order_status(db, cid, status, exchange_order_id=placed.get("id"),
                                        note=note)
                filled, price = placed.get("filled"), placed.get("average")
                if status == "submitted" and filled and price:
                    fee = float((placed.get("fee") or {}).get("cost") or 0.0)
                    sign = 1.0 if order["side"] == "buy" else -1.0
                    Ledger.put_fill(db, cid, order["symbol"], int(order["ts"]), sign * float(filled),
                                    float(price), fee)
            logger.info("order %s %s %s %.8g: %s%s", cid, order["side"], order["symbol"], amount,
                        status, f" ({note})" if note else "")
