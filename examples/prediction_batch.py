"""Forecast several series in one batch (the reference's batch prediction example).

Runs offline with the embedded demo model on the bundled universe (AAPL, GOOG, IBM, MSFT,
daily)::

    python examples/prediction_batch.py --samples 16

``predict_batch`` is the upstream-compatible call (lists in, a list of mean-path DataFrames
out); ``forecast_batch`` takes a dict of frames (lengths may differ) and returns a
``Forecast`` per name with every path. One seed per series keeps each series' paths
independent of its batch-mates.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

import pandas as pd

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS, load_universe
from kronos_quant.calendars import future_timestamps
from kronos_quant.data import panel_to_frames


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ASSETS / "model"))
    parser.add_argument("--tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--lookback", type=int, default=120)
    parser.add_argument("--pred-len", type=int, default=10)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args(argv)

    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device="cpu")
    frames = {name: frame.iloc[-args.lookback:]
              for name, frame in panel_to_frames(load_universe()).items()}

    # Upstream-compatible: parallel lists of frames, past and future timestamps (here the
    # business days after each context; calendar="XNYS" would follow the exchange).
    names = list(frames)
    future = [future_timestamps(frames[n].index, args.pred_len) for n in names]
    means = predictor.predict_batch([frames[n] for n in names],
                                    [frames[n].index for n in names], future,
                                    pred_len=args.pred_len, sample_count=args.samples,
                                    verbose=False)
    for name, mean in zip(names, means, strict=True):
        print(f"{name}: mean close path {[round(float(v), 2) for v in mean['close'][:5]]} …")

    # Every path of every series, seeded per series.
    forecasts = predictor.forecast_batch(frames, pred_len=args.pred_len,
                                         sample_count=args.samples,
                                         seed=list(range(len(frames))))
    table = pd.DataFrame({
        name: {"last close": fc.last["close"],
               "median at horizon": float(fc.median()["close"].iloc[-1]),
               "P(up)": float((fc.column_paths("close")[:, -1] > fc.last["close"]).mean())}
        for name, fc in forecasts.items()}).T
    print(table.round(4))
    return table


if __name__ == "__main__":
    main()
