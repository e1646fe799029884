"""``kronos-quant live`` (forecast and paper/live trade closed candles) and ``live-report``.

``live`` runs :class:`kronos_quant.strategies.live.LiveLoop` on one exchange and timeframe for
one or more symbols, keeping every decision in ``--state DIR`` (SQLite ledger + Parquet
candles): stop it any way you like and start it again with the same command. Orders go to a
paper broker unless ``--live-orders`` is given; then API keys are read from
``<EXCHANGE>_API_KEY`` / ``_API_SECRET`` (/ ``_API_PASSWORD``) and nothing else.
``live-report`` prints equity, PnL and hit rate from a state folder and writes the QuantStats
tear sheet. See docs/live.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..execution import DEFAULT_EXECUTION
from ..inputs import MIN_CONTEXT
from .options import add_model_args, int_option, non_negative

logger = logging.getLogger(__name__)


def _symbols(values: list[str]) -> list[str]:
    out = [s.strip() for v in values for s in v.split(",") if s.strip()]
    if not out:
        raise ValueError("--symbol is required (e.g. --symbol BTC/USDT, repeatable)")
    return out


def _predictor(args: argparse.Namespace):
    from ..assets import demo_predictor, embedded_demo

    assets = embedded_demo() if args.model is None and args.tokenizer is None else None
    predictor, label = demo_predictor(args.model, args.tokenizer, device=args.device,
                                      max_context=args.max_context, assets=assets)
    logger.info("model: %s", label)
    return predictor


def build_loop(args: argparse.Namespace):
    """The loop a ``live`` command line describes (also used by tests and the benchmark)."""
    from ..adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange
    from ..strategies.brokers import (
        CcxtBroker,
        PaperBroker,
        credential_vars,
        credentials_from_env,
    )
    from ..strategies.ledger import Ledger
    from ..strategies.live import LiveConfig, LiveLoop

    config = LiveConfig(exchange=args.exchange, symbols=_symbols(args.symbol),
                        timeframe=args.timeframe, lookback=args.lookback, pred_len=args.pred_len,
                        sample_count=args.samples, T=args.T, top_p=args.top_p, seed=args.seed,
                        sizing=args.sizing, score=args.score, threshold=args.threshold,
                        dead_band=args.dead_band, min_trade_weight=args.min_trade_weight,
                        entry_z=args.entry_z, exit_z=args.exit_z,
                        max_weight=args.max_weight, gross=args.gross,
                        long_short=args.long_short, initial_cash=args.cash,
                        grace_s=args.grace, late_timeout_s=args.late_timeout,
                        retry_margin_s=args.retry_margin,
                        late_poll_s=args.late_poll)
    retry = RetryPolicy(attempts=args.retries, base_delay=args.retry_delay,
                        max_delay=max(args.retry_delay, 60.0 if args.retry_delay >= 1 else 1.0))
    state = Path(args.state)
    feed = CcxtFeed(make_exchange(args.exchange, api_host=args.api_host,
                                  timeout_ms=args.timeout_ms), retry=retry)
    if args.live_orders:
        keyed = make_exchange(args.exchange, api_host=args.api_host, timeout_ms=args.timeout_ms,
                              config=credentials_from_env(args.exchange))
        names = credential_vars(args.exchange)
        broker = CcxtBroker(keyed, retry=retry, key_vars=[names["apiKey"], names["secret"]])
    else:
        broker = PaperBroker(fee_rate=args.fee, slippage=args.slippage, fill=args.fill)
    return LiveLoop(config, predictor=_predictor(args), feed=feed,
                    store=CandleStore(state / "candles"), ledger=Ledger(state), broker=broker)


def _live(args: argparse.Namespace) -> int:
    from ..adapters.ccxt_errors import FatalExchangeError

    try:
        loop = build_loop(args)
        loop.install_signal_handlers()
        logger.info("live: %s %s %s, broker %s, state %s, bot id %s", args.exchange, ",".join(
            loop.config.symbols), args.timeframe, loop.broker.name, args.state, loop.bot_id)
        try:
            loop.run(once=args.once, max_cycles=args.max_cycles)
        finally:
            loop.ledger.close()
    except FatalExchangeError as err:  # what no retry fixes: one line, exit 3
        print(f"kronos-quant live: stopped: {err}", file=sys.stderr)
        return 3
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..data import periods_per_year
    from ..strategies.ledger import Ledger
    from ..strategies.live_report import live_report, write_tearsheet
    from ..strategies.replay import timeframe_step

    state = Path(args.state)
    if not (state / Ledger.FILE).is_file():
        raise FileNotFoundError(f"no ledger at {state / Ledger.FILE}; run `kronos-quant live "
                                "--state ...` first")
    with Ledger(state) as ledger:
        meta = ledger.meta()
        report = live_report(ledger)
    try:  # the result metrics need the bar length (a 24/7 market)
        ppy = periods_per_year(bar_seconds=timeframe_step(meta["timeframe"]).total_seconds())
    except ValueError:
        ppy = None
    for line in report.lines(periods_per_year=ppy):
        print(line)
    if args.no_tearsheet:
        return 0
    from ..adapters.ccxt import make_exchange

    seconds = make_exchange(meta["exchange"]).parse_timeframe(meta["timeframe"])
    out = Path(args.out) if args.out else state / "tearsheet.html"
    try:
        path = write_tearsheet(report, out, timeframe_seconds=seconds,
                               title=f"kronos-quant live {meta['exchange']} {meta['timeframe']}")
    except ValueError as err:
        print(f"tear sheet skipped: {err}")
        return 0
    print(f"wrote tear sheet: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("live", help="forecast closed candles and paper/live trade them",
                              description=__doc__)
    p.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    p.add_argument("--symbol", action="append", default=[], help="market, e.g. BTC/USDT "
                   "(repeat or comma-separate for several)")
    p.add_argument("--timeframe", required=True, help="exchange timeframe, e.g. 1m, 1h, 1d")
    p.add_argument("--state", required=True, help="state folder (ledger + candle store)")
    add_model_args(p)
    p.add_argument("--api-host", default=None,
                   help="replace the host of every API URL (regional host, proxy, local mock)")
    p.add_argument("--once", action="store_true", help="decide what has closed, then exit")
    p.add_argument("--max-cycles", type=int_option(1), default=None, help="stop after N cycles")
    g = p.add_argument_group("forecast")
    g.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=120, help="context candles")
    g.add_argument("--pred-len", type=int_option(1), default=1, help="candles forecast")
    g.add_argument("--samples", type=int_option(1), default=32, help="sample paths")
    g.add_argument("--T", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--seed", type=int_option(0), default=0)
    g = p.add_argument_group("sizing")
    g.add_argument("--sizing", choices=("prob", "threshold"), default="prob",
                   help="prob: weight ∝ 2·P(up) − 1; threshold: equal weight above --threshold")
    g.add_argument("--score", default=None,
                   help="scorer used for sizing (default prob_up / expected_return)")
    g.add_argument("--threshold", type=float, default=0.0)
    g.add_argument("--dead-band", type=float, default=0.05, help="ignore |P(up) − 0.5| ≤ this")
    g.add_argument("--min-trade-weight", type=float, default=0.0,
                   help="no-trade band: skip orders changing a position by less than this "
                   "fraction of equity (e.g. 0.05; exits included)")
    g.add_argument("--entry-z", type=non_negative, default=0.0, metavar="Z",
                   help="hold band (--sizing prob): enter or resize only when |P(up) − 0.5| ≥ "
                   "Z standard errors of P(up), √(0.25 / --samples); inside the band the "
                   "position is held, not closed (0, the default: off; e.g. 2)")
    g.add_argument("--exit-z", type=non_negative, default=None, metavar="Z",
                   help="leave a position only when P(up) is Z standard errors on the other "
                   "side of 0.5 (default: --entry-z)")
    g.add_argument("--max-weight", type=float, default=None, help="cap per symbol")
    g.add_argument("--gross", type=float, default=1.0, help="total exposure")
    g.add_argument("--long-short", action="store_true", help="allow short targets")
    g = p.add_argument_group("broker")
    g.add_argument("--cash", type=float, default=10_000.0, help="paper starting cash")
    g.add_argument("--fee", type=float, default=0.001, help="paper fee rate")
    g.add_argument("--slippage", type=float, default=0.0005, help="paper slippage (fraction)")
    g.add_argument("--fill", choices=("next_open", "last"), default=DEFAULT_EXECUTION,
                   help="paper fill price")
    g.add_argument("--live-orders", action="store_true",
                   help="send real orders (keys from <EXCHANGE>_API_KEY/_API_SECRET env vars)")
    g = p.add_argument_group("timing and retries")
    g.add_argument("--grace", type=float, default=2.0, help="seconds after a close to wake")
    g.add_argument("--late-timeout", type=float, default=30.0,
                   help="seconds to wait for a late candle before moving on")
    g.add_argument("--late-poll", type=float, default=2.0, help="seconds between late polls")
    g.add_argument("--retries", type=int_option(1), default=6,
                   help="attempts per request outside a cycle (inside one, requests are "
                   "retried until --retry-margin seconds before the next candle closes)")
    g.add_argument("--retry-margin", type=float, default=1.0,
                   help="stop retrying this many seconds before the next close")
    g.add_argument("--retry-delay", type=float, default=1.0, help="first backoff (seconds)")
    g.add_argument("--timeout-ms", type=int_option(1), default=10_000, help="HTTP timeout")
    p.set_defaults(func=_live)

    r = subparsers.add_parser("live-report", help="equity, PnL, hit rate and tear sheet of a "
                              "live state folder")
    r.add_argument("--state", required=True, help="state folder written by `kronos-quant live`")
    r.add_argument("--out", default=None, help="tear sheet path (default: STATE/tearsheet.html)")
    r.add_argument("--no-tearsheet", action="store_true", help="print the summary only")
    r.set_defaults(func=_report)
