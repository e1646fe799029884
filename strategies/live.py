"""The live loop: closed candles → Kronos forecast paths → scores → target positions → broker.

Each cycle (:meth:`LiveLoop.cycle`) updates the candle store from the exchange, finds every
candle time not yet decided, and decides them in order. A candle time t is *decidable* once
every symbol either has its candle t or already has a later one (the exchange skipped t: a
gap); until then (a late candle) the loop polls a little and otherwise leaves t to the next
cycle. Deciding t (:meth:`LiveLoop.decide`) forecasts each symbol from its last ``lookback``
candles ≤ t with future stamps from :func:`kronos_quant.calendars.future_timestamps` (the
same function backtests use), seeded per (symbol, t) with
:func:`kronos_quant.signals.window_seed`, scores the paths with
:func:`kronos_quant.signals.score_forecasts`, sizes targets with :func:`target_positions` on
:func:`kronos_quant.portfolio.target_weights` (``conviction`` or ``threshold``; the sizing
lives in :mod:`.live_sizing`), holds what it has while P(up) sits inside the hold band
(``entry_z``/``exit_z``, :func:`hold_targets`; off by default), and writes everything —
fills the candle settles, candles, forecasts, scores, orders, equity — in one ledger
transaction. A crash before the commit leaves no trace of t; after it, t is never decided
again.

Faults (docs/live.md has the table): every exchange call is retried by ccxt's error hierarchy
(:mod:`kronos_quant.adapters.ccxt_errors`) until ``retry_margin_s`` before the next candle
closes; a candle still undecided then gets a ``skipped`` row with the error, as does a symbol
the exchange has no candle for (a gap), so every (symbol, candle) has exactly one decision or
one skipped row. A decision made after the next candle has closed (a catch-up after downtime)
is recorded but its orders are ``stale``, not sent. Time is the exchange's: the offset of the
injected clock to it is measured at start, each cycle and on an ``InvalidNonce`` (-1021).
What no retry fixes (authentication, permissions, unknown symbol) stops the loop with one line
(:class:`~kronos_quant.adapters.ccxt_errors.FatalExchangeError`).

:meth:`LiveLoop.run` wakes at each candle close (plus ``grace_s``) on the injected clock and
stops cleanly on SIGINT/SIGTERM or after one cycle with ``once=True``.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..adapters.ccxt_errors import FatalExchangeError, classify, short
from ..calendars import future_timestamps
from ..forecast import forecast_summary
from ..inputs import MIN_CONTEXT
from ..signals import score_forecasts, window_seed
from ..tradespec import TradeSpec
from .brokers import OrderRequest
from .ledger import Ledger, client_order_id, from_ms, to_ms
from .live_sizing import hold_targets, order_size, prob_noise, target_positions

__all__ = ["LiveConfig", "LiveLoop", "CycleResult", "SIZINGS", "target_positions",
           "hold_targets", "order_size"]

if TYPE_CHECKING:
    from ..adapters.ccxt import CandleStore, CcxtFeed
    from ..predictor import KronosPredictor

logger = logging.getLogger(__name__)

SIZINGS: tuple[str, ...] = ("prob", "threshold")
DEFAULT_SCORE = {"prob": "prob_up", "threshold": "expected_return"}


@dataclass
class LiveConfig:
    """What the loop trades and how (see ``docs/live.md`` for every field)."""

    exchange: str
    symbols: Sequence[str]
    timeframe: str
    lookback: int = 120
    pred_len: int = 1
    sample_count: int = 32
    T: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    seed: int = 0
    scorers: Sequence[str] = ("expected_return", "prob_up", "median_return", "quantile_spread")
    sizing: str = "prob"
    score: str | None = None
    # The sizing terms as a TradeSpec (method "conviction" = sizing "prob", or "threshold");
    # given, it sets sizing, threshold, long_short, max_weight, gross and initial_cash.
    spec: TradeSpec | None = None
    threshold: float = 0.0
    dead_band: float = 0.05
    # Hysteresis ("Holding through noise" in docs/live.md; sizing "prob" only): enter or
    # resize only when |P(up) − ½| ≥ entry_z·√(¼/S), leave only when P(up) crosses to the
    # other side of ½ by exit_z·√(¼/S); in between, hold. 0 (the default): off, the target
    # follows each candle's sizing as a backtest's does. exit_z None: entry_z.
    entry_z: float = 0.0
    exit_z: float | None = None
    # TradeSpec's own defaults (one definition). The paper account starts smaller than a
    # backtest's cash: the ledger records it, so changing it would refuse existing ledgers.
    max_weight: float | None = TradeSpec.max_weight
    gross: float = TradeSpec.gross
    long_short: bool = TradeSpec.long_short
    initial_cash: float = 10_000.0
    min_trade_value: float = 1.0
    min_trade_weight: float = 0.0
    grace_s: float = 2.0
    retry_margin_s: float = 1.0
    late_timeout_s: float = 30.0
    late_poll_s: float = 2.0

    def __post_init__(self) -> None:
        if self.spec is not None:
            self._apply_spec(self.spec)
        self.symbols = list(self.symbols)
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols must be distinct and non-empty, got {self.symbols}")
        if self.sizing not in SIZINGS:
            raise ValueError(f"sizing must be one of {SIZINGS}, got {self.sizing!r}")
        self.score = self.score or DEFAULT_SCORE[self.sizing]
        self.scorers = list(dict.fromkeys([*self.scorers, self.score]))
        for name in ("lookback", "pred_len", "sample_count"):
            least = MIN_CONTEXT if name == "lookback" else 1
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if not 0 <= self.dead_band < 0.5:
            raise ValueError(f"dead_band must be in [0, 0.5), got {self.dead_band}")
        if not 0 <= self.min_trade_weight < 1:
            raise ValueError(f"min_trade_weight must be in [0, 1), got {self.min_trade_weight}")
        self._check_hold_bands()
        if self.retry_margin_s < 0:
            raise ValueError(f"retry_margin_s must be >= 0, got {self.retry_margin_s}")

    def _check_hold_bands(self) -> None:
        for name in ("entry_z", "exit_z"):
            value = getattr(self, name)
            if value is None and name == "exit_z":
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        most, noise = math.sqrt(self.sample_count), prob_noise(self.sample_count)
        if self.entry_z > most:
            raise ValueError(f"entry_z={self.entry_z:g} with sample_count={self.sample_count} "
                             f"puts the entry band at |P(up) - 1/2| >= {self.entry_z * noise:.3g}"
                             f": no forecast can reach it; use entry_z <= {most:g} "
                             "(the square root of sample_count)")
        if self.exit_z is not None and self.exit_z >= most:
            raise ValueError(f"exit_z={self.exit_z:g} with sample_count={self.sample_count} "
                             f"puts the exit beyond P(up) = 0 or 1: a position could never be "
                             f"left; use exit_z < {most:g} (the square root of sample_count)")
        if self.hold_bands() is not None and self.sizing != "prob":
            raise ValueError("entry_z/exit_z (the hold band on P(up)) apply to sizing='prob'; "
                             f"got sizing={self.sizing!r}")

    def hold_bands(self) -> tuple[float, float] | None:
        """The hold rule's ``(entry, exit)`` bands in probability (``entry_z`` and ``exit_z``
        times √(¼/sample_count), the standard error of P(up) at ½), or None when it is off."""
        exit_z = self.entry_z if self.exit_z is None else self.exit_z
        if not (self.entry_z or exit_z):
            return None
        noise = prob_noise(self.sample_count)
        return self.entry_z * noise, exit_z * noise

    def ledger_settings(self) -> dict[str, Any]:
        """Settings a ledger is tied to: a restart with different ones is refused."""
        return {"exchange": self.exchange, "timeframe": self.timeframe,
                "symbols": sorted(self.symbols), "initial_cash": self.initial_cash}

    def trade_spec(self) -> TradeSpec:
        """The sizing terms as the TradeSpec every engine reads (built from the fields when
        ``spec`` was not given)."""
        if self.spec is not None:
            return self.spec
        t = self.threshold  # long above t; short (long_short only) below −t
        return TradeSpec(method="conviction" if self.sizing == "prob" else "threshold",
                         threshold=None if self.sizing == "prob" else (min(t, -t), t),
                         long_short=self.long_short, max_weight=self.max_weight,
                         gross=self.gross, cash=self.initial_cash).check_engine("live")

    def _apply_spec(self, spec: TradeSpec) -> None:
        if not isinstance(spec, TradeSpec):
            raise TypeError(f"spec must be a TradeSpec, got {type(spec).__name__}")
        spec.check_engine("live")
        if spec.method not in ("conviction", "threshold") or spec.rebalance != 1:
            raise ValueError("the live loop sizes every candle with method='conviction' "
                             "(probability-weighted) or 'threshold' and rebalance=1; got "
                             f"method={spec.method!r}, rebalance={spec.rebalance}")
        self.sizing = "prob" if spec.method == "conviction" else "threshold"
        self.threshold = spec.bounds[1] if spec.bounds else self.threshold
        self.long_short, self.max_weight, self.gross = spec.long_short, spec.max_weight, spec.gross
        self.initial_cash = spec.cash


@dataclass
class CycleResult:
    decided: list[pd.Timestamp] = field(default_factory=list)
    skipped: int = 0
    waiting: list[str] = field(default_factory=list)
    equity: float | None = None
    latency_s: list[float] = field(default_factory=list)  # candle close → orders committed


class LiveLoop:
    """Closed candles in, decisions out (see the module docstring)."""

    def __init__(self, config: LiveConfig, *, predictor: KronosPredictor, feed: CcxtFeed,
                 store: CandleStore, ledger: Ledger, broker: Any,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.config, self.predictor, self.feed = config, predictor, feed
        self.store, self.ledger, self.broker = store, ledger, broker
        self.clock = clock
        self.stop_event = threading.Event()
        self.sleep = sleep or (lambda s: self.stop_event.wait(max(0.0, s)))
        for symbol in config.symbols:
            feed.check(symbol, config.timeframe)
        self.step = feed.step(config.timeframe)
        self.step_ms = int(self.step.total_seconds() * 1000)
        ledger.init_meta(config.ledger_settings())
        self.bot_id = ledger.bot_id()
        self.offset_ms = 0  # exchange clock − injected clock
        self.cycle_candle: pd.Timestamp | None = None  # newest closed when the cycle began
        if hasattr(broker, "on_resync"):
            broker.on_resync = self.sync_clock
        self.sync_clock()
        if hasattr(broker, "check"):
            broker.check()  # keys and clock before the first decision, not after it
        ceiling = config.max_weight * len(config.symbols) if config.max_weight else None
        if ceiling is not None and ceiling < config.gross:
            logger.info("max_weight=%g on %d symbol(s): at most %g of equity is held "
                        "(gross=%g)", config.max_weight, len(config.symbols), ceiling,
                        config.gross)
        self.frames: dict[str, pd.DataFrame] = {}

    # -- exchange time and deadlines --------------------------------------------------------

    def sync_clock(self) -> int:
        """Measure the exchange clock's offset to ours (at start, each cycle, on -1021)."""
        before = self.clock()
        server = self.feed.server_time_ms()
        after = self.clock()
        offset = int(server - (before + after) * 500)
        if abs(offset - self.offset_ms) > 1000:
            logger.info("exchange clock offset %+.3fs", offset / 1000)
        self.offset_ms = offset
        return server

    def exchange_ms(self) -> int:
        return int(self.clock() * 1000) + self.offset_ms

    @contextmanager
    def candle_deadline(self, now_ms: int) -> Iterator[float]:
        """Exchange calls inside retry until ``retry_margin_s`` before the next close."""
        next_close = (now_ms // self.step_ms + 1) * self.step_ms
        remaining = (next_close - now_ms) / 1000 - self.config.retry_margin_s
        policies = {id(p): p for p in (getattr(self.feed, "retry", None),
                                       getattr(self.broker, "retry", None)) if p is not None}
        with ExitStack() as stack:
            for policy in policies.values():
                stack.enter_context(policy.until(policy.clock() + max(0.0, remaining)))
            yield remaining

    def skip_unhandled(self, reason: str) -> int:
        """Skipped rows, with ``reason``, for every candle up to the failed cycle's own (the
        newest closed when it started) not decided yet."""
        cfg = self.config
        latest = to_ms(self.cycle_candle or self._latest_closed(self.exchange_ms()))
        last = self.ledger.last_handled(cfg.timeframe)
        first = latest if last is None else max(last + self.step_ms,
                                                latest - 10_000 * self.step_ms)
        count = 0
        with self.ledger.transaction() as db:
            for ts in range(first, latest + 1, self.step_ms):
                for symbol in cfg.symbols:
                    if not self.ledger.handled(symbol, cfg.timeframe, ts):
                        Ledger.put_skipped(db, symbol, cfg.timeframe, ts, reason)
                        count += 1
        return count

    # -- candles -------------------------------------------------------------------------

    def _refresh(self, now_ms: int) -> None:
        start = from_ms(now_ms) - (self.config.lookback + 2) * self.step
        for symbol in self.config.symbols:
            self.frames[symbol], _ = self.store.update(self.feed, symbol, self.config.timeframe,
                                                       start=start, now_ms=now_ms)

    def _latest_closed(self, now_ms: int) -> pd.Timestamp:
        step_ms = int(self.step.total_seconds() * 1000)
        return from_ms((now_ms // step_ms - 1) * step_ms)

    def pending_times(self) -> tuple[list[pd.Timestamp], list[str]]:
        """Decidable candle times not yet decided, and the symbols holding the next one back."""
        last = self.ledger.last_handled(self.config.timeframe)
        ends = {s: (f.index[-1] if len(f) else None) for s, f in self.frames.items()}
        if any(end is None for end in ends.values()):
            return [], [s for s, end in ends.items() if end is None]
        horizon = min(ends.values())
        stamps = sorted(set().union(*(f.index for f in self.frames.values())))
        if last is None:  # first start: decide only the newest decidable candle
            todo = [horizon]
        else:
            todo = [t for t in stamps if from_ms(last) < t <= horizon]
        behind = [s for s, end in ends.items() if end == horizon]
        return todo, behind

    # -- one decision --------------------------------------------------------------------

    def _forecasts(self, t: pd.Timestamp, missing: dict[str, str]) -> dict[str, Any]:
        """Forecasts at t; symbols that cannot have one go into ``missing`` with the reason."""
        cfg = self.config
        contexts, stamps, seeds = {}, [], []
        for symbol, frame in self.frames.items():
            if t not in frame.index:
                missing[symbol] = f"the exchange has no {cfg.timeframe} candle at {t} (a gap)"
                continue
            context = frame.loc[:t].iloc[-cfg.lookback:]
            if len(context) < MIN_CONTEXT:  # warming up: a forecast needs MIN_CONTEXT candles
                missing[symbol] = f"only {len(context)} candle(s) up to {t}"
                continue
            contexts[symbol] = context
            stamps.append(future_timestamps(context.index, cfg.pred_len))
            seeds.append(window_seed(cfg.seed, symbol, t))
        if not contexts:
            return {}
        return self.predictor.forecast_batch(contexts, pred_len=cfg.pred_len, y_timestamps=stamps,
                                             sample_count=cfg.sample_count, T=cfg.T,
                                             top_k=cfg.top_k, top_p=cfg.top_p, seed=seeds)

    def decide(self, t: pd.Timestamp, now_ms: int | None = None) -> float | None:
        """Forecast, score, size and record candle time t in one transaction (equity back).

        ``now_ms`` (exchange time; default: now) at or after the close of the candle after t
        makes the orders ``stale``: recorded, not sent.
        """
        cfg, ts = self.config, to_ms(t)
        now_ms = self.exchange_ms() if now_ms is None else now_ms
        missing: dict[str, str] = {}
        forecasts = self._forecasts(t, missing)
        if not forecasts:
            logger.warning("no symbol has enough candles at %s; nothing decided", t)
            with self.ledger.transaction() as db:
                for symbol, reason in missing.items():
                    Ledger.put_skipped(db, symbol, cfg.timeframe, ts, reason)
            return None
        scores = score_forecasts(forecasts, cfg.scorers)
        weights = target_positions(scores, cfg)
        stale_at = ts + 2 * self.step_ms  # the next candle's close
        stale = None if now_ms < stale_at else (
            f"stale: decided at {from_ms(now_ms)}, after the next candle closed at "
            f"{from_ms(stale_at)}; not sent")
        with self.ledger.transaction() as db:
            if any(self.ledger.handled(s, cfg.timeframe, ts) for s in forecasts):
                logger.info("candle %s already decided; skipped", t)
                return None
            for symbol, reason in missing.items():
                Ledger.put_skipped(db, symbol, cfg.timeframe, ts, reason)
            bars = {s: self.frames[s].loc[t] for s in forecasts}
            for symbol, bar in bars.items():
                self.broker.on_candle(db, symbol, ts, bar)
                Ledger.put_candle(db, symbol, cfg.timeframe, ts, bar)
            marks = {s: float(bar["close"]) for s, bar in bars.items()}
            cash = float(db.execute("SELECT cash FROM account WHERE id = 0").fetchone()[0])
            held = {r[0]: r[1] for r in db.execute("SELECT symbol, qty FROM positions")}
            equity = cash + sum(q * marks.get(s, 0.0) for s, q in held.items())
            weights, kept = self._hold(weights, scores, held, marks, equity)
            for symbol, fc in forecasts.items():
                price = marks[symbol]
                target_qty = (held.get(symbol, 0.0) if symbol in kept
                              else float(weights[symbol]) * equity / price)
                delta = order_size(target_qty, held.get(symbol, 0.0), price, equity, cfg)
                Ledger.put_decision(db, symbol, cfg.timeframe, ts, close=price,
                                    weight=float(weights[symbol]), qty=target_qty,
                                    forecast=forecast_summary(fc, per_step=True),
                                    scores=scores.loc[symbol])
                if not delta:
                    continue
                order = OrderRequest(client_order_id(symbol, cfg.timeframe, ts, bot=self.bot_id),
                                     symbol, cfg.timeframe, ts, delta, price)
                if stale:
                    Ledger.put_order(db, order.client_id, symbol, cfg.timeframe, ts, delta,
                                     price, "stale", note=stale)
                else:
                    self.broker.place(db, order)
            equity = Ledger.put_equity(db, cfg.timeframe, ts, marks)
        self.broker.after_commit(self.ledger, now_ms=self.exchange_ms())
        return equity

    def _hold(self, sized: pd.Series, scores: pd.DataFrame, held: dict[str, float],
              marks: dict[str, float], equity: float) -> tuple[pd.Series, set[str]]:
        """This candle's targets under the hold rule (``config.hold_bands()``; off: ``sized``
        as it is) and the symbols whose position is kept as held."""
        bands = self.config.hold_bands()
        if bands is None or equity <= 0:
            return sized, set()
        now = pd.Series({s: held.get(s, 0.0) * marks[s] / equity for s in sized.index})
        targets, actions = hold_targets(sized, now, scores[self.config.score].astype(float),
                                        entry=bands[0], exit=bands[1], gross=self.config.gross)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("hold rule: %s", ", ".join(f"{s} {a} {now[s]:.3f}->{targets[s]:.3f}"
                                                    for s, a in actions.items()))
        return targets, set(actions.index[actions == "hold"])

    # -- cycles --------------------------------------------------------------------------

    def cycle(self) -> CycleResult:
        """Fetch what is new, wait briefly for late candles, decide every decidable time."""
        now_ms = self.exchange_ms()
        self.cycle_candle = self._latest_closed(now_ms)
        with self.candle_deadline(now_ms):
            return self._cycle()

    def _cycle(self) -> CycleResult:
        result = CycleResult()
        # Orders a crash or a failed send left pending go out (or are found at the exchange,
        # or turn stale) before anything new is sized from the ledger's positions.
        self.broker.after_commit(self.ledger, now_ms=self.exchange_ms())
        deadline = self.clock() + self.config.late_timeout_s
        while True:
            now_ms = self.sync_clock()
            self._refresh(now_ms)
            todo, behind = self.pending_times()
            expected = self._latest_closed(now_ms)
            late = [s for s in behind
                    if not len(self.frames[s]) or self.frames[s].index[-1] < expected]
            if not late or self.clock() >= deadline or self.stop_event.is_set():
                break
            logger.info("late candle %s for %s; polling again in %.1fs", expected, late,
                        self.config.late_poll_s)
            self.sleep(self.config.late_poll_s)
        result.waiting = late
        for t in todo:
            if self.stop_event.is_set():
                break
            equity = self.decide(t, self.exchange_ms())
            if equity is not None:
                result.decided.append(t)
                result.equity = equity
                result.latency_s.append(self.clock() - (t + self.step).timestamp())
        return result

    def next_wake(self) -> float:
        """Epoch seconds of the next candle close plus the grace period."""
        step, now = self.step.total_seconds(), self.exchange_ms() / 1000
        wake = (math.floor(now / step) + 1) * step + self.config.grace_s  # exchange time
        return wake - self.offset_ms / 1000

    def run(self, *, once: bool = False, max_cycles: int | None = None) -> int:
        """Cycle at every candle close until stopped; returns the number of cycles run."""
        cycles = 0
        while not self.stop_event.is_set():
            started = self.clock()
            try:
                result = self.cycle()
            except FatalExchangeError:
                raise  # what no retry fixes: one line, the loop stops
            except Exception as err:  # keep trading through anything the retries did not absorb
                result = CycleResult(skipped=self.skip_unhandled(
                    f"{type(err).__name__}: {short(err, 240)}"))
                if once:
                    raise
                log = logger.error if classify(err) is not None else logger.exception
                log("cycle failed: %s: %s; %d candle row(s) recorded as skipped; next try at "
                    "the next candle close", type(err).__name__, short(err), result.skipped)
            cycles += 1
            self.heartbeat(result, self.clock() - started)
            if once or (max_cycles is not None and cycles >= max_cycles):
                break
            self.sleep(self.next_wake() - self.clock())
        return cycles

    def heartbeat(self, result: CycleResult, elapsed: float) -> None:
        positions = {s: round(p.qty, 8) for s, p in self.ledger.positions().items() if p.qty}
        logger.info("heartbeat exchange=%s timeframe=%s decided=%d skipped=%d last=%s "
                    "waiting=%s equity=%s positions=%s latency_s=%s cycle_s=%.3f",
                    self.config.exchange, self.config.timeframe, len(result.decided),
                    result.skipped,
                    result.decided[-1] if result.decided else "-", ",".join(result.waiting) or "-",
                    f"{result.equity:.2f}" if result.equity is not None else "-", positions,
                    f"{max(result.latency_s):.3f}" if result.latency_s else "-", elapsed)

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM finish the current decision, then stop (main thread only)."""
        def stop(signum: int, _frame: Any) -> None:
            logger.info("signal %s: stopping after the current step", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
