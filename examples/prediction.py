"""Forecast one series and compare it with what happened (the reference's prediction example).

Runs offline with the embedded demo model on its bundled daily series (MSFT, adjusted):
the last ``--pred-len`` bars are held back as the truth, the model sees the ``--lookback``
bars before them::

    python examples/prediction.py --out prediction_out
    python examples/prediction.py --no-volume      # the reference's "without volume" example

``predictor.predict`` is the upstream-compatible call (mean path as a DataFrame, same
arguments as the reference); ``predictor.forecast`` keeps every sampled path. Without volume
and amount columns the model gets zeros for both, as upstream. Swap in your bars with
``--csv bars.csv`` and a published model with ``--model NeoQuasar/Kronos-small --tokenizer
NeoQuasar/Kronos-Tokenizer-base``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS, embedded_demo


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(ASSETS / "series.csv"))
    parser.add_argument("--model", default=str(ASSETS / "model"))
    parser.add_argument("--tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--lookback", type=int, default=120)
    parser.add_argument("--pred-len", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--no-volume", action="store_true", help="drop volume and amount")
    parser.add_argument("--out", default="prediction_out")
    args = parser.parse_args(argv)

    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device="cpu")
    bars = pd.read_csv(args.csv, parse_dates=["timestamps"])
    columns = ["open", "high", "low", "close"] + ([] if args.no_volume else ["volume"])
    context = bars.iloc[-(args.lookback + args.pred_len):-args.pred_len]
    truth = bars.iloc[-args.pred_len:]

    # Upstream-compatible: x/y timestamps given explicitly, the mean of sample_count paths.
    mean = predictor.predict(context[columns], context["timestamps"], truth["timestamps"],
                             pred_len=args.pred_len, T=1.0, top_p=0.9,
                             sample_count=args.samples, verbose=False)
    print(mean.head())

    # Every path: the same forecast as a distribution (seeded, so reproducible).
    fc = predictor.forecast(context[columns + ["timestamps"]], pred_len=args.pred_len,
                            y_timestamp=truth["timestamps"], sample_count=args.samples, seed=0,
                            name="MSFT" + (" (no volume)" if args.no_volume else ""))
    error = (fc.median()["close"].to_numpy() - truth["close"].to_numpy())
    band = fc.quantile([0.1, 0.9])
    inside = ((truth["close"].to_numpy() >= band[(0.1, "close")].to_numpy())
              & (truth["close"].to_numpy() <= band[(0.9, "close")].to_numpy())).mean()
    print(f"median close MAE {abs(error).mean():.4f}; truth inside the 10–90% band "
          f"{inside:.0%} of {args.pred_len} bars")
    label = embedded_demo().label if args.model == str(ASSETS / "model") else args.model
    fig = fc.plot(None, model_label=label)
    ax = fig.axes[0]  # bars sit on a positional axis: history first, then the forecast
    start = min(120, len(context))
    ax.plot(range(start, start + args.pred_len), truth["close"].to_numpy(), color="tab:red",
            lw=1.4, label="what happened")
    ax.legend(loc="upper left", fontsize=8)
    path = Path(args.out) / "prediction.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
