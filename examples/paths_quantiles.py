"""Every Monte Carlo path, quantile bands and scores from one forecast.

Runs offline with the embedded demo model on its bundled daily series::

    python examples/paths_quantiles.py --samples 64 --out paths_out

A ``Forecast`` keeps all sampled paths (``fc.paths``: samples × bars × 6 columns in price
units) instead of averaging them away; means, medians, quantiles, the long table and the
signal layer's scores are all views of those paths.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS
from kronos_quant.signals import describe_scorers, score_forecast


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ASSETS / "model"))
    parser.add_argument("--tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--lookback", type=int, default=120)
    parser.add_argument("--pred-len", type=int, default=20)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", default="paths_out")
    args = parser.parse_args(argv)

    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device="cpu")
    bars = pd.read_csv(ASSETS / "series.csv", index_col="timestamps", parse_dates=True)
    fc = predictor.forecast(bars.iloc[-args.lookback:], pred_len=args.pred_len,
                            sample_count=args.samples, seed=0, name="MSFT")

    print(fc, fc.paths.shape)                      # (samples, pred_len, 6)
    close = fc.column_paths("close")               # (samples, pred_len)
    last = fc.last["close"]
    print(f"P(close at horizon > last close {last:.2f}): {(close[:, -1] > last).mean():.2f}")
    print(f"P(any close below {0.95 * last:.2f} on the way): "
          f"{(close.min(axis=1) < 0.95 * last).mean():.2f}")   # path-dependent: needs paths
    bands = fc.quantile([0.05, 0.5, 0.95]).xs("close", axis=1, level="column")
    print(bands.round(3).tail())
    scores = score_forecast(fc)
    formulas = describe_scorers()
    for name, value in scores.items():
        print(f"{name:>20} {value:+.5f}  {formulas.get(name, '')}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fc.to_frame().to_csv(out / "paths.csv", index=False)  # long: sample, timestamp, columns
    np.save(out / "paths.npy", fc.paths)
    print(f"wrote {out / 'paths.csv'} and {out / 'paths.npy'}")
    return out / "paths.csv"


if __name__ == "__main__":
    main()
