"""Paper-trade Kronos forecasts over recorded candles: the live loop, replayed offline.

The live loop (``kronos_quant.strategies.live``: closed candle → forecast paths → scores →
target position → paper broker → SQLite ledger) runs exactly as ``kronos-quant live`` does,
but its feed serves recorded candles, each only once it has closed, on a replay clock. By
default the candles are the last daily bars of two stocks of the bundled universe::

    python examples/live_replay.py --candles 30 --out live_replay_out
    python examples/live_replay.py --csv btc_eth_1h.csv --timeframe 1h --candles 200

``--csv`` takes a long CSV (datetime, instrument/symbol, open, high, low, close, volume).
It prints the ledger's report (equity, PnL, hit rate) and writes the QuantStats tear sheet.
Against a real exchange, use ``kronos-quant live`` (docs/live.md).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from kronos_quant.strategies.live import LiveConfig
from kronos_quant.strategies.live_report import write_tearsheet
from kronos_quant.strategies.replay import replay_live

from kronos_quant.assets import UNIVERSE, demo_predictor, embedded_demo
from kronos_quant.data import load_panel, panel_to_frames, periods_per_year


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(UNIVERSE), help="long CSV of recorded candles")
    parser.add_argument("--symbols", default="AAPL,MSFT", help="comma-separated symbols")
    parser.add_argument("--timeframe", default="1d", help="the candles' spacing: 1m, 1h, 1d, …")
    parser.add_argument("--candles", type=int, default=30, help="candles to trade (the last N)")
    parser.add_argument("--samples", type=int, default=16, help="paths per forecast")
    parser.add_argument("--sizing", choices=["prob", "threshold"], default="prob")
    parser.add_argument("--out", default="live_replay_out", help="a new state folder")
    args = parser.parse_args(argv)

    symbols = args.symbols.split(",")
    frames = {s: f for s, f in panel_to_frames(load_panel(args.csv)).items() if s in symbols}
    predictor, label = demo_predictor(assets=embedded_demo())
    config = LiveConfig(exchange="replay", symbols=symbols, timeframe=args.timeframe,
                        lookback=120, sample_count=args.samples, sizing=args.sizing,
                        late_timeout_s=0.0)
    times = frames[symbols[0]].index[-args.candles:]
    out = Path(args.out)
    report = replay_live(frames, config, predictor=predictor, state=out / "state", times=times)
    print(f"model: {label}")
    print("\n".join(report.lines()))
    # Annualised from the replayed stamps: weekday daily bars are an equity market.
    path = write_tearsheet(report, out / "tearsheet.html",
                           periods=periods_per_year(report.equity.index),
                           title=f"Kronos paper trading, replayed {args.timeframe}")
    print(f"wrote tear sheet: {path}")
    return path


if __name__ == "__main__":
    main()
