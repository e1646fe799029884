"""The live loop's state: one SQLite file (WAL) that survives a crash at any instruction.

Tables (candle times are UTC epoch milliseconds of the bar's open):

* ``meta`` — key/value settings fixed at creation (exchange, timeframe, initial cash, …).
* ``candles`` — every closed candle the loop decided on, per (symbol, timeframe, ts).
* ``decisions`` — one row per (symbol, timeframe, ts): the close, the target weight and
  quantity, and a JSON summary of the forecast paths.
* ``scores`` — one row per (symbol, timeframe, ts, scorer).
* ``skipped`` — one row per (symbol, timeframe, ts) the loop could not decide, with the
  reason (the exchange had no candle, the fetch failed until the candle's deadline, …): every
  closed candle gets exactly one ``decisions`` or one ``skipped`` row.
* ``orders`` — one row per client order id (derived from the bot id, symbol, timeframe and
  ts, so a retried or restarted submission reuses it); ``status`` pending → filled /
  submitted / rejected / stale (not sent: the next candle had closed), ``note`` says why.
* ``fills``, ``positions`` (quantity and average price per symbol), ``account`` (cash) and
  ``equity`` (one mark per decided candle time).

Every decision is written by :meth:`Ledger.transaction` as one ``BEGIN IMMEDIATE`` … ``COMMIT``:
after a crash either all of a candle's rows exist or none do, so a restart decides each
candle exactly once.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candles (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL,
    open REAL, high REAL, low REAL, close REAL, volume REAL, amount REAL,
    PRIMARY KEY (symbol, timeframe, ts));
CREATE TABLE IF NOT EXISTS decisions (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL,
    decided_at REAL NOT NULL, close REAL NOT NULL, target_weight REAL NOT NULL,
    target_qty REAL NOT NULL, forecast TEXT NOT NULL,
    PRIMARY KEY (symbol, timeframe, ts));
CREATE TABLE IF NOT EXISTS scores (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL, scorer TEXT NOT NULL,
    value REAL, PRIMARY KEY (symbol, timeframe, ts, scorer));
CREATE TABLE IF NOT EXISTS skipped (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (symbol, timeframe, ts));
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    ts INTEGER NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, ref_price REAL NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, exchange_order_id TEXT, note TEXT);
CREATE TABLE IF NOT EXISTS fills (
    client_id TEXT PRIMARY KEY REFERENCES orders(client_id), symbol TEXT NOT NULL,
    ts INTEGER NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_price REAL NOT NULL, updated_ts INTEGER);
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 0), cash REAL NOT NULL);
CREATE TABLE IF NOT EXISTS equity (
    timeframe TEXT NOT NULL, ts INTEGER NOT NULL, cash REAL NOT NULL, equity REAL NOT NULL,
    PRIMARY KEY (timeframe, ts));
"""


ID_LIMIT = 36  # Binance's newClientOrderId limit


def client_order_id(symbol: str, timeframe: str, ts_ms: int, *, bot: str = "",
                    prefix: str = "kq") -> str:
    """Deterministic client order id for one bot's decision on (symbol, timeframe, candle).

    Letters, digits and ``-`` only, at most 36 characters (Binance's limit), e.g.
    ``kq-3f9a1c-BTCUSDT-1h-1700000000``: ``bot`` (the ledger's :meth:`Ledger.bot_id`) keeps two
    loops on one account apart; a long symbol is shortened, never the bot id or the time.
    """
    head = f"{prefix}-{bot}-" if bot else f"{prefix}-"
    tail = f"-{timeframe}-{int(ts_ms) // 1000}"
    clean = "".join(ch for ch in symbol if ch.isalnum())
    room = ID_LIMIT - len(head) - len(tail)
    if room < 3:
        raise ValueError(f"client order id for {symbol} {timeframe} would exceed {ID_LIMIT} "
                         "characters")
    return f"{head}{clean[:room]}{tail}"


def to_ms(stamp: Any) -> int:
    """A naive-UTC timestamp (or epoch ms) → epoch milliseconds."""
    if isinstance(stamp, int):
        return stamp
    return int(pd.Timestamp(stamp).as_unit("ns").value // 1_000_000)


def from_ms(ms: int) -> pd.Timestamp:
    return pd.Timestamp(int(ms), unit="ms")


@dataclass
class Position:
    qty: float = 0.0
    avg_price: float = 0.0


class Ledger:
    """SQLite ledger in ``state_dir/ledger.sqlite`` (WAL journal, full sync)."""

    FILE = "ledger.sqlite"

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.FILE
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per decision.
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit: committed on success, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- settings ------------------------------------------------------------------------

    def init_meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``settings`` on first use; later runs must agree on the keys both have."""
        stored = self.meta()
        if not stored:
            with self.transaction() as db:
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [(k, json.dumps(v)) for k, v in settings.items()])
                db.execute("INSERT INTO account VALUES (0, ?)", (float(settings["initial_cash"]),))
            return dict(settings)
        clash = {k: (stored[k], v) for k, v in settings.items() if k in stored and stored[k] != v}
        if clash:
            details = ", ".join(f"{k}: ledger {a!r} vs now {b!r}" for k, (a, b) in clash.items())
            raise ValueError(f"{self.path} belongs to another set-up ({details}); "
                             "use a new --state")
        return stored

    def bot_id(self) -> str:
        """This state folder's bot id (6 hex digits, made once, kept in ``meta``).

        Client order ids carry it, so two loops on one account (two ``--state`` folders) never
        send or look up each other's orders.
        """
        stored = self.meta().get("bot_id")
        if stored is None:
            stored = secrets.token_hex(3)
            with self.transaction() as db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('bot_id', ?)", (json.dumps(stored),))
            stored = self.meta()["bot_id"]
        return str(stored)

    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.conn.execute("SELECT * FROM meta")}

    # -- reads ---------------------------------------------------------------------------

    def last_decided(self, timeframe: str) -> int | None:
        row = self.conn.execute("SELECT MAX(ts) FROM decisions WHERE timeframe = ?",
                                (timeframe,)).fetchone()
        return None if row[0] is None else int(row[0])

    def last_handled(self, timeframe: str) -> int | None:
        """Newest candle time (ms) with a decision or a skipped row."""
        row = self.conn.execute("SELECT MAX(ts) FROM (SELECT ts FROM decisions WHERE timeframe "
                                "= ?1 UNION ALL SELECT ts FROM skipped WHERE timeframe = ?1)",
                                (timeframe,)).fetchone()
        return None if row[0] is None else int(row[0])

    def handled(self, symbol: str, timeframe: str, ts: int) -> bool:
        """Whether (symbol, candle) already has its decision or skipped row."""
        return any(self.conn.execute(f"SELECT 1 FROM {table} WHERE symbol=? AND timeframe=? AND "
                                     "ts=?", (symbol, timeframe, ts)).fetchone()
                   for table in ("decisions", "skipped"))

    def last_decided_by_symbol(self, timeframe: str) -> dict[str, int]:
        """Newest decided candle time (ms) of each symbol."""
        rows = self.conn.execute("SELECT symbol, MAX(ts) FROM decisions WHERE timeframe = ? "
                                 "GROUP BY symbol", (timeframe,)).fetchall()
        return {symbol: int(ts) for symbol, ts in rows}

    def is_decided(self, symbol: str, timeframe: str, ts: int) -> bool:
        return self.conn.execute("SELECT 1 FROM decisions WHERE symbol=? AND timeframe=? AND ts=?",
                                 (symbol, timeframe, ts)).fetchone() is not None

    def cash(self) -> float:
        return float(self.conn.execute("SELECT cash FROM account WHERE id = 0").fetchone()[0])

    def positions(self) -> dict[str, Position]:
        return {r["symbol"]: Position(r["qty"], r["avg_price"])
                for r in self.conn.execute("SELECT * FROM positions")}

    def orders(self, status: str | None = None) -> pd.DataFrame:
        sql, args = "SELECT * FROM orders", ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return pd.read_sql_query(sql + " ORDER BY ts, symbol", self.conn, params=args)

    def table(self, name: str) -> pd.DataFrame:
        if name not in ("candles", "decisions", "skipped", "scores", "orders", "fills",
                        "positions", "equity"):
            raise ValueError(f"unknown ledger table {name!r}")
        return pd.read_sql_query(f"SELECT * FROM {name}", self.conn)

    # -- writes (call inside transaction()) -----------------------------------------------

    @staticmethod
    def put_candle(db: sqlite3.Connection, symbol: str, timeframe: str, ts: int,
                   bar: Mapping[str, float]) -> None:
        db.execute("INSERT OR REPLACE INTO candles VALUES (?,?,?,?,?,?,?,?,?)",
                   (symbol, timeframe, ts, bar["open"], bar["high"], bar["low"], bar["close"],
                    bar["volume"], bar["amount"]))

    @staticmethod
    def put_decision(db: sqlite3.Connection, symbol: str, timeframe: str, ts: int, *,
                     close: float, weight: float, qty: float, forecast: Mapping[str, Any],
                     scores: Mapping[str, float]) -> None:
        db.execute("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?)",
                   (symbol, timeframe, ts, time.time(), close, weight, qty, json.dumps(forecast)))
        db.executemany("INSERT INTO scores VALUES (?,?,?,?,?)",
                       [(symbol, timeframe, ts, k, None if v != v else float(v))
                        for k, v in scores.items()])

    @staticmethod
    def put_skipped(db: sqlite3.Connection, symbol: str, timeframe: str, ts: int,
                    reason: str) -> None:
        """Record that (symbol, candle) was not decided, and why (the first reason stays)."""
        db.execute("INSERT OR IGNORE INTO skipped VALUES (?,?,?,?,?)",
                   (symbol, timeframe, ts, reason[:300], time.time()))

    @staticmethod
    def put_order(db: sqlite3.Connection, client_id: str, symbol: str, timeframe: str, ts: int,
                  qty: float, ref_price: float, status: str, note: str | None = None) -> None:
        side = "buy" if qty > 0 else "sell"
        db.execute("INSERT INTO orders (client_id, symbol, timeframe, ts, side, qty, ref_price, "
                   "status, created_at, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (client_id, symbol, timeframe, ts, side, abs(qty), ref_price, status,
                    time.time(), note))

    @staticmethod
    def set_order_status(db: sqlite3.Connection, client_id: str, status: str, *,
                         exchange_order_id: str | None = None, note: str | None = None) -> None:
        db.execute("UPDATE orders SET status = ?, exchange_order_id = COALESCE(?, "
                   "exchange_order_id), note = COALESCE(?, note) WHERE client_id = ?",
                   (status, exchange_order_id, note, client_id))

    @staticmethod
    def put_fill(db: sqlite3.Connection, client_id: str, symbol: str, ts: int, qty: float,
                 price: float, fee: float) -> None:
        """Record a signed fill and move cash and the position (average price on adds)."""
        db.execute("INSERT INTO fills VALUES (?,?,?,?,?,?)",
                   (client_id, symbol, ts, qty, price, fee))
        row = db.execute("SELECT qty, avg_price FROM positions WHERE symbol = ?",
                         (symbol,)).fetchone()
        old_qty, old_avg = (row[0], row[1]) if row else (0.0, 0.0)
        new_qty = old_qty + qty
        if abs(new_qty) < 1e-12:
            new_qty, avg = 0.0, 0.0
        elif old_qty == 0 or (old_qty > 0) != (new_qty > 0):
            avg = price  # opened, or flipped through zero
        elif abs(new_qty) > abs(old_qty):
            avg = (old_avg * old_qty + price * qty) / new_qty
        else:
            avg = old_avg  # reduced: the entry price of what is left is unchanged
        db.execute("INSERT OR REPLACE INTO positions VALUES (?,?,?,?)", (symbol, new_qty, avg, ts))
        db.execute("UPDATE account SET cash = cash - ? WHERE id = 0", (qty * price + fee,))
        Ledger.set_order_status(db, client_id, "filled")

    @staticmethod
    def put_equity(db: sqlite3.Connection, timeframe: str, ts: int,
                   marks: Mapping[str, float]) -> float:
        """Mark positions at ``marks`` (symbol → price; last decided close when missing)."""
        cash = float(db.execute("SELECT cash FROM account WHERE id = 0").fetchone()[0])
        value = 0.0
        for symbol, qty in db.execute("SELECT symbol, qty FROM positions"):
            price = marks.get(symbol)
            if price is None:
                last = db.execute("SELECT close FROM decisions WHERE symbol = ? ORDER BY ts DESC "
                                  "LIMIT 1", (symbol,)).fetchone()
                price = last[0] if last else 0.0
            value += qty * price
        db.execute("INSERT OR REPLACE INTO equity VALUES (?,?,?,?)",
                   (timeframe, ts, cash, cash + value))
        return cash + value
