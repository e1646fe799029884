"""Kronos inside backtrader: a top-k strategy that forecasts bar by bar, with a chart.

Runs offline with the embedded demo model on a synthetic daily panel:

    python examples/backtrader_strategy.py --out backtrader_out

``KronosStrategy`` forecasts every data's last ``--lookback`` bars every ``--rebalance``
bars (live inference, one batch across datas), holds the ``--topk`` best by expected return,
and trades at the next open with 10 bp fees. ``--mode precomputed`` scores the panel
first with ``score_panel`` and feeds the scores in as signal lines instead: the same scores,
so the same trades, without the model in the loop. It prints backtrader's analyzers and
writes backtrader's chart as a PNG (no display needed).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from kronos_quant.adapters.backtrader import plot
from kronos_quant.strategies.backtrader import run

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS
from kronos_quant.data import load_panel, synthetic_panel
from kronos_quant.signals import score_panel


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", default=None, help="bars file/folder (default: synthetic)")
    parser.add_argument("--instruments", type=int, default=6, help="synthetic panel size")
    parser.add_argument("--bars", type=int, default=160, help="synthetic panel length")
    parser.add_argument("--model", default=str(ASSETS / "model"))
    parser.add_argument("--tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--mode", choices=["live", "precomputed"], default="live")
    parser.add_argument("--lookback", type=int, default=60)
    parser.add_argument("--pred-len", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rebalance", type=int, default=5, help="bars between rebalances")
    parser.add_argument("--topk", type=int, default=2)
    parser.add_argument("--fees", type=float, default=0.001, help="per trade, 0.001 = 10 bp")
    parser.add_argument("--out", default="backtrader_out")
    args = parser.parse_args(argv)

    panel = (load_panel(args.panel) if args.panel else
             synthetic_panel(args.instruments, args.bars, freq="D", seed=1, predictable=0.3))
    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device="cpu")
    model = dict(lookback=args.lookback, pred_len=args.pred_len, sample_count=args.samples,
                 seed=0)
    trading = dict(topk=args.topk, fees=args.fees)
    if args.mode == "live":  # a forecast every --rebalance bars
        result = run(panel, predictor=predictor, scorer="expected_return",
                     rebalance=args.rebalance, **model, **trading)
    else:  # scores every --rebalance bars, each traded (rebalance=1: every score date)
        scores = score_panel(predictor, panel, freq=args.rebalance, scorers=["expected_return"],
                             **model)
        result = run(panel, scores=scores, **trading)

    strategy = result.result
    print(f"final value {result.cerebro.broker.getvalue():,.2f}; "
          f"total return {(1 + result.returns).prod() - 1:+.2%}")
    print(f"Sharpe (daily, annualised): {strategy.analyzers.sharpe.get_analysis()['sharperatio']}")
    print(f"max drawdown: {strategy.analyzers.drawdown.get_analysis()['max']['drawdown']:.2f}%")
    trades = strategy.analyzers.trades.get_analysis()
    print(f"closed trades: {trades.get('total', {}).get('closed', 0)}; "
          f"orders filled: {len(strategy.fills)}")
    [chart] = plot(result.cerebro, Path(args.out) / "backtrader.png")
    print(f"wrote {chart}")
    return chart


if __name__ == "__main__":
    main()
