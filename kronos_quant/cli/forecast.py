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
from pathlib import Path

from ..data import read_series
from ..forecast import DEFAULT_QUANTILES, write_forecast
from ..inputs import MIN_CONTEXT
from .options import add_data_args, add_model_args, check_lookback, int_option, model_context


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
    from ..assets import demo_predictor, embedded_demo
    from ..signals import score_forecast

    if (args.model is None) != (args.tokenizer is None):
        raise ValueError("give both --model and --tokenizer, or neither")
    # The file and the options are checked before any weights load (Hub models are slow).
    bars = read_series(args.input, instrument=args.instrument, date_format=args.date_format)
    assets = embedded_demo() if args.model is None else None
    model = args.model or (assets.model_dir if assets else None)
    context = model_context(model, args.max_context)
    lookback = args.lookback or min(assets.lookback if assets else context, len(bars))
    check_lookback(lookback, context=context, bars=len(bars), source=args.input)
    predictor, label = demo_predictor(args.model, args.tokenizer, device=args.device,
                                      max_context=args.max_context, assets=assets)
    name = args.name or args.instrument or Path(args.input).stem
    try:
        fc = predictor.forecast(bars.iloc[-lookback:], pred_len=args.pred_len,
                                sample_count=args.samples, seed=args.seed, T=args.temperature,
                                top_p=args.top_p, verbose=not args.quiet, name=name,
                                calendar=args.calendar, repair=args.repair)
    except (ValueError, TypeError) as err:  # the rows of the window, named as in the file
        raise type(err)(f"{args.input}: {err}") from None
    files, summary = write_forecast(fc, args.out, model_label=label, quantiles=args.quantiles,
                                    scores=score_forecast(fc))
    print("\n".join(summary_lines(summary)))
    for kind, path in files.items():
        print(f"wrote {kind}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("forecast", help="forecast one series: fan chart, paths, quantiles",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="CSV or Parquet file of one series' bars")
    p.add_argument("--instrument", default=None,
                   help="the series to use when the file has an instrument/symbol column")
    p.add_argument("--name", default=None, help="series label (default: instrument or file name)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=None,
                   help="context bars, at most the model's context (default: the demo model's "
                        "120, else the model's context; the whole file if shorter)")
    p.add_argument("--calendar", default=None,
                   help="exchange calendar for daily future stamps, e.g. XNYS (needs the "
                        "[calendars] extra; default: weekdays)")
    p.add_argument("--pred-len", type=int_option(1), default=20, help="bars to forecast")
    p.add_argument("--samples", type=int_option(1), default=32, help="sample paths")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature T")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass")
    p.add_argument("--quantiles", type=_quantiles, default=DEFAULT_QUANTILES,
                   help="comma-separated quantiles for quantiles.csv (default: 0.1,...,0.9)")
    p.add_argument("--out", default="forecast_out", help="output folder (default: %(default)s)")
    p.set_defaults(func=_run)
