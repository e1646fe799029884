"""A live loop's SQLite ledger, read-only, for the ``/live`` endpoints and pages.

Every read opens the file with a ``file:…?mode=ro`` URI (SQLite refuses any write through
it), reads one consistent snapshot inside a deferred transaction and closes it. In WAL mode
(the ledger's journal) readers never block the writer and the writer never blocks them, so
a running ``kronos-quant live`` is not slowed or locked by the dashboard.

The heartbeat is the wall-clock time of the loop's newest decision (``decided_at``), or of
its newest skipped candle where the ledger records those (a ``skipped`` table): the loop
settles each candle right after it closes, so a heartbeat older than
:data:`STALE_BARS` bar spacings (plus :data:`STALE_GRACE_S`) means the loop stopped or
cannot reach its exchange.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from ..data import bar_spacing
from ..strategies.ledger import Ledger, from_ms, to_ms
from .requests import plain

STALE_BARS = 2
STALE_GRACE_S = 60.0
BAND = ("q10", "q90")  # the forecast summary's band: 10–90%, nominal coverage 80%
BAND_NOMINAL = 0.8


class LedgerMissing(LookupError):
    """The state folder has no ledger yet (the loop has not started)."""


def per_step(summary: dict[str, Any]) -> dict[str, Any]:
    """The per-step part of a decision's forecast summary (stamps, mean, q10, q50, q90):
    ``path`` of :func:`kronos_quant.forecast.forecast_summary`, or the top level in ledgers
    written before that summary existed."""
    return summary.get("path", summary)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else str(from_ms(int(ms)))


class LedgerView:
    """Read-only views of one state folder's ledger (``name`` is its label in the URLs)."""

    def __init__(self, name: str, state_dir: str | Path) -> None:
        self.name, self.state_dir = name, Path(state_dir)
        self.path = self.state_dir / Ledger.FILE

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection holding one consistent snapshot; closed afterwards."""
        if not self.path.is_file():
            raise LedgerMissing(f"live loop {self.name!r} has no ledger yet")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("BEGIN")  # deferred: the snapshot starts at the first read
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- pieces --------------------------------------------------------------------------
    @staticmethod
    def _meta(db: sqlite3.Connection) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT * FROM meta")}

    @staticmethod
    def _spacing_s(db: sqlite3.Connection) -> float | None:
        rows = db.execute("SELECT ts FROM candles WHERE symbol = (SELECT symbol FROM candles "
                          "LIMIT 1) ORDER BY ts DESC LIMIT 50").fetchall()
        if len(rows) < 2:
            return None
        return bar_spacing(pd.DatetimeIndex([from_ms(r[0]) for r in rows[::-1]])).total_seconds()

    @staticmethod
    def _skipped(db: sqlite3.Connection) -> tuple[int, float | None, str | None]:
        """(count, newest ``at``, newest reason) of skipped candles; zeros where the ledger
        has no ``skipped`` table (ledgers written before it existed)."""
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'skipped'"
                      ).fetchone() is None:
            return 0, None, None
        count, at = db.execute("SELECT COUNT(*), MAX(at) FROM skipped").fetchone()
        last = db.execute("SELECT reason FROM skipped ORDER BY at DESC LIMIT 1").fetchone()
        return int(count), at, last[0] if last else None

    @staticmethod
    def _marks(db: sqlite3.Connection) -> dict[str, float]:
        """Newest decided close of each symbol."""
        rows = db.execute("SELECT symbol, close FROM decisions d WHERE ts = (SELECT MAX(ts) "
                          "FROM decisions WHERE symbol = d.symbol)")
        return {r["symbol"]: float(r["close"]) for r in rows}

    # -- the endpoints -------------------------------------------------------------------
    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Settings, counts, last equity and the heartbeat of the loop."""
        now = time.time() if now is None else now
        out: dict[str, Any] = {"name": self.name}
        try:
            with self.snapshot() as db:
                meta = self._meta(db)
                count, last_ts, beat = db.execute(
                    "SELECT COUNT(*), MAX(ts), MAX(decided_at) FROM decisions").fetchone()
                equity = db.execute("SELECT ts, equity FROM equity ORDER BY ts DESC "
                                    "LIMIT 1").fetchone()
                spacing = self._spacing_s(db)
                skipped, skipped_at, reason = self._skipped(db)
        except LedgerMissing as err:
            return {**out, "status": "waiting", "message": str(err)}
        stale_after = None if spacing is None else STALE_BARS * spacing + STALE_GRACE_S
        beats = [b for b in (beat, skipped_at) if b is not None]
        beat = max(beats) if beats else None
        age = None if beat is None else max(0.0, now - float(beat))
        initial = float(meta.get("initial_cash", 0.0))
        last_equity = float(equity["equity"]) if equity else None
        return {**out, "status": "ok", "exchange": meta.get("exchange"),
                "timeframe": meta.get("timeframe"), "symbols": meta.get("symbols", []),
                "initial_cash": initial, "decisions": int(count),
                "last_candle": _iso(last_ts), "skipped": skipped, "last_skip_reason": reason,
                "heartbeat": beat,
                "heartbeat_age_s": age, "stale_after_s": stale_after,
                "stale": bool(age is not None and stale_after is not None and age > stale_after),
                "equity": last_equity,
                "pnl": None if last_equity is None else last_equity - initial}

    def decisions(self, *, since_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` decisions with candle time > ``since_ms``, oldest first, each
        with its forecast summary and scores."""
        with self.snapshot() as db:
            rows = db.execute("SELECT * FROM decisions WHERE ts > ? ORDER BY ts DESC, symbol DESC "
                              "LIMIT ?", (-2**62 if since_ms is None else since_ms,
                                          limit)).fetchall()
            keys = [(r["symbol"], r["timeframe"], r["ts"]) for r in rows]
            scores: dict[tuple, dict[str, Any]] = {k: {} for k in keys}
            if rows:
                low = min(k[2] for k in keys)
                for s in db.execute("SELECT * FROM scores WHERE ts >= ?", (low,)):
                    key = (s["symbol"], s["timeframe"], s["ts"])
                    if key in scores:
                        scores[key][s["scorer"]] = plain(s["value"])
        return [{"symbol": r["symbol"], "timeframe": r["timeframe"], "ts": r["ts"],
                 "time": _iso(r["ts"]), "decided_at": r["decided_at"], "close": r["close"],
                 "target_weight": r["target_weight"], "target_qty": r["target_qty"],
                 "forecast": json.loads(r["forecast"]), "scores": scores[k]}
                for r, k in zip(reversed(rows), reversed(keys), strict=True)]

    def positions(self) -> dict[str, Any]:
        """Cash and every open position marked at its newest decided close."""
        with self.snapshot() as db:
            cash = float(db.execute("SELECT cash FROM account WHERE id = 0").fetchone()[0])
            marks = self._marks(db)
            rows = db.execute("SELECT * FROM positions WHERE qty != 0 ORDER BY symbol").fetchall()
        held = []
        for r in rows:
            mark = marks.get(r["symbol"])
            value = None if mark is None else r["qty"] * mark
            held.append({"symbol": r["symbol"], "qty": r["qty"], "avg_price": r["avg_price"],
                         "mark": mark, "value": value,
                         "unrealised_pnl": None if mark is None
                         else r["qty"] * (mark - r["avg_price"]),
                         "updated": _iso(r["updated_ts"])})
        total = cash + sum(p["value"] or 0.0 for p in held)
        return {"cash": cash, "positions": held, "equity": total}

    def equity(self) -> dict[str, Any]:
        """The equity curve: one mark per decided candle time."""
        with self.snapshot() as db:
            meta = self._meta(db)
            rows = db.execute("SELECT ts, cash, equity FROM equity ORDER BY ts").fetchall()
        return {"initial_cash": float(meta.get("initial_cash", 0.0)),
                "time": [_iso(r["ts"]) for r in rows], "equity": [r["equity"] for r in rows],
                "cash": [r["cash"] for r in rows]}

    def coverage(self, *, points: int = 200) -> dict[str, Any]:
        """Realised closes against the forecast 10–90% band, for every forecast step whose
        candle the loop has seen so far."""
        with self.snapshot() as db:
            closes = {(r["symbol"], r["ts"]): r["close"]
                      for r in db.execute("SELECT symbol, ts, close FROM candles")}
            rows = db.execute("SELECT symbol, ts, forecast FROM decisions ORDER BY ts, "
                              "symbol").fetchall()
        checked: list[dict[str, Any]] = []
        for r in rows:
            fc = per_step(json.loads(r["forecast"]))
            lows, highs, mids = fc.get(BAND[0], []), fc.get(BAND[1], []), fc.get("q50", [])
            for step, stamp in enumerate(fc.get("stamps", [])):
                realised = closes.get((r["symbol"], to_ms(pd.Timestamp(stamp))))
                if realised is None or step >= len(lows):
                    continue
                checked.append({"symbol": r["symbol"], "decided": _iso(r["ts"]), "time": stamp,
                                "step": step + 1, "q10": lows[step], "q90": highs[step],
                                "q50": mids[step] if step < len(mids) else None,
                                "realised": realised,
                                "inside": bool(lows[step] <= realised <= highs[step])})
        inside = sum(c["inside"] for c in checked)
        by_symbol: dict[str, list[int]] = {}
        for c in checked:
            hit = by_symbol.setdefault(c["symbol"], [0, 0])
            hit[0], hit[1] = hit[0] + c["inside"], hit[1] + 1
        return {"band": "10-90%", "nominal": BAND_NOMINAL, "checked": len(checked),
                "inside": inside, "coverage": inside / len(checked) if checked else None,
                "by_symbol": {s: {"inside": a, "checked": n, "coverage": a / n}
                              for s, (a, n) in sorted(by_symbol.items())},
                "points": checked[-points:]}


def unique_views(states: list[str | Path]) -> dict[str, LedgerView]:
    """One view per state folder, named by the folder (``-2``, ``-3`` … on a clash)."""
    views: dict[str, LedgerView] = {}
    for state in states:
        base = Path(state).resolve().name or "loop"
        name, k = base, 2
        while name in views:
            name, k = f"{base}-{k}", k + 1
        views[name] = LedgerView(name, state)
    return views
