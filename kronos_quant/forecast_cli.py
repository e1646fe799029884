"""``kronos-quant forecast``: one series (CSV or Parquet) → fan chart, paths, quantiles, summary.

The single-series job most users try first::

    kronos-quant forecast --input bars.csv --pred-len 20 --samples 32 --out forecast_out

reads the bars (a ``timestamps``/``date``/``datetime`` column or a datetime index; open,
high, low, close, optionally volume and amount), forecasts the next ``--pred-len`` bars with
``--samples`` Monte Carlo paths from the last ``--lookback`` bars, and writes into ``--out``:
``fan.png`` (history, median and bands, the model named on the chart), ``paths.csv`` (every
path, long format), ``quantiles.csv`` (per future bar: mean and quantiles of each column) and
``summary.json`` (also printed). Without ``--model``/``--tokenizer`` it uses the embedded demo
model (offline; small, and no better than a random walk — see its model card).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .forecast import Forecast
from .inputs import MIN_CONTEXT, int_option

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
INSTRUMENT_COLUMNS: tuple[str, ...] = ("instrument", "symbol", "ticker", "code")


def read_series(path: str | Path, *, instrument: str | None = None) -> pd.DataFrame:
    """One series of bars from a CSV or Parquet file (``instrument`` picks one of several)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet file, got {suffix or 'no suffix'!r}")
    column = next((c for c in frame.columns if str(c).lower() in INSTRUMENT_COLUMNS), None)
    if column is None:
        if instrument is not None:
            raise ValueError(f"{path} has no instrument column ({', '.join(INSTRUMENT_COLUMNS)}) "
                             f"to pick {instrument!r} from")
        return frame
    names = sorted(frame[column].astype(str).unique())
    if instrument is None:
        if len(names) > 1:
            raise ValueError(f"{path} holds {len(names)} series in column {column!r} "
                             f"({', '.join(names[:5])}{', …' if len(names) > 5 else ''}); "
                             "pick one with --instrument")
        instrument = names[0]
    if instrument not in names:
        raise ValueError(f"instrument {instrument!r} is not in column {column!r} of {path}; "
                         f"found {', '.join(names[:10])}")
    picked = frame[frame[column].astype(str) == instrument].drop(columns=column)
    return picked.reset_index(drop=True)


def forecast_summary(fc: Forecast, *, model_label: str | None = None,
                     column: str = "close") -> dict:
    """Headline numbers of a forecast at its last bar (JSON-serialisable)."""
    from .signals import score_forecast

    last = float(fc.last[column])
    end = fc.column_paths(column)[:, -1]  # (S,)
    q10, q50, q90 = np.quantile(end, [0.1, 0.5, 0.9])
    return {"series": fc.name, "model": model_label or fc.model_label,
            "samples": fc.sample_count, "pred_len": fc.pred_len,
            "last_timestamp": str(fc.history.index[-1]), "last_close": last,
            "horizon_timestamp": str(fc.index[-1]), "column": column,
            "median": float(q50), "q10": float(q10), "q90": float(q90),
            "mean": float(end.mean()), "expected_return": float(end.mean() / last - 1.0),
            "prob_up": float((end > last).mean()),
            "scores": {k: float(v) for k, v in score_forecast(fc).items()}}


def quantile_table(fc: Forecast, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> pd.DataFrame:
    """Per future bar: the mean and each quantile of every column (``close_q10``, ...)."""
    table = fc.quantile(list(quantiles))
    table.columns = [f"{col}_q{round(q * 100):02d}" for q, col in table.columns]
    mean = fc.mean().add_suffix("_mean")
    frame = pd.concat([mean, table], axis=1)
    order = [c for name in fc.columns for c in frame.columns if c.startswith(f"{name}_")]
    frame = frame[order]
    frame.index.name = "timestamp"
    return frame


def write_forecast(fc: Forecast, out: str | Path, *, model_label: str | None = None,
                   quantiles: Sequence[float] = DEFAULT_QUANTILES,
                   title: str | None = None) -> tuple[dict[str, Path], dict]:
    """Write ``fan.png``, ``paths.csv``, ``quantiles.csv`` and ``summary.json`` into ``out``.

    Returns the files written (by kind) and the summary dict.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"fan_chart": out / "fan.png", "paths": out / "paths.csv",
             "quantiles": out / "quantiles.csv", "summary": out / "summary.json"}
    fc.plot(files["fan_chart"], title=title, model_label=model_label)
    fc.to_frame().to_csv(files["paths"], index=False)
    quantile_table(fc, quantiles).to_csv(files["quantiles"])
    summary = forecast_summary(fc, model_label=model_label)
    files["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return files, summary


def summary_lines(summary: dict) -> list[str]:
    """The summary as a few printable lines."""
    return [f"series: {summary['series'] or '-'}; model: {summary['model'] or '-'}",
            f"last {summary['column']} {summary['last_close']:.4f} at {summary['last_timestamp']}",
            f"{summary['samples']} paths × {summary['pred_len']} bars to "
            f"{summary['horizon_timestamp']}: median {summary['median']:.4f} "
            f"(10–90%: {summary['q10']:.4f} … {summary['q90']:.4f}), expected return "
            f"{summary['expected_return']:+.2%}, P(up) {summary['prob_up']:.2f}"]


def _quantiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"quantiles must lie in (0, 1), got {text!r}")
    return values


def _run(args: argparse.Namespace) -> int:
    from .demo import demo_predictor, embedded_demo

    assets = embedded_demo() if args.model is None and args.tokenizer is None else None
    predictor, label = demo_predictor(args.model, args.tokenizer, device=args.device,
                                      max_context=args.max_context, assets=assets)
    bars = read_series(args.input, instrument=args.instrument)
    lookback = args.lookback or (assets.lookback if assets else args.max_context)
    name = args.name or args.instrument or Path(args.input).stem
    fc = predictor.forecast(bars.iloc[-lookback:], pred_len=args.pred_len,
                            sample_count=args.samples, seed=args.seed, T=args.temperature,
                            top_p=args.top_p, verbose=not args.quiet, name=name)
    files, summary = write_forecast(fc, args.out, model_label=label, quantiles=args.quantiles)
    print("\n".join(summary_lines(summary)))
    for kind, path in files.items():
        print(f"wrote {kind}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_model_args

    p = subparsers.add_parser("forecast", help="forecast one series: fan chart, paths, quantiles",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="CSV or Parquet file of one series' bars")
    p.add_argument("--instrument", default=None,
                   help="the series to use when the file has an instrument/symbol column")
    p.add_argument("--name", default=None, help="series label (default: instrument or file name)")
    add_model_args(p, default_model=None, default_tokenizer=None)
    p.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=None,
                   help="context bars (default: the demo model's 120, else --max-context)")
    p.add_argument("--pred-len", type=int_option(1), default=20, help="bars to forecast")
    p.add_argument("--samples", type=int_option(1), default=32, help="sample paths")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature T")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass")
    p.add_argument("--quantiles", type=_quantiles, default=DEFAULT_QUANTILES,
                   help="comma-separated quantiles for quantiles.csv (default: 0.1,...,0.9)")
    p.add_argument("--out", default="forecast_out", help="output folder (default: %(default)s)")
    p.set_defaults(func=_run)
