"""Paper-trade Kronos forecasts on 1-minute crypto candles, offline, then report.

The exchange is the local Binance-format mock from ``tests/mock_exchange.py`` (127.0.0.1 only,
deterministic candles), reached by the real ccxt client with its API host rewritten, exactly as
``kronos-quant live --api-host`` does. Its clock is stepped one candle at a time, so an hour of
trading takes seconds.

Two bands keep the forecasts' noise from churning fees (docs/live.md, "Holding through
noise"). P(up) from S paths has a standard error of sqrt(0.25 / S), 0.125 with the 16 paths
here, so a weak reading is not a reason to trade:

* the hold band (``--entry-z 2 --exit-z 3.5``): enter, or resize, only when |P(up) - 0.5| is
  at least 2 standard errors; inside the band hold what is held (not "go flat"); leave a long
  only when P(up) is 3.5 standard errors below 0.5 (with 16 paths: none of them up);
* the no-trade band (``--min-trade-weight 0.2``): a resize under 20% of equity is not sent.

``--entry-z 0 --exit-z 0`` turns the hold band off (the loop's default) to see the churn it
removes.
Against a real exchange, use the CLI instead::

    kronos-quant live --exchange binance --symbol BTC/USDT --timeframe 1h --state runs/btc
    kronos-quant live-report --state runs/btc

    python examples/live_paper.py --candles 60 --out live_paper_out
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, make_exchange  # noqa: E402
from kronos_quant.strategies.brokers import PaperBroker  # noqa: E402
from kronos_quant.strategies.ledger import Ledger  # noqa: E402
from kronos_quant.strategies.live import LiveConfig, LiveLoop  # noqa: E402
from kronos_quant.strategies.live_report import live_report, write_tearsheet  # noqa: E402
from mock_exchange import ManualClock, MockExchange, MockServer  # noqa: E402

from kronos_quant.assets import demo_predictor, embedded_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candles", type=int, default=60, help="candles to trade")
    parser.add_argument("--samples", type=int, default=16, help="paths per forecast")
    parser.add_argument("--out", default="live_paper_out", help="state folder (fresh runs only)")
    parser.add_argument("--dead-band", type=float, default=0.05,
                        help="ignore |P(up) - 0.5| <= this (the live loop's default)")
    parser.add_argument("--min-trade-weight", type=float, default=0.2,
                        help="no-trade band: orders changing a position by less than this "
                        "fraction of equity are not sent (0 trades every wiggle of the forecast)")
    parser.add_argument("--entry-z", type=float, default=2.0,
                        help="hold band: enter or resize only when |P(up) - 0.5| >= this many "
                        "standard errors of P(up), sqrt(0.25 / samples) (0 with --exit-z 0: "
                        "the hold rule off)")
    parser.add_argument("--exit-z", type=float, default=3.5,
                        help="leave a position only when P(up) is this many standard errors "
                        "on the other side of 0.5 (with 16 paths, 3.5: every path down)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    state = Path(args.out)
    predictor, label = demo_predictor(assets=embedded_demo())
    clock = ManualClock(1_700_000_000_000 // 60_000 * 60_000 + 2_000)
    with MockServer(MockExchange(clock_ms=clock.ms)) as server:
        config = LiveConfig(exchange="binance", symbols=["BTC/USDT", "ETH/USDT"],
                            timeframe="1m", lookback=120, sample_count=args.samples,
                            max_weight=0.6, late_timeout_s=0.0,
                            seed=args.seed, dead_band=args.dead_band,
                            min_trade_weight=args.min_trade_weight, entry_z=args.entry_z,
                            exit_z=args.exit_z)
        feed = CcxtFeed(make_exchange("binance", api_host=server.url))
        with Ledger(state) as ledger:
            loop = LiveLoop(config, predictor=predictor, feed=feed,
                            store=CandleStore(state / "candles"), ledger=ledger,
                            broker=PaperBroker(fee_rate=0.001, slippage=0.0005), clock=clock,
                            sleep=clock.sleep)
            for _ in range(args.candles):
                loop.run(once=True)
                clock.advance(60)
            report = live_report(ledger)
    print(f"model: {label}")
    print("\n".join(report.lines()))
    path = write_tearsheet(report, state / "tearsheet.html", timeframe_seconds=60,
                           title="Kronos demo model, paper, 1m mock candles")
    print(f"wrote tear sheet: {path}")


if __name__ == "__main__":
    main()
