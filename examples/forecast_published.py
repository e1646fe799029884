"""Forecast a CSV of bars with a published Kronos checkpoint and save a fan chart.

Needs access to the Hugging Face Hub (or a local copy of the checkpoints):

    python examples/forecast_published.py bars.csv --model NeoQuasar/Kronos-small \
        --tokenizer NeoQuasar/Kronos-Tokenizer-base --lookback 400 --pred-len 120

The CSV needs a ``timestamps`` (or ``date``/``datetime``) column and open, high, low, close
[, volume, amount].
"""
from __future__ import annotations

import argparse

import pandas as pd

from kronos_quant import KronosPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--model", default="NeoQuasar/Kronos-small")
    parser.add_argument("--tokenizer", default="NeoQuasar/Kronos-Tokenizer-base")
    parser.add_argument("--max-context", type=int, default=None,
                        help="default: the context the checkpoint was trained on")
    parser.add_argument("--lookback", type=int, default=400)
    parser.add_argument("--pred-len", type=int, default=120)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--out", default="fan.png")
    args = parser.parse_args()

    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer,
                                                max_context=args.max_context)
    bars = pd.read_csv(args.csv)
    context = bars.iloc[-args.lookback:]
    fc = predictor.forecast(context, pred_len=args.pred_len, sample_count=args.samples, seed=0,
                            verbose=True)
    fc.plot(args.out)
    last = fc.last["close"]
    horizon = fc.column_paths("close")[:, -1]
    print(fc)
    print(f"last close {last:.4f}; at the horizon: median {pd.Series(horizon).median():.4f}, "
          f"P(up) {(horizon > last).mean():.2f}; fan chart → {args.out}")


if __name__ == "__main__":
    main()
