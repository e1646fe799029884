"""Kronos scores → weekly top-k portfolio in vectorbt → QuantStats tear sheet.

Runs offline with the embedded demo model on a synthetic daily panel:

    python examples/vectorbt_topk.py --out vectorbt_topk_out

It scores the universe walk-forward, trades the top ``--topk`` names at the next open with
10 bp fees through ``vectorbt.Portfolio.from_orders``, prints vectorbt's stats, and writes a
tear sheet whose last section says how good the signal was against simple baselines. Swap in
your own bars with ``--panel bars.csv`` and a published model with ``--model
NeoQuasar/Kronos-small --tokenizer NeoQuasar/Kronos-Tokenizer-base``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from kronos_quant.adapters.quantstats import evaluate_signal, tearsheet
from kronos_quant.adapters.vectorbt import backtest

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS
from kronos_quant.data import load_panel, synthetic_panel
from kronos_quant.signals import score_panel


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", default=None, help="bars file/folder (default: synthetic)")
    parser.add_argument("--instruments", type=int, default=12, help="synthetic panel size")
    parser.add_argument("--bars", type=int, default=260, help="synthetic panel length")
    parser.add_argument("--model", default=str(ASSETS / "model"))
    parser.add_argument("--tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--lookback", type=int, default=60)
    parser.add_argument("--pred-len", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--freq", default="W", help="rebalance: every k-th bar (int) or W, ME, …")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--fees", type=float, default=0.001)
    parser.add_argument("--out", default="vectorbt_topk_out")
    args = parser.parse_args(argv)

    panel = (load_panel(args.panel) if args.panel else
             synthetic_panel(args.instruments, args.bars, freq="D", seed=1, predictable=0.3))
    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device="cpu")
    freq = int(args.freq) if args.freq.isdigit() else args.freq
    scores = score_panel(predictor, panel, lookback=args.lookback, pred_len=args.pred_len,
                         sample_count=args.samples, freq=freq, seed=0,
                         scorers=["expected_return"])

    portfolio = backtest(scores, panel, topk=args.topk, fees=args.fees)  # a vbt.Portfolio
    print(portfolio.stats())

    out = Path(args.out)
    report = evaluate_signal(scores, panel, horizon=args.pred_len)
    path = tearsheet(portfolio, title=f"Kronos top-{args.topk} (vectorbt, next open)",
                     output=out / "tearsheet.html", signal_report=report)
    print(report.evaluation.table())
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
